"""Pictures of a saved model as PNG files: its training curves, and a 2-D map of its learned movie vectors.

matplotlib is an optional extra (``pip install "movierec[plot]"``), imported only when a picture is drawn and
used through its object API with the Agg canvas: no display is needed, and the backend of whoever called us
(a notebook, say) is left alone. Titles are drawn as plain text, so a ``$`` in a movie title is a dollar sign,
never the start of a formula. Files are written atomically: a temporary file in the same folder, then renamed.

The curves read only the checkpoint's header (its saved per-epoch history); the map of a factor model (mf, als)
reads its movie vectors with numpy, and needs torch only to colour by k-means cluster (the same clustering as
``movierec clusters``).
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from movierec.errors import MovierecError
from movierec.files import atomic_file

if TYPE_CHECKING:
    from movierec.checkpoint import CheckpointMeta
    from movierec.serving import Served
    from movierec.tuning import TuneResult

MISSING_EXTRA = 'movierec plot needs matplotlib; install it with pip install "movierec[plot]".'
COLOR_BY = ("cluster", "genre")
MIN_RATINGS = 20
"""The map leaves out movies with fewer training ratings: their vectors are mostly noise (as `similar` does)."""
MAX_GENRE_COLOURS = 12
"""Genres beyond the most frequent this many share one grey: more colours than this cannot be told apart."""
_REST = ("other genres", "no genre")
SCALES_APART = 5.0
"""Loss and metrics get a panel each when their typical sizes differ by more than this factor."""


@dataclass(frozen=True)
class Drawn:
    """What a picture shows: its file and, for scripts and tests, what was drawn in it."""

    path: Path
    kind: str
    """``"curves"`` or ``"map"``."""
    model: str
    """The saved model's name."""
    details: dict[str, Any] = field(default_factory=dict)
    """Curves: ``epochs``, ``series`` (e.g. ``train loss``, ``valid rmse``), ``panels``. Map: ``movies`` (points
    drawn), ``min_ratings``, ``color_by``, ``groups`` (legend entries with their sizes), ``labelled`` (titles),
    ``explained`` (share of the variance along each axis)."""

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "model": self.model, **self.details}


# -- training curves ----------------------------------------------------------------------------------------
def plot_history(meta_or_name: CheckpointMeta | str | None, path: str | Path) -> Drawn:
    """Training curves of a saved model: train loss and every validation metric per epoch (every training metric
    when nothing was validated), from the history saved in its checkpoint. ``meta_or_name`` is its metadata, a
    saved name (or its unique beginning), or None for the default (pinned, else the newest). Loss and metrics get
    two panels when their scales differ."""
    from movierec import checkpoint

    require_matplotlib()
    path = _check_output(path)
    meta = meta_or_name
    if meta is None or isinstance(meta, (str, Path)):
        meta = checkpoint.read_meta(checkpoint.resolve(None if meta is None else str(meta)))
    series = _history_series(meta)
    epochs = sorted({e for points in series.values() for e, _ in points})
    losses = {k: v for k, v in series.items() if k.endswith(" loss")}
    others = {k: v for k, v in series.items() if k not in losses}
    panels = [losses, others] if losses and others and _apart(losses, others) else [series]
    kept = _kept_epoch(meta)

    figure = _figure(8.0, 3.2 + 2.2 * len(panels))
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels):
        for name, points in panel.items():
            xs, ys = zip(*points)
            style = "--" if name.startswith("valid ") else "-"
            ax.plot(xs, ys, style, marker="o" if len(xs) <= 30 else None, markersize=3, label=_text(name))
        if kept is not None and kept < epochs[-1]:
            ax.axvline(kept, color="0.5", linestyle=":", linewidth=1)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="best")
        ax.set_ylabel("loss" if panel is losses else "metric" if panel is others else "value")
    axes[-1].set_xlabel("epoch" + (f"  (dotted: epoch {kept}, the one kept)" if kept and kept < epochs[-1] else ""))
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_title(_title(meta, "training curves"), fontsize="medium", parse_math=False)
    figure.tight_layout()
    out = _save(figure, path)
    return Drawn(out, "curves", meta.name, {
        "epochs": len(epochs), "series": list(series), "panels": [list(p) for p in panels], "kept_epoch": kept,
    })


