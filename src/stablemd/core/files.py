"""Files that can be trusted: atomic writes, checked loading, and the "same run?" check.

Every file the toolkit writes goes through :func:`atomic_write` (a ``.partial`` sibling renamed
into place), so a kill never leaves a half-written file that looks complete. Every output a
command is given is checked first by :func:`check_output_file` or :func:`check_output_directory`:
never one of the inputs, never an existing file unless asked to overwrite, with the extension
of its format, and in a place that can be written (missing directories are created). Every resumable
loop (data generation, training, MD, StABlE) stores its options and refuses to continue under
others through :func:`check_same_options`.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Collection, Iterable, Iterator, Mapping
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

    A block that raises leaves ``path`` as it was and removes the partial file. A missing
    parent directory is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: equal once resolved (symbolic links, ``..``), or one
    file under two names (a hard link: same device and inode)."""
    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _check_can_create(directory: Path, where: str) -> None:
    """Raise :class:`InputError` unless ``directory`` exists or can be created and a file can be
    written in it: its nearest existing ancestor must be a writable directory. Nothing is created
    (the writers create missing directories when they write), so a command refused later for
    another reason leaves no trace."""
    for existing in (directory, *directory.parents):
        if existing.exists():
            break
    if not existing.is_dir():
        raise InputError(f"{where}: {existing} is a file, not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".stablemd-write-test-"):
            pass
    except OSError as exc:
        raise InputError(f"{where}: cannot write in {existing} ({exc.strerror})") from None


def check_output_file(
    path: str | Path,
    option: str = "--out",
    *,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    suffixes: Collection[str] = (),
) -> Path:
    """Check an output file before any work, the rule of every command that writes one.

    Refused, with :class:`InputError` naming ``option`` and the path: an extension not in
    ``suffixes`` (lower case, with the dot; a file's extension must say its format); one of the
    ``inputs`` (the same path, a symbolic link to it, or a hard link); a directory; an existing
    file unless ``overwrite``; a place where it cannot be written. A missing parent directory
    is fine: the writers create it."""
    path = Path(path)
    where = f"{option} {path}"
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(f"{where}: the file name must end in {' or '.join(sorted(suffixes))}")
    for source in inputs:
        if source is not None and same_file(path, source):
            raise InputError(f"{where}: is also an input ({source}); choose another output")
    if path.is_dir():
        raise InputError(f"{where}: is a directory, not a file")
    if path.exists() and not overwrite:
        raise InputError(f"{where}: already exists; choose another output or pass --overwrite")
    _check_can_create(path.parent, where)
    return path


def check_output_directory(
    path: str | Path, option: str = "--out", inputs: Iterable[str | Path | None] = ()
) -> Path:
    """Check an output directory before any work: not an existing file, not one of the
    ``inputs``, and writable or creatable; raises :class:`InputError` naming ``option`` and
    the path."""
    path = Path(path)
    where = f"{option} {path}"
    for source in inputs:
        if source is not None and same_file(path, source):
            raise InputError(f"{where}: is also an input ({source}); choose another output")
    if path.exists() and not path.is_dir():
        raise InputError(f"{where}: is a file, not a directory")
    _check_can_create(path, where)
    return path


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
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a {description}")
    if not path.is_file():
        raise InputError(f"{path}: no such {description}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for corrupt or foreign files
        raise InputError(f"{path}: not a {description}") from None
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


def record_run_options(
    options: dict,
    path: str | Path,
    may_change: Collection[str] = (),
    defaults: Mapping | None = None,
) -> None:
    """Write ``options`` to ``path``, refusing to continue a run recorded there with others;
    options missing from an older record count as their ``defaults``."""
    path = Path(path)
    if path.is_file():
        check_same_options(
            path, read_json_record(path, "run record"), options, may_change, defaults
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(options, path)


def read_json_record(path: str | Path, description: str, keys: Collection[str] = ()) -> dict:
    """The JSON object that a run wrote at ``path``, with ``keys``; anything else (a foreign or
    damaged file) raises :class:`InputError` naming it as not a stablemd ``description``."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if not isinstance(record, dict) or any(key not in record for key in keys):
        raise InputError(
            f"{path}: not a stablemd {description}; use another output or delete the file"
        )
    return record
