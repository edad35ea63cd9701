"""A small ratings matrix with a known low-rank structure, for tests whose right answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from movierec.data.dataset import HALF_STARS, Dataset
from movierec.data.ratings import Ratings


def low_rank_ratings(
    n_users: int = 150, n_items: int = 90, rank: int = 3, density: float = 0.35, noise: float = 0.3,
    seed: int = 0,
) -> Ratings:
    """Ratings on 1..5 stars from a rank-``rank`` taste model plus user/item biases and a little noise, every user
    rating something, with timestamps: :func:`low_rank` in the larger shape the model-contract tests train on."""
    return low_rank(n_users, n_items, rank, density, seed, mean=3.0, taste=1.0, taste_weight=0.8, user_bias=0.4,
                    item_bias=0.6, noise=noise, items_first=True, every_user_rates=True, timestamps=True)


def holdout(r: Ratings, fraction: float = 0.15, seed: int = 1) -> tuple[Ratings, Ratings]:
    rng = np.random.default_rng(seed)
    test = rng.random(len(r)) < fraction
    return r.take(~test), r.take(test)


STARS = (1.0, 2.0, 3.0, 4.0, 5.0)


def close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> None:
    """numpy's check: torch.testing's first call spends ~2 s importing."""
    np.testing.assert_allclose(actual.detach().numpy(), expected.detach().numpy(), rtol=rtol, atol=atol)


def low_rank(
    n_users: int = 60, n_items: int = 40, rank: int = 3, density: float = 0.5, seed: int = 0, *,
    mean: float = 3.5, taste: float = 0.6, taste_weight: float = 1.0, user_bias: float | None = 0.3,
    item_bias: float | None = 0.4, noise: float | None = 0.1, items_first: bool = False,
    every_user_rates: bool = False, timestamps: bool = False,
) -> Ratings:
    """Stars from a rank-``rank`` taste model plus biases and noise, on a random ``density`` of the cells.

    Each cell is ``mean + taste_weight * (U @ V) + user bias + item bias + noise``, rounded and clipped to 1..5,
    with U, V drawn from N(0, ``taste``) (V as items x rank and transposed when ``items_first``). A term whose
    scale is None is not drawn at all (a 0 is drawn, and adds nothing), as some callers' seeded streams skip it.
    ``every_user_rates`` gives each user one more rated cell at random; ``timestamps`` draws times in
    8e8..9e8 (else all 0). The same arguments always give the same ratings."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0, taste, (n_users, rank))
    v = rng.normal(0, taste, (n_items, rank)).T if items_first else rng.normal(0, taste, (rank, n_items))
    full = mean + (u @ v if taste_weight == 1.0 else (u @ v) * taste_weight)
    if user_bias is not None:
        full = full + rng.normal(0, user_bias, (n_users, 1))
    if item_bias is not None:
        full = full + rng.normal(0, item_bias, (1, n_items))
    if noise is not None:
        full = full + rng.normal(0, noise, (n_users, n_items))
    mask = rng.random((n_users, n_items)) < density
    if every_user_rates:
        mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    users, items = np.nonzero(mask)
    stars = np.clip(np.rint(full[users, items]), 1, 5).astype(np.float32)
    times = (rng.integers(8e8, 9e8, users.shape[0]).astype(np.int64) if timestamps
             else np.zeros(users.shape[0], np.int64))
    return Ratings(users.astype(np.int32), items.astype(np.int32), stars, times, n_users, n_items)


def ml100k_archive(rated: np.ndarray, titles: list[str], genres: list[str], rng: np.random.Generator) -> bytes:
    """A zip in ml-100k's layout (u.data, u.item, u.genre, u.user): user u rated movie i where ``rated[u, i]``
    (1-5 stars drawn from ``rng``), movie i + 1 titled ``titles[i]``, ``genres`` as the genre list."""
    import io
    import zipfile

    users, items = np.nonzero(rated)
    stars = rng.integers(1, 6, users.shape[0])
    data = "".join(f"{u + 1}\t{i + 1}\t{s}\t{880000000 + n}\n" for n, (u, i, s) in enumerate(zip(users, items, stars)))
    item = "".join(f"{m}|{t}|01-Jan-1995||http://example.org/{m}|0|{m % 2}|{int(m % 3 == 0)}|{int(m % 2 == 0)}\n"
                   for m, t in enumerate(titles, 1))
    genre = "".join(f"{g}|{n}\n" for n, g in enumerate(genres))
    user = "".join(f"{u}|30|F|other|0000{u}\n" for u in range(1, rated.shape[0] + 1))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in (("u.data", data), ("u.item", item), ("u.genre", genre), ("u.user", user)):
            z.writestr(f"ml-100k/{name}", text.encode("utf-8"))
    return buf.getvalue()


