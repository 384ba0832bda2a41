"""Atomic save and load of training state, so an interrupted run continues where it stopped."""

from __future__ import annotations

from pathlib import Path

import torch


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` through a temporary file, so a kill never corrupts it."""
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict | None:
    """The saved state, or ``None`` when there is none."""
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
