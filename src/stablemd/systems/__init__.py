"""Systems: built-in and stored structures with their bonds, molecules and default oracle."""

from stablemd.systems.registry import builtin_systems, get_system, list_systems
from stablemd.systems.system import System, bond_lengths, find_bonds, molecule_index

__all__ = [
    "System",
    "bond_lengths",
    "builtin_systems",
    "find_bonds",
    "get_system",
    "list_systems",
    "molecule_index",
]
