"""Terminal output shared by the commands: one console, error tables, JSON files."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()
error_console = Console(stderr=True)


def metrics_table(metrics: dict, title: str) -> Table:
    """Energy and force errors (meV, meV/Å) as a rich table."""
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("MAE", justify="right")
    table.add_column("RMSE", justify="right")
    rows = [
        ("energy per structure (meV)", metrics["energy_per_structure_eV"]),
        ("energy per atom (meV)", metrics["energy_per_atom_eV"]),
        ("forces (meV/Å)", metrics["forces_eV_per_A"]),
    ]
    rows += [
        (f"  forces on {element} (meV/Å)", value)
        for element, value in metrics["forces_per_element_eV_per_A"].items()
    ]
    for name, value in rows:
        table.add_row(name, f"{1000 * value['mae']:.2f}", f"{1000 * value['rmse']:.2f}")
    return table
