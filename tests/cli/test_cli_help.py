"""Every --help is readable at 80 and 120 columns: no line wider than the terminal, no option or sentence cut."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from movierec.cli import app
from movierec.cli.core import first_sentence
from movierec.models import MODELS, model_classes

COMMANDS = [[], ["train"], *[["train", m] for m in MODELS], ["tune"], *[["tune", m] for m in MODELS], ["fetch"],
            ["import"], ["datasets"], ["models"], ["evaluate"], ["recommend"], ["similar"], ["clusters"], ["plot"],
            ["plot", "curves"], ["plot", "map"], ["plot", "tune"], ["serve"]]


def _help(width: int, path: list[str]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _command(path: list[str]):
    import typer

    command = typer.main.get_command(app)
    ctx = command.make_context("movierec", [], resilient_parsing=True)
    for name in path:
        command = command.get_command(ctx, name)
        ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
    return command


def _squeezed(text: str) -> str:
    """``text`` without whitespace: the same words however they are wrapped."""
    return re.sub(r"\s", "", text)


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "movierec")
def test_help_fits_the_terminal_and_says_everything(path, width):
    text = _help(width, path)
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert not too_long, "\n".join(too_long)
    assert "…" not in text, text  # a flag or a type shortened to fit
    squeezed = _squeezed(text)
    for param in _command(path).params:
        if getattr(param, "hidden", False):
            continue
        for flag in (*param.opts, *getattr(param, "secondary_opts", ())):
            if flag.startswith("--"):
                assert flag in text, f"{flag} is missing from `{' '.join(path)} --help`"
        help_text = getattr(param, "help", None) or ""
        assert _squeezed(help_text) in squeezed, f"the help of {param.name} is cut: {help_text}"
    if path[:1] not in (["train"], ["tune"]):  # the models are listed by their summaries (without importing them)
        for name, sub in getattr(_command(path), "commands", {}).items():
            sentence = first_sentence(sub.help or "")
            assert sentence.endswith(".") and _squeezed(sentence) in squeezed, f"{name}'s summary is cut"


@pytest.mark.parametrize("model", [m for m in MODELS if len(model_classes(m)) > 1])
def test_mode_help_describes_each_mode_in_whole_sentences(model):
    text = _help(80, ["train", model])
    mode_help = text[text.index("\n  --mode "):].split("\n  --")[1]
    for mode in model_classes(model):
        described = re.search(rf"\b{mode}: (.*?)(?:\n\s*\n|  \[default|$)", mode_help, re.S)
        assert described, mode_help
        sentence = " ".join(described.group(1).split())
        assert sentence.endswith("."), f"--mode {mode} is described by a cut sentence: {sentence!r}"


def test_defaults_that_differ_between_modes_are_named_per_mode():
    text = " ".join(_help(80, ["train", "als"]).split())
    assert "[default: 16 (explicit), 64 (implicit)]" in text
    assert "\\[" not in text  # no markup escape shown to the reader


def test_a_note_keeps_a_name_that_starts_it_as_written():
    from movierec.cli.core import sentence

    assert sentence("ml-100k has no tags") == "ml-100k has no tags."
    assert sentence("the model learns without them.") == "The model learns without them."
