"""``stablemd systems``: the built-in systems as a table."""

from __future__ import annotations

from rich.table import Table

from stablemd.cli.output import console
from stablemd.systems import get_system, list_systems


def systems():
    """List the built-in systems: atoms, periodicity, bonds, default oracle and time step."""
    table = Table(title="built-in systems")
    table.add_column("name", no_wrap=True)
    for column in ("atoms", "periodic", "bonds", "default oracle", "dt (fs)"):
        table.add_column(column, justify="left" if column == "default oracle" else "right")
    for name in list_systems():
        system = get_system(name)
        table.add_row(
            name,
            str(len(system.atoms)),
            "yes" if system.periodic else "no",
            str(len(system.bonds)),
            system.default_oracle,
            f"{system.timestep_fs:g}",
        )
    console.print(table)
