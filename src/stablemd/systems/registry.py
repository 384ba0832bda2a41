"""Systems by name: ``get_system("aspirin")``, ``get_system("water", n_molecules=32)``, and
the systems a user stored (:mod:`stablemd.systems.store`)."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from functools import lru_cache

from stablemd.core.errors import InputError
from stablemd.systems.clusters import load_cluster
from stablemd.systems.molecules import MOLECULES, load_molecule
from stablemd.systems.store import load_stored, stored_names
from stablemd.systems.system import System
from stablemd.systems.water import relaxed_water_box, water_bonds

MOLECULE_TIMESTEP_FS = 0.5
WATER_TIMESTEP_FS = 1.0


def _molecule(name: str) -> Callable[[], System]:
    def build() -> System:
        return System.from_atoms(
            name, load_molecule(name), "xtb", MOLECULE_TIMESTEP_FS, dihedrals=MOLECULES[name][1]
        )

    build.__doc__ = f"{name} ({MOLECULES[name][0]}), relaxed with GFN2-xTB."
    return build


def _water(n_molecules: int = 64, density_g_cm3: float = 0.997, seed: int = 0) -> System:
    """Periodic cube of flexible SPC/Fw waters, oxygens on a grid, orientations from ``seed``."""
    atoms = relaxed_water_box(int(n_molecules), float(density_g_cm3), int(seed))
    return System.from_atoms(
        "water", atoms, "openmm-spcfw", WATER_TIMESTEP_FS, bonds=water_bonds(len(atoms) // 3)
    )


def _pd13_h2() -> System:
    """Pd₁₃ icosahedron with two H₂, dissociated on relaxation (GFN2-xTB): H on Pd."""
    return System.from_atoms("pd13-h2", load_cluster("pd13-h2"), "xtb", MOLECULE_TIMESTEP_FS)


BUILDERS: dict[str, Callable[..., System]] = {name: _molecule(name) for name in MOLECULES}
BUILDERS["water"] = _water
BUILDERS["pd13-h2"] = _pd13_h2


def builtin_systems() -> list[str]:
    """Names of the built-in systems."""
    return list(BUILDERS)


def list_systems() -> list[str]:
    """Names of the built-in systems, then of the stored ones."""
    return [*BUILDERS, *(n for n in stored_names() if n not in BUILDERS)]


@lru_cache(maxsize=16)
def _cached(name: str, params: tuple) -> System:
    return BUILDERS[name](**dict(params))


def get_system(name: str, **params) -> System:
    """The system ``name`` built with ``params`` (a fresh copy; builds are cached per process).

    Molecules take no parameters; ``water`` takes ``n_molecules``, ``density_g_cm3``, ``seed``.
    A stored system is read from its file at every call (it may have been replaced).
    """
    if name not in BUILDERS and name in stored_names():
        if params:
            raise InputError(f"system {name!r} is stored and takes no parameters")
        return load_stored(name)
    if name not in BUILDERS:
        raise InputError(
            f"unknown system {name!r}; choose from {list_systems()} or add it with "
            "stablemd systems add"
        )
    allowed = set(inspect.signature(BUILDERS[name]).parameters)
    unknown = sorted(set(params) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) or "none"
        raise InputError(f"system {name!r} has no parameter {unknown[0]!r} (it takes: {takes})")
    return copy.deepcopy(_cached(name, tuple(sorted(params.items()))))