# -- a tuning study ------------------------------------------------------------------------------------------
def plot_tuning(result: TuneResult, path: str | Path) -> Drawn:
    """A study's search history (:mod:`movierec.tuning`): each finished trial's validation value by its number
    (pruned ones hollow, at their last validated epoch's value), and the best complete value so far as a step
    line."""
    require_matplotlib()
    path = _check_output(path)
    complete = [(r.number, r.value) for r in result.records
                if r.state == "complete" and r.value is not None and math.isfinite(r.value)]
    pruned = [(r.number, r.value) for r in result.records
              if r.state == "pruned" and r.value is not None and math.isfinite(r.value)]
    if not complete:
        raise MovierecError(f"Study {result.study} has no complete trial to plot yet.")
    best: list[tuple[int, float]] = []
    for number, value in complete:
        if not best or (value > best[-1][1] if result.higher_is_better else value < best[-1][1]):
            best.append((number, value))
        else:
            best.append((number, best[-1][1]))
    last = max(r.number for r in result.records)
    if last > best[-1][0]:  # the line runs on over the trials after the last complete one
        best.append((last, best[-1][1]))

    figure = _figure(8.0, 4.4)
    ax = figure.subplots()
    xs, ys = zip(*complete)
    ax.plot(xs, ys, "o", markersize=4, label="trial")
    if pruned:
        px, py = zip(*pruned)
        ax.plot(px, py, "o", markersize=4, markerfacecolor="none", color="0.5", label="pruned trial")
    bx, by = zip(*best)
    ax.step(bx, by, where="post", color="C3", label="best so far")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {result.metric}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    model = f"{result.model} ({result.mode})" if result.mode else result.model
    ax.set_title(f"{result.study}: {model} on {result.dataset}, split {result.split}\nsearch history",
                 fontsize="medium", parse_math=False)
    figure.tight_layout()
    out = _save(figure, path)
    return Drawn(out, "tune", result.study, {
        "trials": len(result.records), "complete": len(complete), "pruned": len(pruned), "metric": result.metric,
        "best_trial": result.best_trial, "best_value": result.best_value,
    })


def _history_series(meta: CheckpointMeta) -> dict[str, list[tuple[int, float]]]:
    """``{"train loss": [(epoch, value), ...], "valid rmse": [...]}`` from the saved history; train loss first,
    then the validation metrics; non-finite values (a diverged epoch) are left out of their curve."""
    history = meta.history
    if not history:
        raise MovierecError(f"{meta.name} has no saved training history to plot; retrain it to get one.")
    series: dict[str, list[tuple[int, float]]] = {}
    validated = any(isinstance(e, dict) and e.get("valid") for e in history)
    for n, entry in enumerate(history, 1):
        if not isinstance(entry, dict):
            raise MovierecError(f"The training history of {meta.name} is damaged (epoch {n} is not a record).")
        epoch = entry.get("epoch", n)
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise MovierecError(f"The training history of {meta.name} is damaged (epoch {n} has no number).")
        for side in ("train", "valid"):
            metrics = entry.get(side) or {}
            if not isinstance(metrics, dict):
                raise MovierecError(f"The training history of {meta.name} is damaged (epoch {n}'s {side} metrics).")
            for metric, value in metrics.items():
                if side == "train" and metric != "loss" and validated:
                    continue  # with a validation slice, training is shown by its loss and judged on the slice
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    series.setdefault(f"{side} {metric}", []).append((epoch, float(value)))
    if not series:
        raise MovierecError(f"{meta.name} has no finite metric in its training history to plot.")
    return dict(sorted(series.items(), key=lambda kv: (not kv[0].startswith("train"), kv[0] != "train loss")))


def _apart(a: dict[str, list[tuple[int, float]]], b: dict[str, list[tuple[int, float]]]) -> bool:
    def size(group: dict[str, list[tuple[int, float]]]) -> float:
        return float(np.median([abs(v) for points in group.values() for _, v in points])) or 1e-12

    ratio = size(a) / size(b)
    return ratio > SCALES_APART or ratio < 1 / SCALES_APART


def _kept_epoch(meta: CheckpointMeta) -> int | None:
    """The epoch whose weights were kept (early stopping keeps the best validated one), if the history says."""
    if not meta.valid_metrics:
        return None
    for entry in meta.history:
        if isinstance(entry, dict) and entry.get("valid") == meta.valid_metrics:
            epoch = entry.get("epoch")
            return epoch if isinstance(epoch, int) else None
    return None


