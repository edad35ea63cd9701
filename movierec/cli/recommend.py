"""`movierec recommend`, `movierec similar` and `movierec clusters`: what a person reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from movierec.cli.app import app
from movierec.errors import MovierecError

ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Saved model to use (name or path) (default: the newest).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda.")]


@app.command("recommend")
def recommend_command(
    user: Annotated[int | None, typer.Option(help="MovieLens user id of a user in the training data.")] = None,
    top: Annotated[int, typer.Option(min=1, help="How many movies to list.")] = 10,
    rate: Annotated[
        list[str] | None,
        typer.Option(help='A new user\'s rating, "Title=stars" or "MovieId=stars"; repeat for each movie.'),
    ] = None,
    ratings_file: Annotated[
        Path | None,
        typer.Option(help="CSV of a new user's ratings: movie title or id, stars (one per line).", dir_okay=False),
    ] = None,
    genre: Annotated[
        list[str] | None, typer.Option(help="Only movies of this genre (repeat for any of several).")
    ] = None,
    min_year: Annotated[int | None, typer.Option(help="Only movies released in or after this year.")] = None,
    max_year: Annotated[int | None, typer.Option(help="Only movies released in or before this year.")] = None,
    include_seen: Annotated[bool, typer.Option(help="Keep movies the user already rated.")] = False,
    shrink: Annotated[
        float | None,
        typer.Option(help="New users: rank by predictions shrunk towards neutral by each movie's training "
                          "ratings; a movie with this many keeps half its lead (default: 8x the mean ratings "
                          "per movie; 0 = off)."),
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    json_output: JsonOpt = False,
) -> None:
    """Personalised recommendations for a known user (--user) or a new one (--rate / --ratings-file)."""
    from movierec import recommend as rec
    from movierec.checkpoint import load_trained
    from movierec.device import resolve_device

    new_user = bool(rate) or ratings_file is not None
    if new_user == (user is not None):
        raise MovierecError("Give either --user ID, or a new user's ratings with --rate / --ratings-file.")
    trained = load_trained(model, resolve_device(device))
    data, m = trained.dataset, trained.model
    allowed = _allowed(data, genre, min_year, max_year)
    if new_user:
        import torch

        pairs = _parse_rates(rate or []) + (_read_ratings_file(ratings_file) if ratings_file else [])
        items, stars = _resolve_new_ratings(data, pairs)
        recs = rec.recommend_new_user(m, trained.train, torch.tensor(items), torch.tensor(stars), top,
                                      allowed=allowed, shrink=shrink)
        who = f"a new user ({len(items)} ratings)"
    else:
        recs = rec.recommend(m, trained.train, data.user_index(user), top, include_seen=include_seen,
                             allowed=allowed)
        who = f"user {user}"
    score_name = {"like": "like probability", "rank": "score"}.get(m.kind, "predicted rating")
    rows = [
        {"rank": r + 1, "movie_id": int(data.item_ids[x.item]), **_movie(data, x.item), "score": round(x.score, 4),
         "because_you_liked": data.title(x.because) if x.because is not None else None}
        for r, x in enumerate(recs)
    ]
    if json_output:
        from movierec.cli.console import print_json

        print_json(rows)
        return
    what = {"like": "like/dislike", "rank": "top-N"}.get(m.kind, "ratings")
    _table(f"Top {top} for {who} — {trained.meta.name} ({what})",
           rows, score_name, with_because=True)


@app.command("similar")
def similar_command(
    movie: Annotated[
        str, typer.Argument(help="A title (forgiving: case, punctuation, year optional) or MovieLens id.")
    ],
    top: Annotated[int, typer.Option(min=1, help="How many movies to list.")] = 10,
    min_ratings: Annotated[
        int,
        typer.Option(min=0, help="Only list movies with at least this many training ratings: the vectors of "
                                 "rarely rated movies are mostly noise."),
    ] = 20,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    json_output: JsonOpt = False,
) -> None:
    """Movies nearest to MOVIE by the model's learned movie vectors (cosine similarity)."""
    from movierec import recommend as rec
    from movierec.checkpoint import load_trained
    from movierec.data.titles import TitleIndex
    from movierec.device import resolve_device

    trained = load_trained(model, resolve_device(device))
    data = trained.dataset
    item = TitleIndex(data).find(movie)
    counts = rec.item_counts(trained.train)
    items, sims = rec.similar(trained.model, item, top, counts=counts, allowed=counts >= min_ratings)
    rows = [
        {"rank": r + 1, "movie_id": int(data.item_ids[i]), **_movie(data, i), "score": round(s, 4)}
        for r, (i, s) in enumerate(zip(items, sims))
    ]
    if json_output:
        from movierec.cli.console import print_json

        print_json({"movie_id": int(data.item_ids[item]), "title": data.title(item), "similar": rows})
        return
    _table(f"Movies like {data.title(item)} — {trained.meta.name}", rows, "cosine", with_because=False)


