"""Commands generated from the models: one sub-command per model (`movierec train MODEL`, `movierec cv MODEL`),
its options generated from the fields of the model's config classes (their help, flags and choices live in the
field metadata, next to the setting itself), plus the options every training run shares.

The model modules (and torch) are imported only when a model's command is asked for, so `movierec --help` and
`movierec train --help` stay fast.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from movierec.cli.core import first_sentence
from movierec.device import DEVICE_HELP
from movierec.errors import MovierecError
from movierec.models import MODELS
from movierec.options import TrainOptions

if TYPE_CHECKING:
    # What Typer's group methods are declared with (typer.Context is a subclass of this Context).
    from typer._click import Command, Context

    from movierec.models.base import Recommender

_LISTING = "movierec.train.listing"
CHOICES_SHOWN = 48
"""The longest list of an option's values shown as its value (``<a|b|c>``); a longer one is named in its help."""


class _ModelCommands(TyperGroup):
    """One sub-command per model; :func:`model_group` says what each takes and runs."""

    @staticmethod
    def build(model: str) -> Command:
        """The command of ``model``; each group made by :func:`model_group` says how it is built."""
        raise NotImplementedError

    def list_commands(self, ctx: Context) -> list[str]:
        return list(MODELS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in MODELS:
            raise MovierecError(f"Unknown model {cmd_name!r}; choose one of: {', '.join(MODELS)}.")
        if ctx.meta.get(_LISTING):
            # Typer's rich help asks for every command just to show its summary; building the real one
            # would import the model module (and torch).
            return TyperCommand(cmd_name, help=MODELS[cmd_name].summary)
        return self.build(cmd_name)

    def format_help(self, ctx: Context, formatter: Any) -> None:
        ctx.meta[_LISTING] = True
        try:
            super().format_help(ctx, formatter)
        finally:
            ctx.meta.pop(_LISTING, None)

    def format_commands(self, ctx: Context, formatter: Any) -> None:
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


RUN_OPTIONS: dict[str, tuple[Any, Any]] = {
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
"""The options every command that trains shares (`train`, `cv`): name -> (type, typer.Option)."""
RUN_DEFAULTS: dict[str, Any] = {
    **{f.name: f.default for f in dataclasses.fields(TrainOptions) if f.name in RUN_OPTIONS}, "json_output": False,
}
"""Their defaults: :class:`~movierec.options.TrainOptions`' own, written there once."""



def show_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _config_parameters(classes: dict[str, type[Recommender]]) -> tuple[list[inspect.Parameter], dict[str, list[str]]]:
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
            named = (show_value(v) if tp is not bool else flag[2:] if v else f"no-{flag[2:]}"
                     for v in defaults.values())
            help_text += "  [default: " + ", ".join(f"{v} ({m})" for v, m in zip(named, defaults)) + "]"
        default = first.default
        choices = list(dict.fromkeys(c for _, f, _ in per_mode for c in f.metadata.get("choices") or ()))
        if choices and len("|".join(choices)) > CHOICES_SHOWN:
            # Too many to list as the option's value: named in its help (which wraps), checked by the config.
            opt = typer.Option(*decls, metavar="TEXT", help=f"{help_text} One of: {' | '.join(choices)}.",
                               show_default=shown, rich_help_panel="Model options")
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=Annotated[tp, opt]))
            continue
        if choices:
            # Typer shows an Enum as a list of choices and rejects anything else.
            # An Enum made at run time, one per option: mypy reads only Enums written out.
            choice = enum.Enum(f"Option_{name}", {c: c for c in choices}, type=str)  # type: ignore[misc]
            tp, default = choice, choice(default)
        opt = typer.Option(*decls, help=help_text, show_default=shown, rich_help_panel="Model options")
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[tp, opt])
        )
    return params, {name: [m for m, _, _ in per_mode] for name, per_mode in fields.items()}


def _mode_parameter(classes: dict[str, type[Recommender]]) -> inspect.Parameter:
    # One paragraph per mode: the help formatter keeps paragraphs apart.
    described = "\n\n".join(f"{m}: {first_sentence(c.__doc__ or '')}" for m, c in classes.items())
    tp = enum.Enum("Mode", {m: m for m in classes}, type=str)  # type: ignore[misc]  # made at run time
    opt = typer.Option("--mode", help=f"Which algorithm.\n\n{described}", rich_help_panel="Model options")
    return inspect.Parameter("mode", inspect.Parameter.KEYWORD_ONLY, default=tp(next(iter(classes))),
                             annotation=Annotated[tp, opt])


class _PlainHelp(TyperCommand):
    """A model's help in two groups: the options every model shares, then the model's own."""

    def format_options(self, ctx: Context, formatter: Any) -> None:
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
) -> Command:
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
    # Read by inspect.signature, through which Typer finds the options.
    signature = inspect.Signature([ctx_param, *common_params, *mode_params, *config_params])
    command.__signature__ = signature  # type: ignore[attr-defined]
    command.__doc__ = MODELS[model].summary
    single = typer.Typer(add_completion=False, rich_markup_mode=None)  # as the app's
    single.command(model, cls=_PlainHelp)(command)
    return typer.main.get_command(single)
