"""Labelled frames in an ASE database (SQLite): writing, validated reading, summaries.

Each row holds positions (Å), numbers, cell, pbc, momenta, and through a single-point
calculator energy (eV), forces (eV/Å) and, for periodic frames, stress (eV/Å³). Its
key-value pairs carry the frame's metadata: ``system``, ``level_of_theory``, ``temperature_K``,
``timestep_fs``, ``trajectory``, ``step``, ``seed`` (whichever are known).
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path

import ase.db
import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.db.core import check as check_key_value_pairs
from ase.db.row import AtomsRow

from stablemd.core.errors import InputError
from stablemd.core.files import atomic_write, check_output_file


def connect(path: str | Path, append: bool = True):
    """An ASE SQLite database at ``path`` whatever its extension (created when missing).

    Without ASE's ``<path>.lock`` file: a process killed while writing leaves that file behind,
    and every later write waits for it forever. SQLite's own locking and transactions, which
    a kill cannot leave stale, keep the file consistent.
    """
    return ase.db.connect(str(path), type="db", append=append, use_lock_file=False)


def open_database(path: str | Path):
    """An existing ASE database, checked read-only first so foreign files are never modified."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an ASE database file")
    if not path.is_file():
        raise InputError(f"{path}: no such database file")
    try:
        try:
            tables = _tables(path, "ro")
        except sqlite3.Error as exc:
            hot_journal = path.with_name(path.name + "-journal").is_file()
            if not hot_journal or exc.sqlite_errorcode != sqlite3.SQLITE_READONLY_ROLLBACK:
                raise
            # A transaction cut short by a kill left its rollback journal, which only a writer
            # may roll back: SQLite does so on this read-write open (as ASE's would), restoring
            # the last commit; a journal is SQLite's own, so this is an SQLite file.
            tables = _tables(path, "rw")
    except sqlite3.Error:
        raise InputError(f"{path}: not an ASE database (not an SQLite file)") from None
    if ("systems",) not in tables:
        raise InputError(f"{path}: not an ASE database (no 'systems' table)")
    return connect(path)


def _tables(path: Path, mode: str) -> list[tuple]:
    with closing(sqlite3.connect(path.resolve().as_uri() + f"?mode={mode}", uri=True)) as con:
        return con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()


def key_value_pairs(info: dict) -> dict:
    """The entries of ``info`` that an ASE database accepts as key-value pairs."""
    out = {}
    for key, value in info.items():
        value = value.item() if isinstance(value, np.generic) else value
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                check_key_value_pairs({key: value})
        except ValueError:
            continue
        out[key] = value
    return out


def check_new_output(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing output file unless asked to, or to write where no file
    can be written (see :func:`~stablemd.core.files.check_output_file`)."""
    check_output_file(path, "output", overwrite=overwrite)


def write_frames(
    path: str | Path, frames: Iterable[Atoms], metadata: dict | None = None, overwrite: bool = False
) -> int:
    """Write ``frames`` (with their labels, if any) to a new database at ``path`` atomically;
    returns their number.

    The storable entries of each ``atoms.info`` become the row's key-value pairs."""
    path = Path(path)
    check_new_output(path, overwrite)
    count = 0
    with atomic_write(path) as tmp, connect(tmp, append=False) as db:
        for atoms in frames:
            db.write(atoms, key_value_pairs=key_value_pairs(atoms.info))
            count += 1
        if metadata:
            db.metadata = metadata
    return count


def _check_row(path: Path, row: AtomsRow, labelled: bool) -> None:
    where = f"{path}: row id {row.id}"
    for name in ("energy", "forces") if labelled else ():
        if row.get(name) is None:
            raise InputError(f"{where} has no {name}")
    if row.get("forces") is not None and np.shape(row.forces) != (row.natoms, 3):
        raise InputError(
            f"{where}: forces have shape {np.shape(row.forces)} but the frame has "
            f"{row.natoms} atoms"
        )
    for name in ("energy", "forces", "positions", "stress"):
        value = row.get(name)
        if value is not None and not np.all(np.isfinite(value)):
            raise InputError(f"{where} has non-finite {name}")


def _rows(path: str | Path, indices: Sequence[int] | None, labelled: bool = True) -> list[AtomsRow]:
    path = Path(path)
    rows = list(open_database(path).select())
    if not rows:
        raise InputError(f"{path}: the database has no frames")
    if indices is not None:
        bad = [i for i in indices if not -len(rows) <= i < len(rows)]
        if bad:
            raise InputError(
                f"{path}: frame index {bad[0]} out of range (the database has {len(rows)} frames)"
            )
        rows = [rows[i] for i in indices]
    for row in rows:
        _check_row(path, row, labelled)
    return rows


def read_frames(
    path: str | Path, indices: Sequence[int] | None = None, labelled: bool = True
) -> list[Atoms]:
    """Frames of the database at ``path`` (all, or the ``indices``-th in insertion order).

    Each carries a single-point calculator with energy (eV), forces (eV/Å) and stress when
    stored, and has its key-value pairs in ``atoms.info``. Every frame must have an energy and
    forces unless ``labelled`` is false.
    """
    frames = []
    for row in _rows(path, indices, labelled):
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        frames.append(atoms)
    return frames


def count_frames(path: str | Path) -> int:
    """Number of frames in the database at ``path``."""
    return open_database(path).count()


def summarize(path: str | Path) -> dict:
    """Frame count, systems, levels of theory, temperatures (K), trajectories and elements."""
    rows = _rows(path, None)

    def values(key):
        return sorted({row.key_value_pairs[key] for row in rows if key in row.key_value_pairs})

    return {
        "frames": len(rows),
        "systems": values("system"),
        "levels_of_theory": values("level_of_theory"),
        "temperatures_K": values("temperature_K"),
        "trajectories": len(values("trajectory")),
        "elements": [chemical_symbols[z] for z in sorted({z for r in rows for z in r.numbers})],
        "atoms_per_frame": sorted({row.natoms for row in rows}),
        "periodic": sorted({bool(row.pbc.any()) for row in rows}),
    }