@app.command("clusters")
def clusters_command(
    k: Annotated[int, typer.Option("--k", min=1, help="Number of clusters.")] = 10,
    top: Annotated[int, typer.Option(min=1, help="Best-known movies shown per cluster.")] = 5,
    seed: Annotated[int, typer.Option(help="Random seed of the clustering.")] = 0,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    json_output: JsonOpt = False,
) -> None:
    """Group the movies by the model's learned movie vectors (k-means) and describe each group."""
    from collections import Counter

    import torch

    from movierec import recommend as rec
    from movierec.checkpoint import load_trained
    from movierec.device import resolve_device

    trained = load_trained(model, resolve_device(device))
    data = trained.dataset
    labels = rec.cluster_movies(trained.model, k, seed=seed).cpu()
    popularity = torch.bincount(torch.from_numpy(trained.split.train.items.astype("int64")), minlength=data.n_items)
    all_genres = Counter(g for i in range(data.n_items) for g in _movie(data, i)["genres"])
    clusters = []
    for c in range(k):
        members = torch.nonzero(labels == c).flatten()
        if members.numel() == 0:
            continue
        order = members[torch.argsort(popularity[members], descending=True, stable=True)]
        genres = Counter(g for i in members.tolist() for g in _movie(data, i)["genres"])
        # "Dominant" = over-represented here compared with the whole catalogue (lift), among genres
        # common enough in the cluster to matter; raw counts would name Drama and Comedy everywhere.
        size = int(members.numel())
        lift = {g: (n / size) / (all_genres[g] / data.n_items) for g, n in genres.items() if n >= 0.1 * size}
        clusters.append({
            "size": size,
            "genres": sorted(lift, key=lambda g: -lift[g])[:3],
            "movies": [data.title(i) for i in order[:top].tolist()],
        })
    clusters.sort(key=lambda c: -c["size"])
    clusters = [{"cluster": n, **c} for n, c in enumerate(clusters, 1)]
    if json_output:
        from movierec.cli.console import print_json

        print_json(clusters)
        return
    from rich.table import Table
    from rich.text import Text

    from movierec.cli.console import clean, console, plain

    table = Table(title=plain(f"{len(clusters)} movie clusters — {trained.meta.name}"), title_justify="left",
                  show_lines=True)
    for col in ("#", "size", "dominant genres", "best-known movies"):
        table.add_column(col, overflow="fold")
    for c in clusters:
        table.add_row(str(c["cluster"]), str(c["size"]), plain(", ".join(c["genres"])),
                      Text("\n".join(clean(t) for t in c["movies"])))
    console.print(table)


def _movie(data: Any, item: int) -> dict[str, Any]:
    import pandas as pd

    row = data.movies.loc[int(data.item_ids[item])]
    year = row["year"]
    return {"title": str(row["title"]), "year": None if pd.isna(year) else int(year), "genres": list(row["genres"])}


def _allowed(data: Any, genres: list[str] | None, min_year: int | None, max_year: int | None) -> Any:
    if not genres and min_year is None and max_year is None:
        return None
    import pandas as pd
    import torch

    movies = data.movies.reindex(data.item_ids)
    keep = [True] * data.n_items
    if genres:
        wanted = {g.strip().lower() for g in genres}
        known = {g.lower() for gs in movies["genres"] for g in gs}
        unknown = wanted - known
        if unknown:
            raise MovierecError(
                f"Unknown genre {sorted(unknown)[0]!r}; {data.name} has: {', '.join(sorted(known))}."
            )
        keep = [k and bool(wanted & {g.lower() for g in gs}) for k, gs in zip(keep, movies["genres"])]
    for bound, ok in ((min_year, lambda y, b: y >= b), (max_year, lambda y, b: y <= b)):
        if bound is not None:
            keep = [k and not pd.isna(y) and ok(int(y), bound) for k, y in zip(keep, movies["year"])]
    if not any(keep):
        raise MovierecError("No movie passes the --genre / --min-year / --max-year filters.")
    return torch.tensor(keep)


def _parse_rates(rates: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for r in rates:
        title, sep, stars = r.rpartition("=")
        if not sep or not title.strip():
            raise MovierecError(f'--rate {r!r} is not "Title=stars" (e.g. --rate "Toy Story (1995)=5").')
        pairs.append((title, stars))
    return pairs


def _read_ratings_file(path: Path) -> list[tuple[str, str]]:
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if row and any(c.strip() for c in row)]
    except OSError as exc:
        raise MovierecError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise MovierecError(f"{path} is not a UTF-8 text file.") from None
    pairs = []
    for n, row in enumerate(rows, 1):
        if len(row) < 2:
            raise MovierecError(f"{path}, line {n}: expected 'movie,stars'.")
        if n == 1 and not _is_number(row[-1]):
            continue  # a header line
        pairs.append((",".join(row[:-1]), row[-1]))
    if not pairs:
        raise MovierecError(f"{path} holds no ratings.")
    return pairs


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _resolve_new_ratings(data: Any, pairs: list[tuple[str, str]]) -> tuple[list[int], list[float]]:
    from movierec.data.titles import TitleIndex

    index = TitleIndex(data)
    lo, hi = min(data.rating_values), max(data.rating_values)
    chosen: dict[int, float] = {}
    for title, stars in pairs:
        if not _is_number(stars) or not lo <= float(stars) <= hi:
            raise MovierecError(
                f"Rating {stars!r} for {title.strip()!r} is not a number of stars from {lo:g} to {hi:g}."
            )
        chosen[index.find(title)] = float(stars)
    return list(chosen), list(chosen.values())


def _table(title: str, rows: list[dict[str, Any]], score_name: str, with_because: bool) -> None:
    from rich.table import Table

    from movierec.cli.console import console, plain

    if not rows:
        console.print("No movies to recommend with these filters.")
        return
    table = Table(title=plain(title), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("title", overflow="fold")
    table.add_column("year")
    table.add_column("genres", overflow="fold")
    table.add_column(score_name, justify="right")
    if with_because:
        table.add_column("because you liked", overflow="fold")
    for r in rows:
        cells = [str(r["rank"]), r["title"], str(r["year"] or ""), ", ".join(r["genres"]), f"{r['score']:.3f}"]
        if with_because:
            cells.append(r["because_you_liked"] or "")
        table.add_row(*map(plain, cells))
    console.print(table)
