"""Device resolution and seeding: decided once, passed everywhere."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from movierec.errors import MovierecError

if TYPE_CHECKING:
    import torch

ENV_DEVICE = "MOVIEREC_DEVICE"
DEFAULT_DEVICE = "auto"
"""Every command's and function's --device default: ``MOVIEREC_DEVICE``, then CUDA when present, then CPU."""
DEVICE_HELP = f"auto (${ENV_DEVICE}, else CUDA when present, else the CPU), cpu, cuda or cuda:N."
"""The --device option's help, the same on every command."""


def device_request(requested: str | None = DEFAULT_DEVICE) -> tuple[str, str]:
    """What is asked for, without importing torch: ``(name, source)`` -- ``name`` "auto", "cpu", "cuda" or
    "cuda:N" after ``MOVIEREC_DEVICE`` stands in for an explicit "auto", ``source`` what the user wrote (flag or
    environment variable), for any complaint. An unknown name is a :class:`MovierecError`."""
    name = (requested or "auto").strip().lower()
    source = f"--device {requested}"
    if name == "auto":
        env = os.environ.get(ENV_DEVICE, "")
        name = env.strip().lower() or "auto"
        source = f"{ENV_DEVICE}={env.strip()}"
    cuda, _, index = name.partition(":")
    if name in ("auto", "cpu", "cuda") or (cuda == "cuda" and index.isdigit()):
        return name, source
    raise MovierecError(f"Unknown device in {source}: choose one of auto, cpu, cuda, cuda:N.")


def needs_gpu(requested: str | None = DEFAULT_DEVICE) -> bool:
    """Whether ``requested`` (checked, see :func:`device_request`) asks for a GPU by name; no torch imported."""
    return device_request(requested)[0].startswith("cuda")


def resolve_device(requested: str | None = DEFAULT_DEVICE) -> torch.device:
    """Explicit request, then ``MOVIEREC_DEVICE``, then CUDA when present, then CPU."""
    import torch

    name, source = device_request(requested)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise MovierecError(f"{source} asks for a GPU, but no CUDA GPU is available here; use --device cpu or auto.")
    dev = torch.device(name)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise MovierecError(
            f"{source} names a GPU that does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)."
        )
    return dev


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on ``device`` (CUDA sampling needs a CUDA generator), seeded."""
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def seed_everything(seed: int) -> None:
    """Seed torch's global RNG, which parameter initialisation draws from."""
    import torch

    torch.manual_seed(int(seed))
