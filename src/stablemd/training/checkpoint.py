"""Atomic save and load of training state, so an interrupted run continues where it stopped."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch
from pydantic import BaseModel

from stablemd.io import check_same_options


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


def check_same_run(path: Path, saved: dict, config: BaseModel, budget: Collection[str]) -> None:
    """Refuse to resume the run checkpointed at ``path`` (``saved``: its options) with other
    options than ``config``'s. Options in ``budget`` may change; options added since the
    checkpoint was written count as their defaults."""
    fields = type(config).model_fields
    defaults = {key: field.get_default(call_default_factory=True) for key, field in fields.items()}
    check_same_options(path, {**defaults, **saved}, config.model_dump(), budget)
