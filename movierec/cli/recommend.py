"""`movierec recommend`: a person's list, and the list table `similar` shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from movierec.cli.options import DeviceOpt, JsonOpt, ModelOpt
from movierec.device import DEFAULT_DEVICE
from movierec.errors import MovierecError


def recommend_command(
    user: Annotated[
        str | None,
        typer.Option(help="MovieLens user id of a user in the training data (or an imported dataset's own id, "
                          "e.g. alice)."),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="How many movies to list.")] = 10,
    rate: Annotated[
        list[str] | None,
        typer.Option(help='A new user\'s rating, "Title=stars" or "MovieId=stars"; repeat for each movie.'),
    ] = None,
    ratings_file: Annotated[
        Path | None,
        typer.Option(help="CSV of a new user's ratings: movie title or id, stars (one per line), or MovieLens' "
                          "userId,movieId,rating[,timestamp] with its header.", dir_okay=False),
    ] = None,
    genre: Annotated[
        list[str] | None, typer.Option(help="Only movies of this genre (repeat for any of several).")
    ] = None,
    min_year: Annotated[int | None, typer.Option(help="Only movies released in or after this year.")] = None,
    max_year: Annotated[int | None, typer.Option(help="Only movies released in or before this year.")] = None,
    include_seen: Annotated[bool, typer.Option(help="Keep movies the user already rated.")] = False,
    include_unrated: Annotated[
        bool, typer.Option(help="Also list movies without training ratings (models trained with features).")
    ] = False,
    age: Annotated[int | None, typer.Option(help="A new user's age in years (models trained with features).")] = None,
    gender: Annotated[str | None, typer.Option(help="A new user's gender, as the release records it (M, F).")] = None,
    occupation: Annotated[
        str | None, typer.Option(help="A new user's occupation, as the release names it (e.g. student).")
    ] = None,
    shrink: Annotated[
        float | None,
        typer.Option(help="New users: rank by scores shrunk towards neutral by each movie's training "
                          "ratings; a movie with this many keeps half its lead (default: 8x the mean ratings "
                          "per movie; 0 for vae and dae, whose scores already weigh popularity; 0 = off)."),
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = DEFAULT_DEVICE,
    json_output: JsonOpt = False,
) -> None:
    """Personalised recommendations for a known user (--user) or a new one (--rate / --ratings-file, and for
    models trained with features --age / --gender / --occupation, with or without ratings)."""
    from movierec.loading import open_model

    person = {k: v for k, v in (("age", age), ("gender", gender), ("occupation", occupation)) if v is not None}
    new_user = bool(rate) or ratings_file is not None or bool(person)
    if new_user == (user is not None):
        raise MovierecError("Give either --user ID, or a new user's ratings with --rate / --ratings-file "
                            "(or their --age, --gender, --occupation).")
    served = open_model(model, device)
    try:
        if new_user:
            from_file: list[tuple[str, str]] = []
            if ratings_file is not None:
                from_file, lines, layout = _read_ratings_file(ratings_file)
                _check_ratings_file(served, ratings_file, from_file, lines, layout)
            pairs = _parse_rates(rate or []) + from_file
            rows = served.recommend_new(pairs, top, shrink=shrink, person=person, genres=genre, min_year=min_year,
                                        max_year=max_year, include_unrated=include_unrated)
            rated = len(served.resolve_ratings(pairs, allow_none=True)[0])
            about = ", ".join(f"age {v}" if k == "age" else str(v) for k, v in person.items())
            who = f"a new user ({rated} rating{'' if rated == 1 else 's'}{'; ' + about if about else ''})"
        else:
            assert user is not None  # either --user or a new user's ratings, checked above
            rows = served.recommend(user, top, include_seen=include_seen, genres=genre, min_year=min_year,
                                    max_year=max_year, include_unrated=include_unrated)
            who = f"user {user}"
    finally:
        served.close()  # everything below is in memory
    if json_output:
        from movierec.cli.console import print_json, print_note

        if model is None:
            print_note(f"Answered by the default model, {served.meta.name}.")
        print_json(rows)
    else:
        what = {"like": "like/dislike", "rank": "top-N"}.get(served.scorer.kind, "ratings")
        list_table(f"Top {top} for {who} — {served.meta.name} ({what})", rows, served.score_name, with_because=True,
               predicted_name=served.predicted_name)
    _note_weak_lists(served.meta)


def _note_weak_lists(meta: Any) -> None:
    """One line on stderr (never stdout: --json stays clean) when the model's lists ranked below the most popular
    movies' on its test split, naming the saved model whose lists ranked best."""
    from movierec.advice import weak_lists

    weak = weak_lists(meta)
    if weak is None:
        return
    from movierec.cli.console import err_console

    best = (f"; the best saved model for lists is {weak.best} ({weak.best_ndcg:.3f})" if weak.best is not None
            else "")
    err_console.print(f"Note: {weak.name}'s lists ranked below 'most popular' on its test split (NDCG@10 "
                      f"{weak.ndcg:.3f} vs {weak.popularity:.3f}){best}.", markup=False, soft_wrap=True)


