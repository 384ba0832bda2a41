"""Systems a user adds by name, stored beside the built-ins in the user's configuration.

Each is one extended XYZ file, ``$XDG_CONFIG_HOME/stablemd/systems/<name>.extxyz`` (default
``~/.config``), holding the structure (cell and periodicity included) and, in its comment line,
the default oracle, the MD time step and where it came from (the SMILES, the file). The bonds
are derived again whenever it is loaded (:meth:`System.from_frames`), so the file is all there
is to it and a person can read or edit it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from stablemd.core.errors import InputError
from stablemd.core.files import atomic_write
from stablemd.systems.molecules import embed, relax, smiles_graph
from stablemd.systems.system import DERIVED_TIMESTEP_FS, System

#: What a stored system's name may look like (it becomes a file name and a command argument).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
SUFFIX = ".extxyz"


def store_directory() -> Path:
    """``$XDG_CONFIG_HOME/stablemd/systems`` (default ``~/.config/stablemd/systems``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "stablemd" / "systems"


def stored_names() -> list[str]:
    """Names of the stored systems, sorted."""
    directory = store_directory()
    if not directory.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in directory.glob(f"*{SUFFIX}"))


def load_stored(name: str) -> System:
    """The stored system ``name``, its bonds derived from its structure."""
    path = store_directory() / f"{name}{SUFFIX}"
    try:
        atoms = ase.io.read(path, format="extxyz")
    except Exception as exc:  # a damaged or hand-edited file: say which
        raise InputError(f"{path}: not a readable stored system ({exc})") from None
    oracle = str(atoms.info.get("default_oracle", "xtb"))
    timestep = float(atoms.info.get("timestep_fs", DERIVED_TIMESTEP_FS))
    return System.from_frames(name, [atoms], str(path), oracle, timestep)


def check_new_name(name: str, built_in: list[str], overwrite: bool) -> Path:
    """The file of a new stored system ``name``; refuses a malformed name, a built-in's name
    and (without ``overwrite``) a stored one."""
    if not NAME_PATTERN.fullmatch(name):
        raise InputError(
            f"system name {name!r}: use letters, digits and _ . + - (starting with a letter or "
            "digit)"
        )
    if name in built_in:
        raise InputError(f"system name {name!r}: a built-in system has it; choose another")
    path = store_directory() / f"{name}{SUFFIX}"
    if path.exists() and not overwrite:
        raise InputError(f"system {name!r} is already stored ({path}); --overwrite replaces it")
    return path


def structure_from_smiles(smiles: str, oracle: str = "xtb", seed: int = 0) -> Atoms:
    """The molecule of ``smiles``: RDKit's lowest-MMFF conformer relaxed with ``oracle``;
    refused when the relaxed structure's bonds are not the SMILES graph (a molecule that fell
    apart or rearranged)."""
    atoms = relax(embed(smiles, seed), oracle)
    numbers, expected = smiles_graph(smiles)
    derived = System.from_frames("smiles", [atoms], f"--smiles {smiles!r}").bonds
    if not np.array_equal(derived, expected):
        raise InputError(
            f"--smiles {smiles!r}: relaxed with {oracle}, the molecule has other bonds "
            f"({len(derived)}) than its SMILES graph ({len(expected)}); it does not hold "
            "together with this oracle"
        )
    atoms.info.update(smiles=smiles, seed=seed)
    return atoms


def store_system(
    name: str,
    atoms: Atoms,
    built_in: list[str],
    default_oracle: str = "xtb",
    timestep_fs: float = DERIVED_TIMESTEP_FS,
    overwrite: bool = False,
    source: str | None = None,
) -> System:
    """Store ``atoms`` as system ``name`` (refused, naming ``source``, if no topology can be
    derived from it) and return the system as it will load."""
    path = check_new_name(name, built_in, overwrite)
    atoms = atoms.copy()
    atoms.calc = None
    atoms.info.update(default_oracle=default_oracle, timestep_fs=float(timestep_fs))
    System.from_frames(name, [atoms], source or name)  # refuse before anything is written
    with atomic_write(path) as tmp:
        ase.io.write(tmp, atoms, format="extxyz")
    return load_stored(name)


def remove_stored(name: str) -> Path:
    """Delete the stored system ``name``; returns the file removed."""
    path = store_directory() / f"{name}{SUFFIX}"
    if name not in stored_names():  # a name like ../x would reach a file outside the store
        raise InputError(
            f"no stored system {name!r} (stored: {', '.join(stored_names()) or 'none'})"
        )
    path.unlink()
    return path