GENRE_TASTE = ("Comedy", "Horror", "Romance", "Western")
"""The genres of :func:`genre_taste_archive`, most popular first."""


def genre_taste_archive(
    n_users: int = 240, per_genre: int = 40, ratings_per_user: int = 30, seed: int = 0
) -> tuple[bytes, list[str]]:
    """A zip in ml-latest-small's layout where genre decides taste: each user has a favourite genre (Comedy for
    half of them, then Horror, Romance, Western), rates mostly movies of it (4-5 stars) and a few others (1-3
    stars). Comedy's movies are therefore the most rated: "most popular" answers comedies whoever asks. Each genre
    has ``per_genre`` movies, rated with a long tail within it. Returns the archive and the movies' titles (movie
    id i + 1 is ``titles[i]``, of genre ``GENRE_TASTE[i // per_genre]``)."""
    import io
    import zipfile

    rng = np.random.default_rng(seed)
    n_genres = len(GENRE_TASTE)
    favourite = rng.choice(n_genres, n_users, p=[0.5, 0.2, 0.15, 0.15])
    within = (np.arange(per_genre) + 3.0) ** -1.0
    within /= within.sum()
    lines = []
    for u in range(n_users):
        g = favourite[u]
        n_fav = int(0.8 * ratings_per_user)
        own = g * per_genre + rng.choice(per_genre, n_fav, replace=False, p=within)
        others = np.setdiff1d(np.arange(n_genres * per_genre), np.arange(g * per_genre, (g + 1) * per_genre))
        other = rng.choice(others, ratings_per_user - n_fav, replace=False)
        for m in own:
            lines.append(f"{u + 1},{m + 1},{rng.integers(4, 6)}.0,{1_000_000_000 + len(lines)}")
        for m in other:
            lines.append(f"{u + 1},{m + 1},{rng.integers(1, 4)}.0,{1_000_000_000 + len(lines)}")
    titles = [f"{GENRE_TASTE[i // per_genre]} Picture {i % per_genre + 1} ({1950 + i % 50})"
              for i in range(n_genres * per_genre)]
    movies = "".join(f"{i + 1},{t},{GENRE_TASTE[i // per_genre]}\n" for i, t in enumerate(titles))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n")
        z.writestr("ml-latest-small/movies.csv", "movieId,title,genres\n" + movies)
    return buf.getvalue(), titles


