"""Terminal output shared by the commands: one console, error and stability tables."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.table import Table

from stablemd.diagnose.stability.report import StabilitySummary
from stablemd.systems.resolve import ResolvedSystem
from stablemd.systems.topology import describe_order

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
    ]
    # −∂E/∂r and, for a model with a trained direct-force head, that head's forces
    both = "direct_forces_eV_per_A" in metrics
    for prefix, label in (
        ("", "−∂E/∂r forces" if both else "forces"),
        ("direct_", "direct-head forces"),
    ):
        if prefix + "forces_eV_per_A" in metrics:
            rows.append((f"{label} (meV/Å)", metrics[prefix + "forces_eV_per_A"]))
            rows += [
                (f"  {label} on {element} (meV/Å)", value)
                for element, value in metrics[prefix + "forces_per_element_eV_per_A"].items()
            ]
    for name, value in rows:
        table.add_row(name, f"{1000 * value['mae']:.2f}", f"{1000 * value['rmse']:.2f}")
    return table


def stability_table(
    per_model: Mapping[str, StabilitySummary], title: str = "Stability in MD"
) -> Table:
    """The summaries as a rich table for the terminal."""
    table = Table(title=title, caption="never-failing replicas counted at the run length")
    for column in ("model", "replicas", "run (ps)", "mean (ps)", "median (ps)", "stable at end"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, s in per_model.items():
        table.add_row(
            name,
            str(s.n_replicas),
            f"{s.run_length_ps:.3g}",
            f"{s.mean_ps:.3g}",
            s.median_text,
            f"{100 * s.fraction_stable:.0f} %",
        )
    return table


def print_system(resolved: ResolvedSystem, source: object = None) -> None:
    """Where the system came from, and the atom order used when ``source``'s frames came in
    another one than the system's."""
    system = resolved.system
    if resolved.origin.startswith("--system"):
        text = f"system: {system.name}"
    else:
        text = f"system: {system.name} ({resolved.origin})"
    console.print(
        f"{text}: {len(system.atoms)} atoms, {len(system.bonds)} bonds, "
        f"{int(system.molecule_index.max()) + 1} molecule(s)"
        + (", periodic" if system.periodic else ""),
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    if resolved.order is not None:
        console.print(
            f"{source}: atoms in another order than the {system.name} system, matched by bond "
            f"graph and run in the system's order (system atom←frame atom: "
            f"{describe_order(resolved.order)})",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
