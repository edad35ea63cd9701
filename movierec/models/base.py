"""What every model provides, and the config conventions the CLI builds its options from.

A model is a ``torch.nn.Module`` whose parameters and buffers are its whole learned state (so a
checkpoint is its ``state_dict`` plus its config); the module holds nothing else. Training state (optimizer
moments, momentum, shuffled batches, epoch counters, solve plans) lives apart from it, in the :class:`Trainer`
that :meth:`Recommender.trainer` makes for one run; each model class has its own, next to it. The one
training loop in :mod:`movierec.training` calls its :meth:`Trainer.train_epoch` per epoch and
:meth:`Trainer.finalize` once at the end (after restoring the kept epoch's weights), which writes what the model
derives from its weights and the training ratings for serving into its buffers; everything else reads
predictions through :meth:`Recommender.score` / :meth:`Recommender.predict`.

Conventions:
- users and movies are contiguous indices; ``train`` is the users x movies :class:`RatingMatrix` of
  the training ratings, on the model's device;
- all randomness in training comes from the ``generator`` passed in (same seed, same numbers);
- models never print; they return numbers.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.kinds import ScoreKind, score_kind


@dataclass(frozen=True)
class Search:
    """Where `movierec tune` looks for a config field's value: a number from ``low`` to ``high`` (both included;
    ``log``: spread evenly on a log scale, for rates and penalties), or one of ``choices``. The field's type says
    whether the number is whole. Made by :func:`between` and :func:`among`; read by :mod:`movierec.tuning`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()


def between(low: float, high: float, *, log: bool = False) -> Search:
    """Tune the field over ``[low, high]`` (on a log scale with ``log``)."""
    return Search(low=low, high=high, log=log)


def among(*choices: Any) -> Search:
    """Tune the field over these values."""
    return Search(choices=tuple(choices))


def option(default: Any, help: str, *flags: str, choices: tuple[str, ...] | None = None,
           search: Search | None = None) -> Any:
    """A config field: its default, its one-line doc (the CLI's help text), optional extra flags, for a
    string the values it may take (checked once, by :class:`ModelConfig`) and where `movierec tune` searches
    for its best value (None: tuning leaves it at its default)."""
    return dataclasses.field(default=default,
                             metadata={"help": help, "flags": flags, "choices": choices, "search": search})


