"""Small file helpers: atomic JSON writing, checked loading of tagged torch files."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from stablemd.errors import InputError


def write_json(data: dict, path: Path) -> None:
    """Write ``data`` as indented JSON via a ``.partial`` sibling, so it is never half-written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def load_tagged_torch_file(path: Path, file_format: str, description: str) -> dict:
    """A dictionary saved with ``torch.save`` whose ``format`` entry is ``file_format``.

    Loads with ``weights_only=True``; a missing, corrupt or foreign file raises
    :class:`~stablemd.errors.InputError` naming the file and the ``description`` expected.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {description}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise InputError(f"{path}: not a readable {description} ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        raise InputError(f"{path}: not a {description} (missing format {file_format!r})")
    return payload
