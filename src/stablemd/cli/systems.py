"""``stablemd systems``: list the built-in and stored systems; add and remove stored ones."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from stablemd.cli.output import console
from stablemd.core.errors import InputError
from stablemd.data.formats import read_positions
from stablemd.oracles import get_oracle
from stablemd.systems import builtin_systems, get_system, list_systems
from stablemd.systems.molecules import relax
from stablemd.systems.store import (
    check_new_name,
    remove_stored,
    store_directory,
    store_system,
    structure_from_smiles,
)
from stablemd.systems.system import DERIVED_TIMESTEP_FS

app = typer.Typer(
    help="List the built-in and stored systems (bare call); add or remove stored ones.",
    no_args_is_help=False,
)


@app.callback(invoke_without_command=True)
def systems(ctx: typer.Context):
    """List the systems: atoms, periodicity, bonds, molecules, default oracle, time step and
    where each comes from (built in, or the user's store)."""
    if ctx.invoked_subcommand is not None:
        return
    table = Table(title="systems")
    table.add_column("name", no_wrap=True)
    for column in ("atoms", "periodic", "bonds", "molecules", "default oracle", "dt (fs)"):
        table.add_column(column, justify="left" if column == "default oracle" else "right")
    table.add_column("source")
    built_in = builtin_systems()
    damaged = []
    for name in list_systems():
        try:
            system = get_system(name)
        except InputError as exc:  # one unreadable stored file must not hide the others
            damaged.append(str(exc))
            table.add_row(name, *["–"] * 6, "stored, unreadable")
            continue
        table.add_row(
            name,
            str(len(system.atoms)),
            "yes" if system.periodic else "no",
            str(len(system.bonds)),
            str(int(system.molecule_index.max()) + 1),
            system.default_oracle,
            f"{system.timestep_fs:g}",
            "built-in" if name in built_in else "stored",
        )
    console.print(table)
    console.print(f"stored systems live in {store_directory()}", highlight=False, soft_wrap=True)
    for message in damaged:
        console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


@app.command()
def add(
    name: str = typer.Argument(..., help="Name to use with --system and data generate."),
    smiles: str = typer.Option(
        None, help="A molecule: embedded by RDKit (ETKDG, MMFF), then relaxed with --oracle."
    ),
    from_file: Path = typer.Option(
        None,
        "--from",
        help="A structure file (.xyz/.extxyz/.db; its first frame), e.g. a periodic box of "
        "molecules, stored as it is (unless --relax).",
    ),
    oracle: str = typer.Option(
        "xtb", help="Oracle that relaxes the structure and labels its data (xtb, openmm-spcfw)."
    ),
    relax_structure: bool = typer.Option(
        False, "--relax", help="Relax a --from structure with --oracle too (--smiles always is)."
    ),
    timestep: float = typer.Option(DERIVED_TIMESTEP_FS, help="Default MD time step in fs."),
    seed: int = typer.Option(0, help="Seed of RDKit's conformer embedding."),
    overwrite: bool = typer.Option(False, help="Replace a stored system of this name."),
):
    """Store a system from a SMILES string or a structure file, in the user's configuration."""
    if (smiles is None) == (from_file is None):
        raise InputError("systems add: give either --smiles or --from")
    if not timestep > 0:
        raise InputError(f"--timestep {timestep!r}: must be positive")
    check_new_name(name, builtin_systems(), overwrite)  # before minutes of relaxation
    get_oracle(oracle)  # an unknown oracle: refused now, not when data are generated
    if smiles is not None:
        atoms = structure_from_smiles(smiles, oracle, seed)
    else:
        atoms = read_positions(from_file)[0]
        atoms.info["source"] = from_file.name
        if relax_structure:
            atoms = relax(atoms, oracle)
    source = str(from_file) if from_file is not None else f"--smiles {smiles!r}"
    system = store_system(name, atoms, builtin_systems(), oracle, timestep, overwrite, source)
    console.print(
        f"stored {name}: {system.atoms.get_chemical_formula()}, {len(system.atoms)} atoms, "
        f"{len(system.bonds)} bonds, {int(system.molecule_index.max()) + 1} molecule(s)"
        + (", periodic" if system.periodic else "")
        + f"; default oracle {oracle}, dt {timestep:g} fs",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def remove(name: str = typer.Argument(..., help="A stored system.")):
    """Delete a stored system (built-in systems stay)."""
    if name in builtin_systems():
        raise InputError(f"{name!r} is a built-in system; only stored systems can be removed")
    console.print(f"removed {remove_stored(name)}", highlight=False, soft_wrap=True)
