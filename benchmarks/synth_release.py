"""Synthetic MovieLens releases, written as zips in the official layouts, for benchmarks and tests.

Each shape in :data:`SHAPES` names the release whose layout it copies (``ml-1m``: ``ml-1m/ratings.dat``,
``movies.dat``, ``users.dat``; ``ml-10m``: ``ml-10M100K/ratings.dat``, ``movies.dat``; ``ml-25m`` and
``ml-latest-small``: ``ratings.csv``, ``movies.csv``), so ``movierec fetch RELEASE --from-file OUT.zip
--no-verify`` imports it as that release. The full-size shapes have the real release's user, movie and
rating counts (for speed and scale); the ``small-*`` shapes have a few thousand ratings (for tests).

What a recommender's cost and behaviour depend on:

- long-tailed user activity (a minimum per user, plus a multinomial over lognormal(0, 1.2) weights, capped at
  60% of the catalogue), and, where the shape says so, a few very heavy users with fixed counts;
- long-tailed movie popularity (Zipf-like p ~ (rank + offset)^-exponent); every movie rated at least once;
- each (user, movie) pair at most once;
- stars from a rank-8 taste model + user/movie biases (movie bias correlated with popularity) + noise, rounded
  to the release's scale (whole stars for ml-1m, half stars for the others).

Which movies a user rates: in the full-size ml-1m/ml-10m/ml-25m shapes only popularity (fast, vectorised),
so ranking metrics on them mean little. The ``ml-latest-small`` and ``small-*`` shapes (``taste`` > 0) draw
each user's movies with weights popularity x exp(taste x the user's standardised affinity), as people rate
what they expect to like: there a personalised ranking can beat popularity.

Usage::

    python benchmarks/synth_release.py ml-1m OUT.zip          # any name in SHAPES
    python benchmarks/synth_release.py small-ml-latest-small OUT.zip

or from Python: ``write_release("small-ml-1m", path)``.
"""

from __future__ import annotations

import io
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
SEED = 20240601


@dataclass(frozen=True)
class Shape:
    release: str
    """The MovieLens release whose layout this shape copies (the name to `movierec fetch` it as)."""
    folder: str
    layout: str  # "dat" or "csv"
    half: bool
    """Half stars 0.5..5.0 (else whole stars 1..5)."""
    users: int
    movies: int
    ratings: int
    max_user: int
    max_movie: int
    t0: int
    t1: int
    min_per_user: int = 20
    heavy: tuple[int, ...] = ()
    """Exact rating counts of the heaviest users."""
    pop_offset: float = 100.0
    pop_exponent: float = 1.3
    taste: float = 0.0
    """How strongly a user's taste (not only popularity) decides which movies they rate; 0 = not at all."""
    noise: float = 0.9
    """Standard deviation of the per-rating noise, in stars, before rounding."""
    mean: float | None = None
    """The model's global mean stars (default: 3.25 on half stars, 3.35 on whole, less with taste)."""
    side: float = 0.0
    """How strongly the movies' genres (and, for ml-1m, the people's age, gender and occupation) follow their
    taste vectors; 0 = not at all (drawn from their ids: they carry nothing a model could learn from)."""
    tags: int = 0
    """How many tag lines to write (``tags.csv`` / ``tags.dat``), given by a few people to movies they rated; 0 =
    no tags file (ml-10m's shapes write an empty ``tags.dat``, as before)."""
    tag_taste: float = 2.0
    """How strongly the tag given to a movie follows its taste vector (as ``side`` does for genres)."""


_ML1M = dict(release="ml-1m", folder="ml-1m", layout="dat", half=False, t0=956_703_932, t1=1_046_454_590)
_ML10M = dict(release="ml-10m", folder="ml-10M100K", layout="dat", half=True, t0=789_652_009, t1=1_231_131_736)
_ML25M = dict(release="ml-25m", folder="ml-25m", layout="csv", half=True, t0=789_652_009, t1=1_574_327_703)
_ML20M = dict(release="ml-20m", folder="ml-20m", layout="csv", half=True, t0=789_652_009, t1=1_427_784_002)
_LATEST_SMALL = dict(release="ml-latest-small", folder="ml-latest-small", layout="csv", half=True,
                     t0=828_124_615, t1=1_537_799_250)