# -- the map of movie vectors --------------------------------------------------------------------------------
def plot_movie_map(
    served: Served | str | None, path: str | Path, *, color_by: str = "cluster", k: int = 10, labels: int = 15,
    seed: int = 0, min_ratings: int = MIN_RATINGS,
) -> Drawn:
    """A 2-D map of a saved model's learned movie vectors: each movie with at least ``min_ratings`` training
    ratings is a point, placed by the first two principal components of the unit-length vectors (numpy SVD,
    signs fixed, so the same model gives the same picture), coloured by its k-means cluster (``k`` clusters,
    ``seed``: the clusters of ``movierec clusters``) or by its genre; the ``labels`` most-rated movies are
    labelled with their titles. ``served`` is an open model (:func:`movierec.loading.open_model`), a saved name,
    or None for the default (pinned, else the newest)."""
    from movierec import loading

    require_matplotlib()
    path = _check_output(path)
    if color_by not in COLOR_BY:
        raise MovierecError(f"--color-by must be one of: {', '.join(COLOR_BY)} (not {color_by!r}).")
    if labels < 0 or min_ratings < 0:
        raise MovierecError("--labels and --min-ratings must be at least 0.")
    if served is None or isinstance(served, (str, Path)):
        with contextlib.closing(loading.open_model(None if served is None else str(served))) as opened:
            return plot_movie_map(opened, path, color_by=color_by, k=k, labels=labels, seed=seed,
                                  min_ratings=min_ratings)
    meta, movies, counts = served.meta, served.catalogue, np.asarray(served.counts)
    vectors = np.asarray(served.scorer.item_vectors(), dtype=np.float32)  # (I, d)
    if vectors.ndim != 2 or vectors.shape[1] < 2:
        raise MovierecError(f"{meta.name} has movie vectors of fewer than 2 dimensions; there is no map to draw.")
    if not np.isfinite(vectors).all():
        raise MovierecError(f"{meta.name} holds non-finite movie vectors; retrain it.")
    keep = np.flatnonzero(counts >= min_ratings)  # (N,)
    if keep.size < 3:
        raise MovierecError(f"Only {keep.size} movies of {meta.name} have at least {min_ratings} training ratings; "
                            "lower --min-ratings to draw a map.")
    xy, explained = project_2d(vectors[keep])  # (N, 2)
    if color_by == "cluster":
        group_of = served.cluster_labels(k, seed=seed)  # as `movierec clusters` numbers them
        names = [f"cluster {n}" for n in range(1, int(group_of.max()) + 2)]
    else:
        group_of, names = _genres(movies, keep, counts)
    group = group_of[keep]  # (N,)
    # The best-known movies get their titles; equal counts go to the lower index (deterministic).
    labelled = keep[np.argsort(-counts[keep], kind="stable")[:labels]]

    figure = _figure(9.0, 7.5)
    ax = figure.subplots()
    colours = _palette(names)
    sizes = Counter(group.tolist())
    for g, name in enumerate(names):
        members = group == g
        if members.any():
            ax.scatter(xy[members, 0], xy[members, 1], s=9, alpha=0.75, color=colours[g], linewidths=0,
                       label=_text(f"{name} ({sizes[g]})"))
    position = {int(m): i for i, m in enumerate(keep)}
    titles = []
    for item in labelled:
        x, y = xy[position[int(item)]]
        titles.append(ax.annotate(movies.title(int(item)), (x, y), xytext=_SPOTS[0][0], textcoords="offset points",
                                  fontsize=7, parse_math=False))
        ax.plot([x], [y], "o", markersize=4, markerfacecolor="none", markeredgecolor="black", markeredgewidth=0.6)
    ax.set_xlabel(f"first principal component ({explained[0]:.0%} of the variance)")
    ax.set_ylabel(f"second principal component ({explained[1]:.0%} of the variance)")
    how = f"k-means cluster (k={k}, seed {seed})" if color_by == "cluster" else "genre (its rarest)"
    ax.set_title(_title(meta, f"{keep.size:,} movies with {min_ratings}+ ratings, coloured by {how}"),
                 fontsize="medium", parse_math=False)
    ax.legend(fontsize="x-small", markerscale=1.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
              title=f"{color_by} (movies shown)", title_fontsize="x-small")
    ax.grid(True, alpha=0.2)
    figure.tight_layout()
    _place_titles(figure, titles)
    out = _save(figure, path)
    return Drawn(out, "map", meta.name, {
        "movies": int(keep.size), "min_ratings": min_ratings, "color_by": color_by,
        "groups": {name: sizes[g] for g, name in enumerate(names) if sizes[g]},
        "labelled": [movies.title(int(i)) for i in labelled],
        "explained": [round(float(e), 4) for e in explained],
    })


