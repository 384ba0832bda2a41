"""Imports into and exports from the frame database, with units converted at the boundary.

Imports: sGDML/MD17-style ``.npz`` (R [n,N,3], E [n] or [n,1], F [n,N,3], z [N]; the revised
MD17 names coords/energies/forces/nuclear_charges work too), extended XYZ (energy and forces
per frame, eV and eV/Å), ASE trajectories (.traj) and ASE databases. An external MD trajectory
imported with its time between frames keeps its velocities for training on rollouts
(:mod:`stablemd.data.trajectories`). Export: extended XYZ. Every import is validated
(missing keys, shapes, unknown elements, non-finite values, unreadable files) and written
atomically.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Bohr

from stablemd.core.errors import InputError
from stablemd.core.files import atomic_write, check_output_file
from stablemd.core.units import ENERGY_UNITS_IN_EV
from stablemd.data.database import read_frames, write_frames
from stablemd.data.trajectories import mark_trajectory

#: Energy unit assumed for npz files that do not say (MD17's unit).
DEFAULT_NPZ_ENERGY_UNIT = "kcal/mol"
_NPZ_ALIASES = {"coords": "R", "energies": "E", "forces": "F", "nuclear_charges": "z"}
_ENERGY_UNIT_NAMES = {
    "ev": "eV",
    "kcal/mol": "kcal/mol",
    "kj/mol": "kJ/mol",
    "ha": "hartree",
    "hartree": "hartree",
    "au": "hartree",
}
_LENGTH_UNITS_IN_A = {"ang": 1.0, "angstrom": 1.0, "a": 1.0, "bohr": Bohr, "au": Bohr, "nm": 10.0}


def _energy_unit(name: str, where: str) -> str:
    unit = _ENERGY_UNIT_NAMES.get(name.strip().lower())
    if unit is None:
        raise InputError(
            f"{where}: unknown energy unit {name!r}; use one of {list(ENERGY_UNITS_IN_EV)}"
        )
    return unit


def _check_labels(path: Path, index: int, atoms: Atoms) -> Atoms:
    """``atoms`` if it carries finite energy and forces [N, 3] and finite positions."""
    results = atoms.calc.results if atoms.calc is not None else {}
    for name in ("energy", "forces"):
        if name not in results:
            raise InputError(f"{path}: frame {index} has no {name}")
    if np.shape(results["forces"]) != (len(atoms), 3):
        raise InputError(
            f"{path}: frame {index} forces have shape {np.shape(results['forces'])} "
            f"but the frame has {len(atoms)} atoms"
        )
    checked = {"positions": atoms.positions, **results}
    for name in ("positions", "energy", "forces", "stress"):
        if name in checked and not np.all(np.isfinite(checked[name])):
            raise InputError(f"{path}: frame {index} has non-finite {name}")
    return atoms


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = {_NPZ_ALIASES.get(key, key): key for key in npz.files}
            data = {n: npz[k] for n, k in names.items() if n in {"R", "E", "F", "z", "lattice"}}
            for name in ("e_unit", "r_unit", "theory"):  # text fields, scalar strings
                if name in names and npz[names[name]].ndim == 0:
                    data[name] = str(npz[names[name]])
            return data
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(f"{path}: not a readable npz file ({_npz_problem(path, exc)})") from None


def _npz_problem(path: Path, exc: Exception) -> str:
    """Why numpy could not read ``path``, in a user's words rather than numpy's."""
    if not zipfile.is_zipfile(path):
        return "not a zip archive of arrays"
    if isinstance(exc, ValueError) and "pickle" in str(exc):
        return "it holds Python objects, not plain arrays"
    return "truncated or corrupt"


def _npz_units(path: Path, data: dict, energy_unit: str | None) -> tuple[float, float]:
    """Energy unit and length unit of the file, in eV and Å."""
    option = None if energy_unit is None else _energy_unit(energy_unit, "--energy-unit")
    if "e_unit" in data:
        unit = _energy_unit(data["e_unit"], f"{path}: e_unit")
        if option is not None and option != unit:
            raise InputError(f"{path}: the file says e_unit {unit!r} but {option!r} was given")
    else:
        unit = option or DEFAULT_NPZ_ENERGY_UNIT
    r_unit = data.get("r_unit", "Ang")
    if r_unit.strip().lower() not in _LENGTH_UNITS_IN_A:
        raise InputError(f"{path}: unknown r_unit {r_unit!r}; use Ang, bohr or nm")
    return ENERGY_UNITS_IN_EV[unit], _LENGTH_UNITS_IN_A[r_unit.strip().lower()]


def read_npz(path: str | Path, energy_unit: str | None = None) -> list[Atoms]:
    """Labelled frames (eV, Å, eV/Å) from an sGDML/MD17-style npz file.

    The energy unit comes from the file's ``e_unit`` when present, else ``energy_unit``, else
    kcal/mol; forces are in that unit per length unit (``r_unit``, default Å).
    """
    path = Path(path)
    data = _read_npz(path)
    missing = [key for key in ("R", "E", "F", "z") if key not in data]
    if missing:
        raise InputError(f"{path}: missing key {missing[0]!r} (need R, E, F, z)")
    R, E, F, z = data["R"], data["E"], data["F"], data["z"]
    for name in ("R", "E", "F", "z"):
        if not np.issubdtype(data[name].dtype, np.number) or data[name].ndim == 0:
            raise InputError(f"{path}: {name} must be a numeric array, got {data[name].dtype}")
    if R.ndim != 3 or R.shape[2] != 3:
        raise InputError(f"{path}: R has shape {R.shape}, expected (frames, atoms, 3)")
    if z.shape != (R.shape[1],):
        raise InputError(f"{path}: z has shape {z.shape} but R has {R.shape}")
    if F.shape != R.shape:
        raise InputError(f"{path}: F has shape {F.shape} but R has {R.shape}")
    if E.reshape(len(E), -1).shape != (len(R), 1):
        raise InputError(f"{path}: E has shape {E.shape} but R has {R.shape}")
    if np.any(z != np.round(z)):
        raise InputError(f"{path}: z must hold integer atomic numbers, got {z[:5]}")
    bad = np.flatnonzero((z < 1) | (z > 118))
    if bad.size:
        raise InputError(f"{path}: z[{bad[0]}] = {z[bad[0]]} is not an element")
    z = z.astype(int)
    energy, length = _npz_units(path, data, energy_unit)
    cell = data.get("lattice")
    info = {"source": path.name}
    if "theory" in data:
        info["level_of_theory"] = data["theory"]
    frames = []
    for i in range(len(R)):
        atoms = Atoms(numbers=z, positions=R[i] * length)
        if cell is not None:
            atoms.set_cell(cell * length)
            atoms.pbc = True
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(E[i].item()) * energy, forces=F[i] * energy / length
        )
        atoms.info.update(info, source_index=i)
        frames.append(_check_labels(path, i, atoms))
    return frames


def read_extxyz(path: str | Path) -> list[Atoms]:
    """Labelled frames from an extended XYZ file with energy (eV) and forces (eV/Å) per frame."""
    path = Path(path)
    return [_check_labels(path, i, atoms) for i, atoms in enumerate(_read_with_ase(path))]


def _read_with_ase(path: Path, format: str = "extxyz") -> list[Atoms]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    kind = {"extxyz": "extended XYZ", "traj": "ASE trajectory"}[format]
    try:
        frames = ase.io.read(path, index=":", format=format)
    except Exception as exc:  # ASE raises many types for malformed files
        problem = f"{type(exc).__name__}: {exc}"
        raise InputError(f"{path}: not a readable {kind} file ({problem})") from None
    if not frames:
        raise InputError(f"{path}: no frames")
    return frames


def read_any(path: str | Path, energy_unit: str | None = None) -> list[Atoms]:
    """Labelled frames from ``path`` by its extension: .npz, .xyz/.extxyz, .traj or .db."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path, energy_unit)
    if energy_unit is not None:
        raise InputError(f"{path}: an energy unit can only be given for npz files")
    if suffix in (".xyz", ".extxyz"):
        return read_extxyz(path)
    if suffix == ".traj":
        return [_check_labels(path, i, a) for i, a in enumerate(_read_with_ase(path, "traj"))]
    if suffix == ".db":
        return read_frames(path)
    raise InputError(f"{path}: unknown file type {suffix!r}; use .npz, .xyz, .extxyz, .traj or .db")


