"""Files that can be trusted: atomic writes, checked loading, and the "same run?" check.

Every file the toolkit writes goes through :func:`atomic_write` (a ``.partial`` sibling renamed
into place), so a kill never leaves a half-written file that looks complete. Every resumable
loop (data generation, training, MD, StABlE) stores its options and refuses to continue under
others through :func:`check_same_options`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from stablemd.core.errors import InputError


def partial_path(path: str | Path) -> Path:
    """The ``*.partial`` sibling a file is written to before it is renamed into place."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield the ``.partial`` path to write; rename it to ``path`` when the block succeeds.

    A block that raises leaves ``path`` as it was and removes the partial file.
    """
    path = Path(path)
    tmp = partial_path(path)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def write_json(data: dict, path: str | Path) -> None:
    """Write ``data`` as indented JSON atomically; a NaN or infinity is an error (JSON has none,
    and a quiet non-finite number in a results file is a bug)."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False))


def save_torch_file(payload: dict, path: str | Path) -> None:
    """``torch.save`` of a plain dictionary, atomically."""
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load_tagged_torch_file(path: str | Path, file_format: str, description: str) -> dict:
    """A dictionary saved with ``torch.save`` whose ``format`` entry is ``file_format``.

    Loads with ``weights_only=True``; a missing, corrupt or foreign file raises
    :class:`~stablemd.core.errors.InputError` naming the file and the ``description`` expected.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {description}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for corrupt or foreign files
        raise InputError(f"{path}: not a {description} (unreadable)") from None
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        found = payload.get("format") if isinstance(payload, dict) else None
        detail = f"its format is {found!r}" if found else "no stablemd format tag"
        raise InputError(f"{path}: not a {description} ({detail}, expected {file_format!r})")
    return payload


def load_checkpoint(path: str | Path, file_format: str, description: str) -> dict | None:
    """The checkpoint at ``path`` (see :func:`load_tagged_torch_file`), ``None`` if absent."""
    path = Path(path)
    return load_tagged_torch_file(path, file_format, description) if path.is_file() else None


def check_same_options(
    path: str | Path,
    previous: Mapping,
    options: Mapping,
    may_change: Collection[str] = (),
    defaults: Mapping | None = None,
) -> None:
    """Refuse to continue the run recorded at ``path`` with ``previous`` options under other
    ``options``, naming the first that differs.

    Keys in ``may_change`` (a budget, a run length that a continuation extends) may differ;
    keys missing from ``previous`` (options added since it was written) count as ``defaults``,
    and without a default as ``None``: a run that does not record what it needs is refused.
    """
    previous = {**(defaults or {}), **previous}
    for key, value in options.items():
        if key in may_change:
            continue
        if key not in previous and value is not None:
            raise InputError(
                f"{path}: this run does not record its {key} (an older stablemd wrote it), so "
                "it cannot be told apart from another run; use another output or delete the "
                "run directory"
            )
        if previous.get(key) != value:
            raise InputError(
                f"{path}: this run used {key}={previous.get(key)!r}, not {value!r}; "
                "use another output or delete the run directory"
            )


def record_run_options(options: dict, path: str | Path, may_change: Collection[str] = ()) -> None:
    """Write ``options`` to ``path``, refusing to continue a run recorded there with others."""
    path = Path(path)
    if path.is_file():
        check_same_options(path, json.loads(path.read_text()), options, may_change)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(options, path)