def flag_name(field_name: str) -> str:
    """The command-line flag of a config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + field_name.replace("_", "-")


def affordable_epochs(config_class: type[ModelConfig], n_ratings: int, rating_passes: float) -> dict[str, Any]:
    """``{"epochs": n}`` when the class's default epochs would read more than ``rating_passes`` ratings in all
    (``n`` = as many whole epochs as fit, at least 1), else ``{}``: for :meth:`ModelConfig.for_data`."""
    default = config_class.__dataclass_fields__["epochs"].default
    epochs = max(1, int(rating_passes // max(n_ratings, 1)))
    return {"epochs": epochs} if epochs < default else {}


@dataclass(frozen=True)
class ModelConfig:
    """Base of every model's config. Subclasses are frozen dataclasses whose fields use :func:`option`
    and include ``epochs``; a subclass with its own ``__post_init__`` calls this one first.

    Every field has a fixed default: a class is one algorithm, so no value means "some other default"."""

    epochs: int = option(20, "Passes over the training ratings.")

    def __post_init__(self) -> None:
        # The checks every option needs, in one place: a declared choice, and a finite number (NaN
        # passes every "> 0" test and only shows up epochs later as a divergence, or as a traceback).
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise MovierecError(f"{flag_name(f.name)} must be one of {', '.join(choices)}; got {value!r}.")
            if isinstance(value, float) and not math.isfinite(value):
                raise MovierecError(f"{flag_name(f.name)} must be a finite number, not {value}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**values)

    @classmethod
    def for_data(cls, n_users: int, n_items: int, n_ratings: int) -> dict[str, Any]:
        """The defaults this class sets differently for a training set of ``n_ratings`` ratings of ``n_users``
        users and ``n_items`` movies, so that
        training with the defaults stays affordable on the largest releases (fewer epochs, say); the
        defaults themselves are those of small data (where they were tuned). Options the user gives are
        never changed (see :func:`movierec.models.scaled_defaults`). Default: none."""
        return {}

    @classmethod
    def migrate(cls, values: dict[str, Any]) -> dict[str, Any]:
        """A config dict from a checkpoint saved before each mode was its own class (already stripped of
        other modes' fields) -> this class's. For a class whose new fields' defaults do not describe the
        old model. Default: unchanged."""
        return values

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


class Trainer(ABC):
    """One training run of one model: everything training needs that is not the model's learned state.

    Made by :meth:`Recommender.trainer` for a training matrix and a generator; the training loop calls
    :meth:`train_epoch` once per epoch and :meth:`finalize` once after the last one. After every epoch the
    model must be usable (validation scores it); after :meth:`finalize` the model is exactly what is saved
    and served, and the trainer can be dropped.
    """

    def __init__(self, model: Recommender, train: RatingMatrix, generator: torch.Generator):
        self.model = model
        self.train = train
        """The training ratings, users x movies, on the model's device."""
        self.generator = generator
        """Where all of training's randomness comes from (same seed, same numbers)."""
        self.on_advance: Callable[[int, int], None] | None = None  # set by the training loop for its epochs

    def advance(self, amount: int, total: int) -> None:
        """Say that ``amount`` more of this epoch's ``total`` units of work are done (ratings, users, movies:
        the trainer's choice, the same all epoch). Called once per batch; the training loop shows it."""
        if self.on_advance is not None:
            self.on_advance(amount, total)

    @abstractmethod
    def train_epoch(self) -> dict[str, float]:
        """One pass over the training ratings; returns at least ``{"loss": ...}`` for that pass."""

    def finalize(self) -> None:  # noqa: B027
        """After the last epoch (and after the kept epoch's weights are restored): write what the model derives
        from its weights and the training ratings into its buffers, and let go of what only training needs.
        Default: nothing."""



class RatingsMemo:
    """What a model computes from its weights and a rating matrix to score against it (every movie's hidden
    units, or codes), kept for the one matrix it was last computed for: evaluation scores one matrix batch after
    batch, and recomputing it for every batch would cost more than the scoring. Not part of the model's state.

    The memo holds for the weights it was computed with; whatever changes them says so with :meth:`forget`:
    the model's trainer before every epoch, and ``load_state_dict`` (through the hook the model registers with
    :meth:`attach`). Values :meth:`keep` is given (the saved units of the fitted ratings) are trusted as such.
    """

    def __init__(self) -> None:
        self._entry: tuple[RatingMatrix, torch.Tensor] | None = None

    def attach(self, model: torch.nn.Module) -> RatingsMemo:
        """Forget whenever ``model`` loads a state dict; returns this memo, for ``RatingsMemo().attach(self)``."""
        model.register_load_state_dict_post_hook(lambda module, keys: self.forget())
        return self

    def get(self, ratings: RatingMatrix, compute: Callable[[RatingMatrix], torch.Tensor]) -> torch.Tensor:
        """The value for ``ratings`` (the same object as last time), else ``compute(ratings)``, kept."""
        if self._entry is None or self._entry[0] is not ratings:
            self._entry = (ratings, compute(ratings))
        return self._entry[1]

    def keep(self, ratings: RatingMatrix, value: torch.Tensor) -> None:
        """``value`` is what :meth:`get` would compute for ``ratings`` with the current weights."""
        self._entry = (ratings, value)

    def forget(self) -> None:
        self._entry = None

class Recommender(torch.nn.Module, ABC):
    """Base class of every model class: one class per (model name, mode), as listed in the registry."""

    name: ClassVar[str]
    """The model's name in the registry and on the command line, e.g. ``"als"``."""
    mode: ClassVar[str]
    """Which of the model's algorithms this class is, e.g. ``"implicit"``."""
    config_class: ClassVar[type[ModelConfig]]
    new_user_shrink: ClassVar[float] = 8.0
    """How strongly a new user's list pulls rarely rated movies towards neutral by default, in multiples of the
    mean number of training ratings per movie (:func:`movierec.recommend.for_new_user`): needed where a handful
    of ratings lets a model rate obscure movies as high as anything; 0 where the scores already weigh how often
    a movie is picked. Lists ranked by P(picked and liked), measured by benchmarks/new_users.py on ml-100k users
    folded in from 3 / 5 / 10 ratings: 0 gave 1.08-1.14x popularity's NDCG@10 from 3-5 ratings (rbm, mf), 4x
    1.19-1.24x, 8x 1.20-1.29x with 3.5-4.0 of the 10 movies in the popularity top 10; 16x added at most 0.01
    while drifting towards the chart. (Lists ranked by a model's own stars, before the picks model: 8x beat every
    minimum-ratings filter, e.g. mf 0.229 -> 0.363.)"""

    uses_side_information: ClassVar[bool] = False
    """Whether the model learns from what the release says of its movies and people besides the ratings
    (:meth:`use_side_information`): the training loop gives it their features before the first epoch."""

    def __init__(self, config: ModelConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        super().__init__()
        self.config = config
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.rating_values = tuple(float(v) for v in rating_values)  # the star values, ascending

    # -- what the model predicts ---------------------------------------------------------------
    kind: ClassVar[ScoreKind] = ScoreKind.RATING
    """What :meth:`score` returns: stars (rating), P(liked) (like), or scores that only order movies (rank)."""

    @property
    def like_threshold(self) -> float | None:
        """For ``"like"`` models: a rating of at least this many stars counts as liked."""
        return None

    @property
    def rating_min(self) -> float:
        return self.rating_values[0]

    @property
    def rating_max(self) -> float:
        return self.rating_values[-1]

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    # -- training --------------------------------------------------------------------------------
    @abstractmethod
    def trainer(self, train: RatingMatrix, generator: torch.Generator) -> Trainer:
        """A fresh :class:`Trainer` for one run of this model on ``train`` (users x movies, on the model's
        device): it sets up what training needs (and what the model learns from the data before the first
        epoch, such as the training mean); every epoch then goes through its :meth:`Trainer.train_epoch`."""

    def use_side_information(self, movies: Any, people: Any) -> None:  # noqa: B027
        """Learn from these features (:class:`movierec.data.features.SideFeatures` of every movie and every
        person, by index) too; called before training for models that :attr:`uses_side_information`. Default:
        nothing."""

    def complete_picks(self, picks: Recommender, train: RatingMatrix) -> None:  # noqa: B027
        """After the picks model its lists rank through is trained on ``train``: tell it what it could not learn
        from who rated what (movies and people without training ratings) from what this model knows of them.
        Default: nothing."""

    def reuse_fit_state(self, train: RatingMatrix) -> None:  # noqa: B027
        """``train`` holds exactly the ratings the model was fitted on (no validation slice was held out), as the
        training ratings of a checkpoint saved without one do: what the model derived from them at the end of
        training (:meth:`Trainer.finalize`) and saved with its weights may stand in for recomputing it from
        ``train``. Default: nothing."""

    # -- prediction ------------------------------------------------------------------------------
    @abstractmethod
    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        """The model's raw predictions for every movie, for a batch of users: (B,) user indices ->
        (B, n_items).

        Raw means unclipped: a top-N list ranks by everything the model knows, and two movies predicted
        at 5.4 and 5.1 stars are not a tie. ``train`` holds the users' known ratings (models that read a
        user's ratings as input need it).
        """

    @torch.no_grad()
    def predict(
        self, users: torch.Tensor, items: torch.Tensor, train: RatingMatrix, batch_users: int = 1024
    ) -> torch.Tensor:
        """Predictions for (user, movie) pairs: (N,), (N,) -> (N,), clipped to the rating scale for a
        ``"rating"`` model. Batched over distinct users."""
        users = users.to(self.device, torch.int64)
        items = items.to(self.device, torch.int64)
        out = torch.empty(users.shape[0], dtype=torch.float32, device=self.device)
        uniq, inverse = torch.unique(users, return_inverse=True)
        for start in range(0, uniq.shape[0], batch_users):
            stop = min(start + batch_users, uniq.shape[0])
            scores = self.score(uniq[start:stop], train)  # (b, I)
            sel = (inverse >= start) & (inverse < stop)
            out[sel] = scores[inverse[sel] - start, items[sel]]
        return score_kind(self.kind).on_scale(out, self.rating_min, self.rating_max)

    @abstractmethod
    def item_vectors(self) -> torch.Tensor:
        """One vector per movie, (n_items, d), for cosine similarity between movies."""

    @abstractmethod
    def fold_in(self, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """Raw predictions (as :meth:`score`) for every movie for a user not seen in training, from their
        ratings alone.

        ``items`` (n,) movie indices and ``ratings`` (n,) stars -> (n_items,). No retraining.
        """

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        """Clip predicted stars to the data set's rating scale (whatever the model's kind)."""
        return ScoreKind.RATING.on_scale(x, self.rating_min, self.rating_max)

