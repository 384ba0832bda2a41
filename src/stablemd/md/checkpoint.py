"""MD checkpoints: the state, generator states and observer states in one plain dictionary.

Files are written atomically (``.partial`` then rename) and read with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from stablemd.io import load_tagged_torch_file
from stablemd.md.state import MDState
from stablemd.training.checkpoint import save_checkpoint

FORMAT = "stablemd-md-checkpoint/1"


def state_to_dict(state: MDState) -> dict:
    """The fields of ``state`` as a plain dictionary (tensors, numbers, dict of tensors)."""
    return {f.name: getattr(state, f.name) for f in fields(state)}


def state_from_dict(values: dict) -> MDState:
    return MDState(**values)


def save_md_checkpoint(path: Path, state: MDState, **extra) -> None:
    """Write ``state`` and any plain ``extra`` entries to ``path`` atomically."""
    save_checkpoint({"format": FORMAT, "state": state_to_dict(state), **extra}, Path(path))


def load_md_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path`` with ``state`` as an :class:`MDState`; ``None`` if absent."""
    path = Path(path)
    if not path.is_file():
        return None
    payload = load_tagged_torch_file(path, FORMAT, "stablemd MD checkpoint")
    payload["state"] = state_from_dict(payload["state"])
    return payload