# Test-sized: 150 users, 800 movies, 6,000 ratings; one user with 300, most movies with fewer than 5 ratings.
# Less noise than the full-size shapes: on so few ratings a model must have something it can learn.
_SMALL = dict(users=150, movies=800, ratings=6_000, heavy=(300,), pop_offset=20.0, pop_exponent=1.5, taste=1.5,
              noise=0.6, mean=2.7)

SHAPES: dict[str, Shape] = {
    "ml-1m": Shape(**_ML1M, users=6040, movies=3706, ratings=1_000_209, max_user=6040, max_movie=3952),
    "ml-10m": Shape(**_ML10M, users=69_878, movies=10_677, ratings=10_000_054, max_user=71_567, max_movie=65_133),
    "ml-25m": Shape(**_ML25M, users=162_541, movies=59_047, ratings=25_000_095, max_user=162_541,
                    max_movie=209_171),
    # The real one: 610 users, 9,742 movies, 100,836 ratings; its heaviest users have 2,698, 2,478, 2,108 ...
    "ml-latest-small": Shape(**_LATEST_SMALL, users=610, movies=9_700, ratings=100_000, max_user=610,
                             max_movie=193_609, heavy=(2_600, 2_400, 2_100, 1_850, 1_700), pop_offset=30.0,
                             pop_exponent=1.6, taste=1.5),
    # ml-1m's counts with users choosing movies by taste as well as popularity: for judging top-N lists at scale.
    "taste-ml-1m": Shape(**_ML1M, users=6040, movies=3706, ratings=1_000_209, max_user=6040, max_movie=3952,
                         taste=1.5),
    # The same, with genres and demographics that say something of taste: for judging cold starts.
    "side-ml-1m": Shape(**_ML1M, users=6040, movies=3706, ratings=1_000_209, max_user=6040, max_movie=3952,
                        taste=1.5, side=1.0),
    # ml-20m's layout with tags that follow the movies' tastes (and genres that do), scaled down so that
    # benchmarks/cold_start.py runs in minutes: the real one has 138,493 users, 26,744 movies, 20,000,263 ratings
    # and 465,564 tag lines from 7,801 people.
    "tagged-ml-20m": Shape(**_ML20M, users=2000, movies=2500, ratings=200_000, max_user=138_493,
                           max_movie=131_262, taste=1.5, side=1.0, tags=20_000),
    # The same, test-sized (not among SMALL_SHAPES: ml-25m's small shape already covers the layout).
    "tagged-small-ml-20m": Shape(**_ML20M, **_SMALL, max_user=150, max_movie=131_262, side=1.0, tags=1_500),
    # User ids 1..150 like the real releases' (ml-10m's have gaps), so `--user 42` exists.
    "small-ml-1m": Shape(**_ML1M, **_SMALL, max_user=150, max_movie=3952),
    "small-ml-10m": Shape(**_ML10M, **_SMALL, max_user=160, max_movie=65_133),
    "small-ml-25m": Shape(**_ML25M, **_SMALL, max_user=150, max_movie=209_171),
    "small-ml-latest-small": Shape(**_LATEST_SMALL, **_SMALL, max_user=150, max_movie=193_609),
}
SMALL_SHAPES = tuple(name for name in SHAPES if name.startswith("small-"))
_FULL_SIZE = ("ml-1m", "ml-10m", "ml-25m")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _user_counts(rng: np.random.Generator, s: Shape, activity: np.ndarray) -> np.ndarray:
    """How many ratings each user gives: the heavy users' fixed counts, the rest long-tailed, summing to N."""
    U, M, N = s.users, s.movies, s.ratings
    cap = int(0.6 * M)
    counts = np.full(U, s.min_per_user, dtype=np.int64)
    heavy_users = np.argsort(-activity, kind="stable")[: len(s.heavy)]
    counts[heavy_users] = s.heavy
    free = np.ones(U, dtype=bool)
    free[heavy_users] = False
    w = np.where(free, activity, 0.0)
    counts += rng.multinomial(N - int(counts.sum()), w / w.sum())
    while (counts > cap).any():  # move the excess of capped users to the others
        excess = int((counts - cap).clip(0).sum())
        counts = np.minimum(counts, cap)
        w = np.where((counts < cap) & free, activity, 0.0)
        counts += rng.multinomial(excess, w / w.sum())
    assert counts.sum() == N and counts.min() >= s.min_per_user
    return counts


