"""`movierec train MODEL`: one sub-command per model, its options generated from the model's config.

The model modules (and torch) are imported only when a model's command is asked for, so
`movierec --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup

from movierec.cli.core import first_sentence
from movierec.device import DEFAULT_DEVICE, DEVICE_HELP
from movierec.errors import MovierecError
from movierec.models import MODELS
from movierec.options import DEFAULT_TEST_FRACTION, TrainingEvents

if TYPE_CHECKING:
    from movierec.cli.progress import Steps
    from movierec.models.base import Recommender
    from movierec.training import EpochReport, TrainPlan

_LISTING = "movierec.train.listing"


class _ModelCommands(TyperGroup):
    """One sub-command per model; :func:`model_group` says what each takes and runs."""

    build: ClassVar[Callable[[str], TyperCommand]]

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return list(MODELS)

    def get_command(self, ctx: typer.Context, cmd_name: str) -> TyperCommand | None:
        if cmd_name not in MODELS:
            raise MovierecError(f"Unknown model {cmd_name!r}; choose one of: {', '.join(MODELS)}.")
        if ctx.meta.get(_LISTING):
            # Typer's rich help asks for every command just to show its summary; building the real one
            # would import the model module (and torch).
            return TyperCommand(cmd_name, help=MODELS[cmd_name].summary)
        return self.build(cmd_name)

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        ctx.meta[_LISTING] = True
        try:
            super().format_help(ctx, formatter)
        finally:
            ctx.meta.pop(_LISTING, None)

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:
        # Listed from the registry: describing the models must not import them (and torch).
        with formatter.section("Models"):
            formatter.write_dl([(name, entry.summary) for name, entry in MODELS.items()])


def model_group(
    options: dict[str, tuple[Any, Any]], defaults: dict[str, Any], run: Callable[..., None], help: str
) -> typer.Typer:
    """A command with one sub-command per model (`movierec train MODEL`, `movierec cv MODEL`). Each takes
    ``options`` (name -> (type, typer.Option), defaults in ``defaults``), ``--mode`` and the model's own options
    generated from its config classes, and calls ``run(model, mode, config, **options)`` with the config
    options the user gave."""
    group = type("ModelCommands", (_ModelCommands,),
                 {"build": staticmethod(lambda model: _model_command(model, options, defaults, run))})
    return typer.Typer(cls=group, add_completion=False, no_args_is_help=True, help=help)


_COMMON: dict[str, tuple[Any, Any]] = {
    "dataset": (
        str | None,
        typer.Option(help="Dataset to train on (default: the fetched one; with several, the most recently "
                          "fetched)."),
    ),
    "split": (
        str | None,
        typer.Option(help="Held-out split: u1..u5, ua, ub (ml-100k), random or temporal (default: u1 on ml-100k, "
                          "else random); none trains on every rating, holding nothing out (a final model)."),
    ),
    "test_fraction": (float, typer.Option(help="Share of ratings held out by the random and temporal splits.")),
    "seed": (int, typer.Option(help="Random seed: same seed and device, same numbers.")),
    "device": (str, typer.Option(help=DEVICE_HELP)),
    "patience": (
        int | None,
        typer.Option(help="Stop after this many epochs without a better metric on the validation slice, keeping "
                          "the best epoch (default: off)."),
    ),
    "valid_fraction": (
        float | None,
        typer.Option(help="Share of the training ratings set aside to validate each epoch; never the test split "
                          "(default: 0.05 with --patience, else none)."),
    ),
    "name": (
        str | None,
        typer.Option(help="Checkpoint name (default: the model's, then with -2, -3, ...; with the mode added for "
                          "a mode other than the first)."),
    ),
    "json_output": (bool, typer.Option("--json", help="Print the result as JSON instead of tables.")),
}
_COMMON_DEFAULTS = {"dataset": None, "split": None, "test_fraction": DEFAULT_TEST_FRACTION, "seed": 0,
                    "device": DEFAULT_DEVICE, "patience": None, "valid_fraction": None, "name": None,
                    "json_output": False}


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _config_parameters(classes: dict[str, type]) -> tuple[list[inspect.Parameter], dict[str, list[str]]]:
    """The options of a model's command: the union of its mode classes' config fields, and for each field
    the modes that have it. A default that differs between modes is shown as ``16 (explicit), 64 (implicit)``."""
    fields: dict[str, list[tuple[str, dataclasses.Field, Any]]] = {}
    for mode, cls in classes.items():
        hints = typing.get_type_hints(cls.config_class)
        for f in dataclasses.fields(cls.config_class):
            if f.name != "mode":  # a class still told its mode through its config: --mode covers it
                fields.setdefault(f.name, []).append((mode, f, hints[f.name]))
    params = []
    for name, per_mode in fields.items():
        _, first, tp = per_mode[0]
        meta = first.metadata
        flag = "--" + name.replace("_", "-")
        decls = (f"{flag}/--no-{flag[2:]}",) if tp is bool else (flag, *meta.get("flags", ()))
        defaults = {mode: f.default for mode, f, _ in per_mode}
        help_text = meta.get("help", "")
        if len(per_mode) < len(classes):
            help_text += f" Only with --mode {' or '.join(defaults)}."
        # One default per option; where the modes differ, or a mode lacks the option, each mode's is named.
        shown = len(set(defaults.values())) == 1 and len(per_mode) == len(classes)
        if not shown:
            named = (_show(v) if tp is not bool else flag[2:] if v else f"no-{flag[2:]}" for v in defaults.values())
            help_text += "  [default: " + ", ".join(f"{v} ({m})" for v, m in zip(named, defaults)) + "]"
        default = first.default
        choices = [c for _, f, _ in per_mode for c in f.metadata.get("choices") or ()]
        if choices:
            # Typer shows an Enum as a list of choices and rejects anything else.
            tp = enum.Enum(f"Option_{name}", {c: c for c in dict.fromkeys(choices)}, type=str)
            default = tp(default)
        opt = typer.Option(*decls, help=help_text, show_default=shown, rich_help_panel="Model options")
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[tp, opt])
        )
    return params, {name: [m for m, _, _ in per_mode] for name, per_mode in fields.items()}


def _mode_parameter(classes: dict[str, type]) -> inspect.Parameter:
    # One paragraph per mode: the help formatter keeps paragraphs apart.
    described = "\n\n".join(f"{m}: {first_sentence(c.__doc__ or '')}" for m, c in classes.items())
    tp = enum.Enum("Mode", {m: m for m in classes}, type=str)
    opt = typer.Option("--mode", help=f"Which algorithm.\n\n{described}", rich_help_panel="Model options")
    return inspect.Parameter("mode", inspect.Parameter.KEYWORD_ONLY, default=tp(next(iter(classes))),
                             annotation=Annotated[tp, opt])


class _PlainHelp(TyperCommand):
    """A model's help in two groups: the options every model shares, then the model's own."""

    def format_options(self, ctx: typer.Context, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        for title, records in sections.items():
            with formatter.section(title):
                formatter.write_dl(records)


def _model_command(
    model: str, options: dict[str, tuple[Any, Any]], defaults: dict[str, Any], run: Callable[..., None]
) -> TyperCommand:
    from movierec.models import model_classes

    classes = model_classes(model)
    config_params, modes_of = _config_parameters(classes)
    clash = set(modes_of) & (set(options) | {"mode", "ctx"})
    assert not clash, f"{model} config fields clash with common options: {clash}"

    def command(ctx: typer.Context, **kwargs: Any) -> None:
        common = {k: kwargs.pop(k) for k in list(options)}
        mode = kwargs.pop("mode", None)
        mode = mode.value if isinstance(mode, enum.Enum) else next(iter(classes))
        # Only the options the user gave: the chosen class's own defaults apply to the rest.
        given = {k: v for k, v in kwargs.items() if getattr(ctx.get_parameter_source(k), "name", "") != "DEFAULT"}
        for k in given:
            if mode not in modes_of[k]:
                flag, others = "--" + k.replace("_", "-"), " or ".join(modes_of[k])
                raise MovierecError(f"{flag} is not an option of {model} --mode {mode}; it applies to --mode {others}.")
        config = {k: v.value if isinstance(v, enum.Enum) else v for k, v in given.items()}
        run(model, mode, config, **common)

    ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    common_params = [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=defaults[k], annotation=Annotated[tp, opt])
        for k, (tp, opt) in options.items()
    ]
    mode_params = [_mode_parameter(classes)] if len(classes) > 1 else []
    command.__signature__ = inspect.Signature([ctx_param, *common_params, *mode_params, *config_params])
    command.__doc__ = MODELS[model].summary
    single = typer.Typer(add_completion=False, rich_markup_mode=None)  # as the app's
    single.command(model, cls=_PlainHelp)(command)
    return typer.main.get_command(single)


class TrainingLines(TrainingEvents):
    """A training run on screen: its steps and their progress as they go, then what it trains on, and a line of
    the training curve per epoch (an epoch and its validation leave that line, nothing else)."""

    def __init__(self, steps: Steps, model: str, *, quiet: bool):
        self.steps, self.model, self.quiet = steps, model, quiet

    def step(self, description: str) -> None:
        self.steps.step(description)

    def progress(self, done: int, total: int) -> None:
        self.steps.progress(done, total)

    def start(self, model: Recommender, plan: TrainPlan) -> None:
        self.steps.step("")  # the data is ready: its steps' lines come before what is made of it
        if self.quiet:
            return
        why = f" ({plan.dataset_why})" if plan.dataset_why else ""
        valid = f", {len(plan.valid):,} of them set aside to validate," if plan.valid is not None else ""
        ratings = (f"{len(plan.split.train):,} training{valid} and {len(plan.split.test):,} test ratings"
                   if plan.split.has_test else
                   f"every one of its {len(plan.split.train):,} ratings{valid.rstrip(',')} (no test split)")
        self.steps.line(
            f"Training [bold]{self.model}[/] on {plan.dataset}{why} split {plan.split.name}: {ratings}, "
            f"{model.n_users:,} users x {model.n_items:,} movies, device {model.device}.", markup=True,
        )
        if plan.scaled:
            self.steps.line(scaled_line(model, plan))
        if plan.valid_users:
            self.steps.line(f"Each epoch is validated on a fixed sample of {plan.valid_users:,} of the validation "
                            "users; the test split is ranked in full at the end.")

    def epoch(self, report: EpochReport) -> None:
        self.steps.step("")  # ends the validation step
        if not self.quiet:
            self.steps.record(_epoch_line(report), indent=len("epoch 999/9  "))


def _run(model: str, mode: str, config: dict[str, Any], *, dataset: str | None, split: str | None,
         test_fraction: float, seed: int, device: str, patience: int | None, valid_fraction: float | None,
         name: str | None, json_output: bool) -> None:
    from movierec.cli.console import print_json
    from movierec.cli.progress import Steps
    from movierec.options import TrainOptions
    from movierec.training import train_and_save

    options = TrainOptions(model, mode=mode, config=config, dataset=dataset, split=split,
                           test_fraction=test_fraction, seed=seed, device=device, patience=patience,
                           valid_fraction=valid_fraction, name=name)
    steps = Steps(quiet=json_output, unlined=("Epoch ", "Validating "))
    # Ctrl-C or an error ends the display first, so the one-line message is all that is left on screen.
    with steps:
        outcome = train_and_save(options, TrainingLines(steps, model, quiet=json_output))
    if json_output:
        print_json(outcome.to_json())
        return
    _print_summary(outcome)


train_app = model_group(
    _COMMON, _COMMON_DEFAULTS, _run,
    help="Train a model on a fetched dataset and save it. `movierec train MODEL --help` lists its options.",
)


def scaled_line(m: Any, plan: Any) -> str:
    """"Defaults for 22,500,085 training ratings: --epochs 4 (not 35). Pass --epochs to change." """
    from movierec.models.base import flag_name

    defaults = type(m.config)()
    chosen = ", ".join(f"{flag_name(k)} {_show(v)} (not {_show(getattr(defaults, k))})" for k, v in plan.scaled.items())
    flags = ", ".join(flag_name(k) for k in plan.scaled)
    return f"Defaults for {len(plan.train):,} training ratings: {chosen}. Pass {flags} to change."


def _fmt(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _epoch_line(r: Any) -> list[list[str]]:
    """One epoch of the training curve, in groups that a narrow terminal shows on lines of their own:
    ``epoch   3/20  train: loss 0.41  rmse 0.89  |  valid: rmse 0.93  (0.05s) *`` on one line otherwise."""
    mark = " *" if r.improved and r.valid else ""
    train = [f"{k} {v:.4f}" for k, v in r.train.items()]
    groups = [[f"epoch {r.epoch:>3}/{r.epochs}", f"train: {train[0]}" if train else "train:", *train[1:]]]
    if r.valid:
        valid = [f"{k} {v:.4f}" for k, v in r.valid.items()]
        groups.append([f"|  valid: {valid[0]}", *valid[1:]])
    groups.append([f"({r.seconds:.2f}s){mark}"])
    return groups


def _verdict(metrics: dict[str, float], baseline: dict[str, float], monitor: str) -> str:
    from movierec.metrics import higher_is_better

    if monitor not in metrics or monitor not in baseline:
        return ""
    higher = higher_is_better(monitor)
    beats = metrics[monitor] > baseline[monitor] if higher else metrics[monitor] < baseline[monitor]
    return f"[green]beaten on {monitor}[/]" if beats else f"[red]not beaten on {monitor}[/]"


def _print_summary(outcome: Any) -> None:
    from rich.table import Table

    from movierec.cli.console import console, pack, plain, table_room

    meta, result = outcome.meta, outcome.result
    # The "most popular" lists beside a model whose own baseline is not them (a rank model's baseline is).
    popular = meta.popularity if meta.popularity and meta.baseline.get("name") != "popularity" else {}
    keys = ["model", "dataset", "epochs", "fit time", "train", "validation", "test", "checkpoint"]
    if meta.baseline:
        keys.append(f"test baseline ({meta.baseline['name']})")
    if popular:
        keys.append("test baseline (popularity)")
    # Metrics go on as many lines as the terminal needs, never with a name cut from its number.
    room = max(20, table_room(2) - max(map(len, keys)))

    def fmt(metrics: dict[str, float], *more: str) -> str:
        return pack([f"{k} {v:.4f}" for k, v in metrics.items()] + [m for m in more if m], room)

    table = Table(title="Training summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # a long path folds rather than losing its end
    table.add_row("model", f"{meta.model} ({meta.mode})" if meta.mode else meta.model)
    table.add_row("dataset", f"{meta.dataset} (split {meta.split})")
    stop = f", stopped early; kept epoch {result.kept_epoch}" if result.stopped_early else ""
    table.add_row("epochs", f"{meta.epochs}{stop}")
    table.add_row("fit time", f"{meta.fit_seconds:.2f} s on {meta.device}")
    table.add_row("train", fmt(meta.train_metrics))
    if meta.valid_metrics:
        best = f"(epoch {result.kept_epoch}, {meta.valid_fraction:.0%} of the training ratings)"
        table.add_row("validation", fmt(meta.valid_metrics, best))
    if not meta.has_test_split:
        table.add_row("test", "none: trained on every rating (--split none)")
    else:
        table.add_row("test", fmt(meta.metrics))
    if meta.baseline:
        base = {k: v for k, v in meta.baseline.items() if k != "name"}
        verdict = _verdict(meta.metrics, base, result.monitor)
        table.add_row(f"test baseline ({meta.baseline['name']})", fmt(base, verdict))
    if popular:
        verdicts = (_verdict(meta.metrics, popular, k) for k in popular)
        table.add_row("test baseline (popularity)", fmt(popular, *verdicts))
    table.add_row("checkpoint", plain(f"{meta.name}  ({outcome.path})"))  # a path may hold [brackets]
    console.print(table)