def read_positions(path: str | Path) -> list[Atoms]:
    """Frames of a .db, .xyz or .extxyz file whose labels, if any, are optional: the structures
    of a reference simulation, for instance. Positions must be finite."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".db":
        return read_frames(path, labelled=False)
    if suffix not in (".xyz", ".extxyz"):
        raise InputError(f"{path}: unknown file type {suffix!r}; use .db, .xyz or .extxyz")
    frames = _read_with_ase(path)
    for index, atoms in enumerate(frames):
        if not np.all(np.isfinite(atoms.positions)):
            raise InputError(f"{path}: frame {index} has non-finite positions")
    return frames


#: Extensions of the files ``import_file`` and ``export_extxyz`` write.
DATABASE_SUFFIXES = (".db",)
EXTXYZ_SUFFIXES = (".xyz", ".extxyz")


def import_file(
    path: str | Path,
    out: str | Path,
    energy_unit: str | None = None,
    overwrite: bool = False,
    frame_spacing_fs: float | None = None,
    every: int = 1,
    level: str | None = None,
) -> int:
    """Convert the labelled frames of ``path`` (see :func:`read_any`) into the ASE database
    ``out`` (a ``.db`` file, never ``path`` itself); returns the number of frames.

    ``level`` is the level of theory of frames that record none (a frame that records another
    is refused), so that a loop labelling more of them can check its oracle against it.

    With ``frame_spacing_fs`` the file is one MD trajectory whose frames are that many fs and
    ``every`` MD steps apart, kept with its velocities for training on rollouts
    (:func:`~stablemd.data.trajectories.mark_trajectory`)."""
    out = check_output_file(
        out, "--out", inputs=[path], overwrite=overwrite, suffixes=DATABASE_SUFFIXES
    )
    if level is not None and not level.strip():
        raise InputError("--level-of-theory: give the method's name, not a blank")
    frames = read_any(path, energy_unit)
    if level is not None:
        for index, atoms in enumerate(frames):
            recorded = atoms.info.setdefault("level_of_theory", level)
            if recorded != level:
                raise InputError(
                    f"{path}: frame {index} records the level of theory {recorded!r}, not "
                    f"--level-of-theory {level!r}"
                )
    if frame_spacing_fs is not None:
        frames = mark_trajectory(frames, str(path), frame_spacing_fs, every)
    elif every != 1:
        raise InputError(f"--every {every}: only with --timestep (an MD trajectory)")
    return write_frames(out, frames, overwrite=overwrite)


def export_extxyz(db_path: str | Path, out_path: str | Path, overwrite: bool = False) -> int:
    """Write every frame of the database ``db_path`` to extended XYZ (eV, Å, eV/Å): a
    ``.xyz``/``.extxyz`` file, never ``db_path`` itself."""
    out = check_output_file(
        out_path, "--out", inputs=[db_path], overwrite=overwrite, suffixes=EXTXYZ_SUFFIXES
    )
    frames = read_frames(db_path)
    with atomic_write(out) as tmp:
        ase.io.write(tmp, frames, format="extxyz")
    return len(frames)
