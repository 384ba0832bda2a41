"""``stablemd analyze``: structure and dynamics of a ``stablemd simulate`` trajectory."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from stablemd.analysis.ramachandran import COVERAGE_DEPTH
from stablemd.cli.options import system_params
from stablemd.cli.output import console
from stablemd.core.errors import InputError
from stablemd.core.files import write_json
from stablemd.diagnose.stability.diffusion import DIFFUSION_WINDOW_PS
from stablemd.diagnose.trajectory.analysis import analyze_trajectory
from stablemd.diagnose.trajectory.plots import PLOT_NAMES, write_plots
from stablemd.systems import get_system

#: Everything the command writes into --out (what --overwrite replaces).
OUTPUTS = ("analysis.json", *PLOT_NAMES)


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse a file, or a non-empty directory unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"--out {out}: exists and is not empty; add --overwrite to replace it")


def analyze(
    trajectory: Path = typer.Argument(
        ..., help="H5MD trajectory written by stablemd simulate (its trajectory.h5)."
    ),
    out: Path = typer.Option(..., help="Directory for analysis.json and the plots."),
    system: str = typer.Option(
        None,
        help="Built-in or stored system whose bonds give bond-length and angle distributions, "
        "also for periodic boxes (default: bonds found in a molecule's first frame; none for "
        "boxes).",
    ),
    param: list[str] = typer.Option(
        [], help="System parameter KEY=VALUE, repeatable (e.g. n_molecules=8 for water)."
    ),
    window_ps: float = typer.Option(
        DIFFUSION_WINDOW_PS,
        help="Longest lag of the VACF and the MSD in ps; D is fitted over its second half.",
    ),
    stride: int = typer.Option(
        1,
        help="Use every this many frames for h(r), RDFs and bond distributions (VACF and MSD "
        "use all): these cost ~10 ms per frame of a 64-molecule water box.",
    ),
    vacf: bool = typer.Option(
        None, "--vacf/--no-vacf", help="VACF (default: when the trajectory has velocities)."
    ),
    overwrite: bool = typer.Option(False, help="Replace the outputs of an earlier analysis."),
):
    """h(r), RDFs or bond and angle distributions, VACF, MSD and diffusivity, temperature and
    energies of a trajectory, pooled over its replicas; φ/ψ coverage and the Ramachandran plot of
    a --system that names them (alanine-dipeptide); writes analysis.json and plots."""
    if param and system is None:
        raise InputError("--param needs --system")
    _check_out(out, overwrite)
    target = get_system(system, **system_params(param)) if system is not None else None
    analysis = analyze_trajectory(trajectory, target, window_ps, vacf, stride)
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # an earlier analysis's plots that this one may not write
        (out / name).unlink(missing_ok=True)
    write_json(analysis.to_json(), out / "analysis.json")
    plots = write_plots(analysis, out)

    table = Table(title=f"{trajectory}: {analysis.n_replicas} replicas")
    for column in ("replica", "frames", "end (ps)", "T mean (K)", "E_pot mean (eV)"):
        table.add_column(column, justify="right")
    for row in analysis.replicas:
        end = f"{row['end_ps']:.3g}" + (" (early)" if row["ended_early"] else "")
        temperature, energy = row["temperature_mean_K"], row["potential_energy_mean_eV"]
        table.add_row(
            str(row["replica"]),
            str(row["frames_analysed"]),
            end,
            "–" if temperature is None else f"{temperature:.1f}",
            "–" if energy is None else f"{energy:.4g}",
        )
    console.print(table)
    if analysis.diffusivity_cm2_per_s:
        parts = [
            f"D({symbol}) {'n/a' if d is None else f'{d:.3g}'}"
            for symbol, d in analysis.diffusivity_cm2_per_s.items()
        ]
        console.print(", ".join(parts) + " cm²/s")
    if analysis.ramachandran_coverage is not None:
        console.print(
            f"Ramachandran coverage {analysis.ramachandran_coverage:.4f} of the (φ, ψ) plane "
            f"({len(analysis.phi_deg)} frames; quadtree depth {COVERAGE_DEPTH})",
            highlight=False,
        )
    for note in analysis.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    for label, path in (("numbers", out / "analysis.json"), *(("plot", p) for p in plots)):
        console.print(f"{label}: {path}", soft_wrap=True, highlight=False)
