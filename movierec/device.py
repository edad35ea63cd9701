"""Device resolution and seeding: decided once, passed everywhere."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from movierec.errors import MovierecError

if TYPE_CHECKING:
    import torch

ENV_DEVICE = "MOVIEREC_DEVICE"
CHOICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str | None = "auto") -> torch.device:
    """Explicit request, then ``MOVIEREC_DEVICE``, then CUDA when present, then CPU."""
    import torch

    name = (requested or "auto").strip().lower()
    # Name what the user actually wrote, flag or environment variable, in any complaint.
    source = f"--device {requested}"
    if name == "auto":
        env = os.environ.get(ENV_DEVICE, "")
        name = env.strip().lower() or "auto"
        source = f"{ENV_DEVICE}={env.strip()}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MovierecError(
                f"{source} asks for a GPU, but no CUDA GPU is available here; use --device cpu or auto."
            )
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise MovierecError(f"Unknown device in {source}: choose one of auto, cpu, cuda, cuda:N.") from None
        if dev.type != "cuda":
            raise MovierecError(f"Unknown device in {source}: choose one of auto, cpu, cuda, cuda:N.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MovierecError(
                f"{source} names a GPU that does not exist: this machine has {torch.cuda.device_count()} "
                "CUDA device(s)."
            )
        return dev
    raise MovierecError(f"Unknown device in {source}: choose one of auto, cpu, cuda.")


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