def synthetic_dataset(
    name: str = "ml-25m", n_users: int = 60, n_items: int = 40, seed: int = 3
) -> Dataset:
    """A dataset in memory: users with 1..30 ratings, many equal timestamps to exercise tie-breaking."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 31, n_users)
    counts[0], counts[1] = 1, 2  # edge cases: one rating, two ratings
    users = np.repeat(np.arange(n_users), counts)
    items = np.concatenate([rng.choice(n_items, c, replace=False) for c in counts])
    stars = rng.integers(1, 11, len(users)).astype(np.float32) / 2
    times = rng.integers(0, 20, len(users)).astype(np.int64) * 1000  # few distinct values: ties
    order = rng.permutation(len(users))  # file order unrelated to user or time
    ratings = Ratings(
        users[order].astype(np.int32),
        items[order].astype(np.int32),
        stars[order],
        times[order],
        n_users,
        n_items,
    )
    movies = pd.DataFrame(
        {
            "title": [f"M{i}" for i in range(n_items)],
            "year": pd.array([None] * n_items, dtype="Int64"),
            "genres": [[] for _ in range(n_items)],
        },
        index=pd.Index(np.arange(n_items, dtype=np.int64) + 1, name="movie_id"),
    )
    return Dataset(
        name,
        ratings,
        np.arange(n_users, dtype=np.int64) + 1,
        np.arange(n_items, dtype=np.int64) + 1,
        movies,
        None,
        "0" * 64,
        HALF_STARS,
        Path("/nonexistent"),
    )


GROUPS = (("student", 20, "M"), ("doctor", 47, "F"), ("lawyer", 38, "M"), ("artist", 29, "F"))
"""The people of :func:`group_taste_archive`: occupation, age and gender of each group; group g loves genre
``GENRE_TASTE[g]``. Students are the largest group, so "most popular" answers with their favourites."""


def group_taste_archive(n_users: int = 200, per_genre: int = 40, ratings_per_user: int = 12, seed: int = 0
                        ) -> tuple[bytes, np.ndarray]:
    """A zip in ml-100k's layout where a person's group (occupation, age, gender: :data:`GROUPS`) decides their
    favourite genre: they rate mostly its movies (4-5 stars, a long tail within the genre, so each group has one
    clear favourite) and a few others (1-2 stars). Movie id i + 1 is of genre ``GENRE_TASTE[i // per_genre]``,
    released in 1990 + i % 10. Returns the archive and each user's group (user id u + 1 is in ``group[u]``)."""
    import io
    import zipfile

    rng = np.random.default_rng(seed)
    n_genres = len(GENRE_TASTE)
    group = rng.choice(len(GROUPS), n_users, p=[0.4, 0.2, 0.2, 0.2])
    within = (np.arange(per_genre) + 2.0) ** -1.2
    within /= within.sum()
    n_movies = n_genres * per_genre
    lines = []
    for u in range(n_users):
        g = group[u]
        n_own = int(0.8 * ratings_per_user)
        own = g * per_genre + rng.choice(per_genre, n_own, replace=False, p=within)
        others = np.setdiff1d(np.arange(n_movies), np.arange(g * per_genre, (g + 1) * per_genre))
        other = rng.choice(others, ratings_per_user - n_own, replace=False)
        for m, stars in [(m, rng.integers(4, 6)) for m in own] + [(m, rng.integers(1, 3)) for m in other]:
            lines.append(f"{u + 1}\t{m + 1}\t{stars}\t{880000000 + len(lines)}\n")
    flags = np.zeros((n_movies, n_genres), dtype=int)
    flags[np.arange(n_movies), np.arange(n_movies) // per_genre] = 1
    item = "".join(f"{i + 1}|{GENRE_TASTE[i // per_genre]} Picture {i % per_genre + 1} ({1990 + i % 10})|"
                   f"01-Jan-{1990 + i % 10}||http://example.org/{i + 1}|" + "|".join(map(str, flags[i])) + "\n"
                   for i in range(n_movies))
    genre = "".join(f"{g}|{n}\n" for n, g in enumerate(GENRE_TASTE))
    user = "".join(f"{u + 1}|{GROUPS[group[u]][1]}|{GROUPS[group[u]][2]}|{GROUPS[group[u]][0]}|0{u:04d}\n"
                   for u in range(n_users))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in (("u.data", "".join(lines)), ("u.item", item), ("u.genre", genre), ("u.user", user)):
            z.writestr(f"ml-100k/{name}", text.encode("utf-8"))
    return buf.getvalue(), group


TAG_THEMES = ("space opera", "slasher", "love story", "gunfight")
"""The themes of :func:`tag_taste_archive`, said only by its tags."""


def tag_taste_archive(n_users: int = 160, per_theme: int = 30, ratings_per_user: int = 24, seed: int = 0
                      ) -> tuple[bytes, np.ndarray]:
    """A zip in ml-20m's layout (ratings.csv, movies.csv, tags.csv) where a hidden theme decides taste and only the
    tags say it: every movie is a Drama of the 1990s, each user loves one theme (4-5 stars for most of their
    ratings, of its movies) and rates a few others low, and three people tag each movie with its theme (typed
    ``"Space  Opera "``, ``"SPACE OPERA"``, ``"space opera"``). Movie id i + 1 is of theme ``i // per_theme``.
    Returns the archive and each user's (id i + 1) theme."""
    import io
    import zipfile

    rng = np.random.default_rng(seed)
    n_themes = len(TAG_THEMES)
    theme = rng.choice(n_themes, n_users)
    within = (np.arange(per_theme) + 3.0) ** -1.0
    within /= within.sum()
    lines = []
    for u in range(n_users):
        t = theme[u]
        n_fav = int(0.8 * ratings_per_user)
        own = t * per_theme + rng.choice(per_theme, n_fav, replace=False, p=within)
        others = np.setdiff1d(np.arange(n_themes * per_theme), np.arange(t * per_theme, (t + 1) * per_theme))
        for m in own:
            lines.append(f"{u + 1},{m + 1},{rng.integers(4, 6)}.0,{1_000_000_000 + len(lines)}")
        for m in rng.choice(others, ratings_per_user - n_fav, replace=False):
            lines.append(f"{u + 1},{m + 1},{rng.integers(1, 4)}.0,{1_000_000_000 + len(lines)}")
    movies = "".join(f"{i + 1},Picture {i + 1} ({1990 + i % 10}),Drama\n" for i in range(n_themes * per_theme))
    tags = []
    for i in range(n_themes * per_theme):
        name = TAG_THEMES[i // per_theme]
        for k, typed in enumerate((f" {name.title().replace(' ', '  ')} ", name.upper(), name)):
            tags.append(f'{k + 1},{i + 1},"{typed}",{1_100_000_000 + i}')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ml-20m/ratings.csv", "userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n")
        z.writestr("ml-20m/movies.csv", "movieId,title,genres\n" + movies)
        z.writestr("ml-20m/tags.csv", "userId,movieId,tag,timestamp\n" + "\n".join(tags) + "\n")
    return buf.getvalue(), theme