_SPOTS = (((3, 3), "left", "bottom"), ((3, -3), "left", "top"), ((-3, 3), "right", "bottom"),
          ((-3, -3), "right", "top"), ((0, 7), "center", "bottom"), ((0, -7), "center", "top"))
"""Where a title may sit around its point (offset in points, alignment), in order of preference."""


def _place_titles(figure: Any, titles: list[Any]) -> None:
    """Move each title (most-rated first) to the first spot around its point where it overlaps no title
    placed before it; where none is free it stays at the first."""
    renderer = figure.canvas.get_renderer()
    placed: list[Any] = []
    for title in titles:
        for offset, ha, va in (*_SPOTS, _SPOTS[0]):
            title.xyann = offset
            title.set_horizontalalignment(ha)
            title.set_verticalalignment(va)
            box = title.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
        placed.append(box)


def project_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``vectors`` (N, d) scaled to unit length, centred, and projected on their first two principal
    components -> (N, 2) coordinates and the share of the variance along each. Each axis points the way its
    most extreme movie lies (positive), so the picture does not flip between runs or machines."""
    from movierec.recommend import unit_rows

    unit = unit_rows(vectors).astype(np.float64)
    centred = unit - unit.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T  # (N, 2)
    for j in range(2):
        if xy[np.argmax(np.abs(xy[:, j])), j] < 0:
            xy[:, j] = -xy[:, j]
    total = float((s**2).sum()) or 1.0
    return xy, (s[:2] ** 2) / total


def _genres(movies: Any, keep: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Each movie's rarest genre (Animation rather than Comedy: the one that says most about it), with the
    genres beyond :data:`MAX_GENRE_COLOURS` and movies without one grouped last -> (I,), names."""
    genres = {int(i): movies.genres(int(i)) for i in keep}
    frequency = Counter(g for gs in genres.values() for g in gs)
    chosen = {i: min(gs, key=lambda g: (frequency[g], g)) if gs else None for i, gs in genres.items()}
    shown = [g for g, _ in Counter(c for c in chosen.values() if c).most_common(MAX_GENRE_COLOURS)]
    index = {g: n for n, g in enumerate(shown)}
    rest = [c for c in chosen.values() if c not in index]
    names = [*shown, *([_REST[0] if any(rest) else _REST[1]] if rest else [])]
    group = np.full(len(counts), len(shown), dtype=np.int64)
    for i, c in chosen.items():
        group[i] = index.get(c, len(shown))
    return group, names


# -- shared -----------------------------------------------------------------------------------------------------
def require_matplotlib() -> None:
    """Raise the one-line hint unless matplotlib (the ``plot`` extra) can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MovierecError(MISSING_EXTRA) from None


def _figure(width: float, height: float) -> Any:
    """A figure on the Agg canvas, outside pyplot: nothing global changes and no display is needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _palette(names: list[str]) -> list[Any]:
    """A colour per group; the catch-all groups grey. Beyond 20 groups colours repeat."""
    from matplotlib import colormaps

    cmap = colormaps["tab20" if len(names) > 10 else "tab10"]
    return [(0.6, 0.6, 0.6, 1.0) if name in _REST else cmap(i % cmap.N) for i, name in enumerate(names)]


def _text(text: str) -> str:
    """A legend entry drawn as written: legends cannot be told not to read ``$...$`` as a formula (titles and
    labels are drawn with ``parse_math=False``), so a dollar sign is escaped."""
    return text.replace("$", r"\$")


def _title(meta: CheckpointMeta, what: str) -> str:
    model = f"{meta.model} ({meta.mode})" if meta.mode else meta.model
    return f"{meta.name}: {model} on {meta.dataset}, split {meta.split}\n{what}"


def _check_output(path: str | Path) -> Path:
    """``path`` as a Path, if a PNG file can be written there (checked before any drawing)."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".png":
        raise MovierecError(f"{path} does not end in .png; pictures are written as PNG files.")
    if not path.parent.is_dir():
        raise MovierecError(f"Cannot write {path}: the folder {path.parent} does not exist.")
    if path.is_dir():
        raise MovierecError(f"Cannot write {path}: it is a folder.")
    return path


def _save(figure: Any, path: Path) -> Path:
    """Write ``figure`` to ``path`` as PNG, atomically; returns the path."""
    with atomic_file(path, f"Cannot write {path}") as f:
        figure.savefig(f, format="png")
    return path
