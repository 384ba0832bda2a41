"""Built-in systems: relaxed reference structures with their bonds and default oracle."""

from stablemd.systems.registry import get_system, list_systems
from stablemd.systems.system import System, bond_lengths, find_bonds, molecule_index

__all__ = ["System", "bond_lengths", "find_bonds", "get_system", "list_systems", "molecule_index"]