def _parse_rates(rates: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for r in rates:
        title, sep, stars = r.rpartition("=")
        if not sep or not title.strip():
            raise MovierecError(f'--rate {r!r} is not "Title=stars" (e.g. --rate "Toy Story (1995)=5").')
        pairs.append((title, stars))
    return pairs


_MOVIE_HEADS = ("movieid", "movie_id", "movie", "title", "item", "itemid")
_STARS_HEADS = ("rating", "stars", "star", "score")


def _read_ratings_file(path: Path) -> tuple[list[tuple[str, str]], list[int], str]:
    """A person's ratings from a CSV: ``movie,stars`` (with or without a header; a title or a MovieLens id), or
    MovieLens' ``userId,movieId,rating[,timestamp]`` with its header (one user). Returns the pairs, their line
    numbers and the layout read."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(n, row) for n, row in enumerate(csv.reader(f), 1) if row and any(c.strip() for c in row)]
    except OSError as exc:
        raise MovierecError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise MovierecError(f"{path} is not a UTF-8 text file.") from None
    heads = [c.strip().lower() for c in rows[0][1]] if rows else []
    header = bool(rows) and not _is_number(rows[0][1][-1]) and len(rows[0][1]) >= 2
    movie_col = next((heads.index(h) for h in _MOVIE_HEADS if h in heads), 0) if header else None
    stars_col = next((heads.index(h) for h in _STARS_HEADS if h in heads), 1) if header else None
    movielens = header and "userid" in heads and "movieid" in heads and "rating" in heads
    if movielens:
        users = {row[heads.index("userid")].strip() for _, row in rows[1:] if len(row) > heads.index("userid")}
        if len(users) > 1:
            raise MovierecError(f"{path} holds the ratings of {len(users)} users (userId "
                                f"{', '.join(sorted(users)[:3])}{', ...' if len(users) > 3 else ''}); a ratings file "
                                "is one person's.")
    pairs, lines = [], []
    for n, row in rows[1:] if header else rows:
        if len(row) < 2:
            raise MovierecError(f"{path}, line {n}: expected 'movie,stars'.")
        if movie_col is not None and stars_col is not None:
            if len(row) <= max(movie_col, stars_col):
                raise MovierecError(f"{path}, line {n}: expected {len(heads)} columns as in its header.")
            movie, stars = row[movie_col], row[stars_col]
        else:  # no header: an unquoted comma belongs to the title
            movie, stars = ",".join(row[:-1]), row[-1]
        if not _is_number(stars):
            raise MovierecError(f"{path}, line {n}: the stars {stars.strip()!r} for {movie.strip()!r} are not a "
                                "number.")
        pairs.append((movie, stars))
        lines.append(n)
    if not pairs:
        raise MovierecError(f"{path} holds no ratings.")
    layout = ("MovieLens userId,movieId,rating" if movielens else
              f"{heads[movie_col or 0]},{heads[stars_col or 1]} with a header" if header else "movie,stars")
    return pairs, lines, layout


def _check_ratings_file(
    served: Any, path: Path, pairs: list[tuple[str, str]], lines: list[int], layout: str
) -> None:
    """Each line of the file checked against the model (stars on its scale, a known movie), naming the line; then
    one line on stderr saying which layout was read, and a note for a movie listed twice (the last line wins)."""
    from movierec.cli.console import print_note

    seen: dict[int, list[int]] = {}
    for pair, n in zip(pairs, lines):
        try:
            index = served.resolve_ratings([pair])[0][0]
        except MovierecError as exc:
            raise MovierecError(f"{path}, line {n}: {exc}") from None
        seen.setdefault(index, []).append(n)
    print_note(f"Read {len(pairs)} rating{'' if len(pairs) == 1 else 's'} from {path} ({layout}).")
    for index, at in seen.items():
        if len(at) > 1:
            print_note(f"Note: {served.catalogue.title(index)} is rated on lines {', '.join(map(str, at))} of "
                       f"{path}; the last one counts.")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_PREDICTED_HEADS = {"predicted rating": "stars", "like probability": "P(like)"}


def list_table(
    title: str, rows: list[dict[str, Any]], score_name: str, with_because: bool, predicted_name: str | None = None
) -> None:
    """A list as a table: rank, title, year, genres, the score it is ordered by, the model's own prediction
    beside it when the two differ (``predicted_name``), and why."""
    from rich.table import Table

    from movierec.cli.console import clean, console, plain, table_room

    if not rows:
        console.print("No movies to recommend with these filters.")
        return
    scores = [f"{r['score']:.3f}" for r in rows]
    with_predicted = predicted_name is not None and any(r.get("predicted") is not None for r in rows)
    predicted = [f"{r['predicted']:.2f}" if r.get("predicted") is not None else "" for r in rows]
    predicted_head = _PREDICTED_HEADS.get(predicted_name or "", predicted_name or "")
    titles = [clean(r["title"]) for r in rows]
    genres = [clean(", ".join(r["genres"])) for r in rows]
    because = [clean(r.get("because_you_liked") or "") for r in rows]
    with_because = with_because and any(because)  # no column of blanks for a user who liked nothing 4 stars or more
    # The year is shown apart only when a title does not already end with it, as MovieLens titles do.
    with_year = any(r["year"] and not t.rstrip().endswith(f"({r['year']})") for r, t in zip(rows, titles))
    # A long header would widen the score column past its numbers: shorten it when room is short.
    fixed = [max(len(str(r["rank"])) for r in rows), *([4] if with_year else []), max(map(len, scores))]
    score_head = score_name
    flexible = [max(map(len, titles)), *([max(map(len, because))] if with_because else [])]
    room = table_room(len(fixed) + len(flexible)) - sum(fixed)
    # The model's own prediction is shown when titles and reasons still fit whole beside it (--json has it).
    predicted_width = max(len(predicted_head), *map(len, predicted)) if with_predicted else 0
    with_predicted = with_predicted and room - predicted_width - 3 >= sum(flexible)
    if with_predicted:
        room -= predicted_width + 3
    if len(score_name) > fixed[-1] and sum(flexible) + len(score_name) - fixed[-1] > room:
        score_head = {"predicted rating": "rating", "like probability": "P(like)"}.get(score_name, score_name)
    # Genres (which may wrap, at 30 columns or so) get the room that titles and reasons need least: shown
    # when those keep three quarters of their width, otherwise dropped first (--json has them).
    room -= max(0, len(score_head) - fixed[-1]) + 3
    with_genres = room - min(30, max(map(len, genres))) >= 0.75 * sum(flexible)

    table = Table(title=plain(title), title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("title", overflow="fold")
    if with_year:
        table.add_column("year", no_wrap=True)
    if with_genres:
        table.add_column("genres", overflow="fold")
    table.add_column(score_head, justify="right", no_wrap=True, min_width=fixed[-1])
    if with_predicted:
        table.add_column(predicted_head, justify="right", no_wrap=True)
    if with_because:
        table.add_column("because you liked", overflow="fold")
    for r, t, g, s, p, b in zip(rows, titles, genres, scores, predicted, because):
        cells = [str(r["rank"]), t, *([str(r["year"] or "")] if with_year else []), *([g] if with_genres else []), s,
                 *([p] if with_predicted else [])]
        if with_because:
            cells.append(b)
        table.add_row(*map(plain, cells))
    console.print(table)
