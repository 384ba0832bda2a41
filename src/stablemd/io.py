"""Small file helpers: atomic JSON writing, checked loading of tagged torch files, and the check
that a resumed run keeps its options."""

from __future__ import annotations

import json
from collections.abc import Collection
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


def check_same_options(
    path: Path, previous: dict, options: dict, may_change: Collection[str] = ()
) -> None:
    """Refuse to continue the run recorded at ``path`` with ``previous`` options under other
    ``options``, naming the first that differs; keys in ``may_change`` may differ."""
    for key, value in options.items():
        if key not in may_change and previous.get(key) != value:
            raise InputError(
                f"{path}: this run used {key}={previous.get(key)!r}, not {value!r}; "
                "use another output or delete the run directory"
            )


def record_run_options(options: dict, path: Path, may_change: frozenset = frozenset()) -> None:
    """Write ``options`` to ``path``, refusing to continue a run recorded there with others.

    Keys in ``may_change`` (e.g. a run length that a continuation extends) may differ.
    """
    path = Path(path)
    if path.is_file():
        check_same_options(path, json.loads(path.read_text()), options, may_change)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(options, path)