def _pairs_by_popularity(rng: np.random.Generator, s: Shape, counts: np.ndarray, activity: np.ndarray,
                         pop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(user index, movie index) of N distinct pairs drawn by popularity alone; vectorised for ML-25M sizes."""
    U, M = s.users, s.movies
    # Every movie once, by an activity-weighted user: these go first and are never trimmed in practice.
    fu = rng.choice(U, M, p=activity / activity.sum())
    pool = fu.astype(np.int64) * M + rng.permutation(M)
    for rnd in range(40):
        have = np.bincount(pool // M, minlength=U)
        need = counts - have
        if (need <= 0).all():
            break
        need = need.clip(0)
        if rnd >= 2:  # exact fill: each short user draws from the movies it has not rated yet
            pu = pool // M
            ends = np.cumsum(np.bincount(pu, minlength=U))
            starts = ends - np.bincount(pu, minlength=U)
            extra = []
            for u in np.flatnonzero(need > 0):
                free = np.ones(M, dtype=bool)
                free[pool[starts[u]:ends[u]] % M] = False
                cand = np.flatnonzero(free)
                w = pop[cand]
                extra.append(u * M + rng.choice(cand, int(need[u]), replace=False, p=w / w.sum()))
            pool = np.sort(np.concatenate([pool, *extra]))
            break
        draw = np.ceil(need * (1.15 if rnd == 0 else 1.6)).astype(np.int64) + 2 * (need > 0)
        u = np.repeat(np.arange(U, dtype=np.int64), draw)
        it = rng.choice(M, len(u), p=pop) if rnd < 2 else rng.integers(0, M, len(u))
        new = pd.unique(u * M + it)
        new = new[~np.isin(new, pool)]
        pool = np.concatenate([pool, new])
        order = np.argsort(pool // M, kind="stable")
        pool = pool[order]
        pu = pool // M
        starts = np.concatenate(([0], np.cumsum(np.bincount(pu, minlength=U))[:-1]))
        pool = pool[(np.arange(len(pool)) - starts[pu]) < counts[pu]]
    users, items = pool // M, pool % M
    missing = np.setdiff1d(np.arange(M), items)
    for m in missing:  # give an unrated movie one rating taken from a movie rated more than once
        c = np.bincount(items, minlength=M)
        cand = np.flatnonzero(c[items] > 1)
        for j in rng.permutation(cand)[:1000]:
            if not ((users == users[j]) & (items == m)).any():
                items[j] = m
                break
    return users, items


def _pairs_by_taste(rng: np.random.Generator, s: Shape, counts: np.ndarray, activity: np.ndarray,
                    pop: np.ndarray, affinity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(user index, movie index) pairs, each user's movies drawn by popularity x exp(taste x affinity)."""
    U, M = s.users, s.movies
    first = rng.choice(U, M, p=activity / activity.sum())  # every movie once, by an activity-weighted user
    order = np.argsort(first, kind="stable")
    ends = np.cumsum(np.bincount(first, minlength=U))
    starts = ends - np.bincount(first, minlength=U)
    z = (affinity - affinity.mean()) / (affinity.std() + 1e-12)
    users, items = [], []
    for u in range(U):
        own = order[starts[u]:ends[u]]
        need = max(int(counts[u]) - len(own), 0)
        w = pop * np.exp(s.taste * z[u])
        w[own] = 0.0
        extra = rng.choice(M, need, replace=False, p=w / w.sum()) if need else np.empty(0, np.int64)
        picked = np.concatenate([own, extra])
        users.append(np.full(len(picked), u, dtype=np.int64))
        items.append(picked.astype(np.int64))
    return np.concatenate(users), np.concatenate(items)


def generate(name: str, seed: int = SEED) -> dict[str, np.ndarray]:
    """The ratings of shape ``name`` in MovieLens ids, sorted by user then movie, and its movie ids."""
    s = SHAPES[name]
    # Each shape its own draw (the small shapes differ in more than their layout); full-size ones as before.
    rng = np.random.default_rng(seed if name in _FULL_SIZE else [seed, zlib.crc32(name.encode())])
    U, M = s.users, s.movies
    k = 8
    P = rng.normal(0, 0.6 / np.sqrt(k) ** 0.5, (U, k)).astype(np.float32)
    Q = rng.normal(0, 0.6 / np.sqrt(k) ** 0.5, (M, k)).astype(np.float32)
    activity = rng.lognormal(0.0, 1.2, U)
    counts = _user_counts(rng, s, activity)
    rank = rng.permutation(M)  # popularity rank of each movie index
    pop = (rank + s.pop_offset) ** -s.pop_exponent
    pop /= pop.sum()
    if s.taste > 0:
        users, items = _pairs_by_taste(rng, s, counts, activity, pop, P @ Q.T)
    else:
        users, items = _pairs_by_popularity(rng, s, counts, activity, pop)
    assert len(np.unique(items)) == M and len(np.unique(users)) == U
    bu = rng.normal(0, 0.35, U).astype(np.float32)
    lp = np.log(pop)
    bi = (rng.normal(0, 0.3, M) + 0.25 * (lp - lp.mean()) / lp.std()).astype(np.float32)
    mu = (3.25 if s.half else 3.35) - 0.25 * s.taste  # people choose what they like: taste raises the mean
    mu = s.mean if s.mean is not None else mu
    stars = np.empty(len(users), dtype=np.float32)
    step = 2_000_000
    for a in range(0, len(users), step):
        u, i = users[a:a + step], items[a:a + step]
        x = mu + bu[u] + bi[i] + (P[u] * Q[i]).sum(1) + rng.normal(0, s.noise, len(u)).astype(np.float32)
        stars[a:a + step] = np.clip(np.round(x * 2) / 2, 0.5, 5.0) if s.half else np.clip(np.round(x), 1, 5)
    user_ids = np.sort(rng.choice(np.arange(1, s.max_user + 1), U, replace=False))
    movie_ids = np.sort(rng.choice(np.arange(1, s.max_movie + 1), M, replace=False))
    ts = rng.integers(s.t0, s.t1, len(users))
    order = np.lexsort((items, users))  # the real files are sorted by user
    return {"users": user_ids[users[order]], "movies": movie_ids[items[order]], "stars": stars[order],
            "timestamps": ts[order], "movie_ids": movie_ids, "user_ids": user_ids, "user_taste": P,
            "movie_taste": Q}


ML1M_AGES = (1, 18, 25, 35, 45, 50, 56)
ML1M_AGE_SHARES = (0.04, 0.18, 0.35, 0.2, 0.09, 0.08, 0.06)
"""ml-1m's age groups (their codes) and roughly the share of its people in each."""


def _noisy_choice(rng: np.random.Generator, taste: np.ndarray, n_values: int, strength: float) -> np.ndarray:
    """(rows, n_values) scores: each value's seeded direction in taste space (standardised), times ``strength``,
    plus Gumbel noise; the argmax of a row is a draw that leans towards the values its taste points to."""
    directions = rng.normal(0.0, 1.0, (n_values, taste.shape[1]))
    score = taste @ directions.T  # (rows, n_values)
    score = (score - score.mean(0)) / (score.std(0) + 1e-12)
    return strength * score + rng.gumbel(0.0, 1.0, score.shape)


def side_information(s: Shape, data: dict[str, np.ndarray], seed: int) -> tuple[list[str], list[str] | None]:
    """Each movie's genres ("A|B") and, for ml-1m, each person's users.dat line, leaning towards their taste by
    ``s.side``: 1 to 3 genres, the ones its taste vector points to most (with noise); an age group, gender and
    occupation likewise. Drawn from their own seeded generator: the ratings are the same whatever ``side``."""
    rng = np.random.default_rng([seed, 1])
    genre_score = _noisy_choice(rng, data["movie_taste"], len(GENRES), s.side)
    n_genres = rng.choice([1, 2, 3], len(genre_score), p=[0.5, 0.35, 0.15])
    top = np.argsort(-genre_score, axis=1)
    genres = ["|".join(GENRES[j] for j in sorted(top[m, :n_genres[m]])) for m in range(len(top))]
    if s.release != "ml-1m":
        return genres, None
    taste = data["user_taste"]
    age_score = _noisy_choice(rng, taste, 1, s.side)[:, 0]
    bounds = np.quantile(age_score, np.cumsum(ML1M_AGE_SHARES)[:-1])
    ages = np.asarray(ML1M_AGES)[np.searchsorted(bounds, age_score)]
    gender = np.where(_noisy_choice(rng, taste, 1, s.side)[:, 0] > 0.3, "M", "F")  # ml-1m: 72% men
    occupation = _noisy_choice(rng, taste, 21, s.side).argmax(1)
    lines = [f"{u}::{g}::{a}::{o}::{10000 + u}\n" for u, g, a, o in zip(data["user_ids"], gender, ages, occupation)]
    return genres, lines


TAGS = ("atmospheric", "dark comedy", "twist ending", "based on a book", "visually appealing", "thought-provoking",
        "dystopia", "funny", "quirky", "surreal", "nonlinear", "cult film", "classic", "space", "time travel",
        "tearjerker", "feel-good", "violent", "zombies", "superhero", "martial arts", "heist", "satire",
        "world war ii", "biography", "mafia", "noir", "psychological", "slow burn", "great soundtrack",
        "coming of age", "christmas", "aliens", "vampires", "robots", "revenge", "road trip", "courtroom",
        "stylized", "philosophical")
"""The synthetic tags' vocabulary, each with its own seeded direction in taste space."""


def tag_lines(s: Shape, data: dict[str, np.ndarray], seed: int) -> pd.DataFrame:
    """``s.tags`` tag lines (userId, movieId, tag, timestamp): a tenth of the people (the most active first) tag
    movies they rated, each tag drawn towards the ones the movie's taste vector points to (``s.tag_taste``, with
    Gumbel noise), written the way people type them (upper case, extra spaces); one line in twenty is a person's
    private label that nobody else uses. Their own seeded generator: the ratings are the same with or without."""
    rng = np.random.default_rng([seed, 2])
    score = _noisy_choice(rng, data["movie_taste"], len(TAGS), s.tag_taste)  # (M, T)
    user_index = np.searchsorted(data["user_ids"], data["users"])
    item_index = np.searchsorted(data["movie_ids"], data["movies"])
    counts = np.bincount(user_index, minlength=len(data["user_ids"]))
    taggers = np.argsort(-counts - rng.random(len(counts)), kind="stable")[: max(len(counts) // 10, 2)]
    rows = np.flatnonzero(np.isin(user_index, taggers))
    rows = rng.choice(rows, min(s.tags, len(rows)), replace=False)
    u, m = user_index[rows], item_index[rows]
    tag = np.asarray(TAGS, dtype=object)[np.argmax(score[m] + rng.gumbel(0.0, 1.0, (len(m), len(TAGS))), 1)]
    style = rng.random(len(m))
    tag = np.where(style < 0.1, np.char.upper(tag.astype(str)).astype(object), tag)
    tag = np.where((style >= 0.1) & (style < 0.15), np.asarray([f" {t}  " for t in tag], dtype=object), tag)
    own = rng.random(len(m)) < 0.05
    tag[own] = [f"my list {data['user_ids'][x]}" for x in u[own]]
    return pd.DataFrame({"userId": data["user_ids"][u], "movieId": data["movie_ids"][m], "tag": tag,
                         "timestamp": rng.integers(s.t0, s.t1, len(m))}).sort_values(["userId", "movieId"])


def write_release(name: str, dest: str | Path, seed: int = SEED) -> Path:
    """Write shape ``name`` as a zip in its release's official layout to ``dest``; returns ``dest``."""
    s = SHAPES[name]
    dest = Path(dest)
    data = generate(name, seed)
    N = len(data["stars"])
    movie_ids = data["movie_ids"]
    csv = s.layout == "csv"
    if csv:
        star_text = np.array([f"{v / 2:.1f}" for v in range(11)], dtype=object)
    elif s.half:
        star_text = np.array([f"{v / 2:g}" for v in range(11)], dtype=object)
    else:
        star_text = np.array([str(v // 2) for v in range(11)], dtype=object)
    years = 1920 + (movie_ids % 90)
    titles = [f"Synthetic Movie Number {m} ({y})" for m, y in zip(movie_ids, years)]
    genres = ["|".join(GENRES[j] for j in sorted({m % 18, (m // 7) % 18})) for m in movie_ids]
    people = None
    if s.side > 0:
        genres, people = side_information(s, data, seed)
    folder = s.folder
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(f"{folder}/", "")
        rname = "ratings.csv" if csv else "ratings.dat"
        with zf.open(f"{folder}/{rname}", "w", force_zip64=True) as f:
            if csv:
                f.write(b"userId,movieId,rating,timestamp\n")
            step = 1_000_000
            for a in range(0, N, step):
                b = min(a + step, N)
                frame = pd.DataFrame({"u": data["users"][a:b], "m": data["movies"][a:b],
                                      "r": star_text[(data["stars"][a:b] * 2).astype(np.int64)],
                                      "t": data["timestamps"][a:b]})
                text = frame.to_csv(header=False, index=False, sep="," if csv else "\x01", lineterminator="\n")
                f.write(text.encode() if csv else text.encode().replace(b"\x01", b"::"))
        if csv:
            buf = io.StringIO()
            pd.DataFrame({"movieId": movie_ids, "title": titles, "genres": genres}).to_csv(
                buf, index=False, lineterminator="\n")
            zf.writestr(f"{folder}/movies.csv", buf.getvalue())
        else:
            zf.writestr(f"{folder}/movies.dat", "".join(f"{m}::{t}::{g}\n" for m, t, g in
                                                        zip(movie_ids, titles, genres)).encode("latin-1"))
        if s.release == "ml-1m":
            user_ids = np.unique(data["users"])
            lines = people or [f"{u}::{'MF'[u % 2]}::{ML1M_AGES[u % 7]}::{u % 21}::{10000 + u}\n" for u in user_ids]
            zf.writestr(f"{folder}/users.dat", "".join(lines))
        if s.tags:
            tags = tag_lines(s, data, seed)
            if csv:
                buf = io.StringIO()
                tags.to_csv(buf, index=False, lineterminator="\n")
                zf.writestr(f"{folder}/tags.csv", buf.getvalue())
            else:
                zf.writestr(f"{folder}/tags.dat", "".join(f"{u}::{m}::{t}::{ts}\n" for u, m, t, ts in
                                                          tags.itertuples(index=False)))
        elif s.release == "ml-10m":
            zf.writestr(f"{folder}/tags.dat", "")
        zf.writestr(f"{folder}/README", f"synthetic {name}-shaped release\n")
    return dest


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in SHAPES:
        sys.exit(f"usage: python {sys.argv[0]} SHAPE OUT.zip   (SHAPE: {', '.join(SHAPES)})")
    t0 = time.time()
    write_release(sys.argv[1], sys.argv[2])
    log(f"wrote {sys.argv[2]} ({SHAPES[sys.argv[1]].release} layout) in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
