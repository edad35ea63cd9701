"""Options several commands share, written once: the model, JSON output, the device, and option names that
changed (the old spelling still works for one release, with a note saying what to write instead)."""

from __future__ import annotations

from typing import Annotated, TypeVar

import typer

from movierec.device import DEVICE_HELP

T = TypeVar("T")

ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Saved model to use (name or path) (default: the default model).")
]
"""``--model``: which saved model answers."""
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
DeviceOpt = Annotated[str, typer.Option(help=DEVICE_HELP)]
"""``--device``: the same help and default (:data:`movierec.device.DEFAULT_DEVICE`) on every command."""

OldK = Annotated[int | None, typer.Option("--k", min=1, hidden=True)]
"""``--k`` where it meant something other than the RBM's Gibbs steps (clusters, list length): still read, hidden."""


def renamed(value: T, old: T | None, old_flag: str, new_flag: str) -> T:
    """The option's value: ``old`` when the user wrote the old spelling ``old_flag`` (with a note on stderr that
    it is now ``new_flag``), else ``value``."""
    if old is None:
        return value
    from movierec.cli.console import print_warning

    print_warning(f"{old_flag} is now {new_flag} here; {old_flag} will stop working in the next release.")
    return old
