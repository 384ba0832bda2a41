"""``stablemd uncertainty fit``: add a calibrated ensemble-free uncertainty to a model file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from stablemd.cli.options import check_positive
from stablemd.cli.output import console
from stablemd.core.errors import InputError
from stablemd.core.files import check_output_file
from stablemd.explore.uncertainty.calibration import CALIBRATIONS
from stablemd.explore.uncertainty.evaluation import LEVELS
from stablemd.explore.uncertainty.features import FEATURE_KINDS
from stablemd.explore.uncertainty.workflow import fit_model_uncertainty

app = typer.Typer(no_args_is_help=True)


@app.command()
def fit(
    model: Path = typer.Option(..., help="Model file written by stablemd train."),
    data: Path = typer.Option(
        ...,
        help="The model's training data (its training and validation frames are found in "
        "it by content).",
    ),
    out: Path = typer.Option(
        ..., help="Model file to write, with the uncertainty (.pt; never the input)."
    ),
    features: str = typer.Option(
        "sketched", help="sketched (all linear layers, random projections) or last-layer."
    ),
    projections: int = typer.Option(512, help="Random projections of the sketched features."),
    seed: int = typer.Option(0, help="Seed of the random projections."),
    calibration: str = typer.Option(
        "conformal", help="conformal (u is a 95 % half-width), gaussian or log-ratio."
    ),
    alpha: float = typer.Option(0.05, help="Miscoverage of the calibrated interval."),
    batch_size: int = typer.Option(16, help="Frames per forward pass."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
):
    """Fit the GP posterior of the model's gradient features on its training frames and
    calibrate it on its validation frames; write the model with it."""
    if features not in FEATURE_KINDS:
        choices = list(FEATURE_KINDS)
        raise InputError(f"--features: unknown kind {features!r}; choose from {choices}")
    if calibration not in CALIBRATIONS:
        raise InputError(
            f"--calibration: unknown method {calibration!r}; choose from {list(CALIBRATIONS)}"
        )
    if not 0 < alpha < 1:
        raise InputError(f"--alpha: must lie between 0 and 1, got {alpha}")
    check_positive(projections=projections, batch_size=batch_size)
    check_output_file(out, "--out", inputs=[model, data], overwrite=overwrite, suffixes=(".pt",))
    done = fit_model_uncertainty(
        model, data, out, kind=features, projections=projections, seed=seed,
        calibration=calibration, alpha=alpha, batch_size=batch_size,
    )  # fmt: skip
    u = done.uncertainty
    console.print(done.located.describe(data))
    console.print(
        f"{features} gradient features ({u.features.dimension}), {calibration} calibration on "
        f"{len(done.located.val)} validation frames: u = {u.structure_factor:.4g} σ per "
        f"structure, {u.atomic_factor:.4g} σ per atom; model written to {out}"
    )


def calibration_table(metrics: dict, title: str) -> Table:
    """Coverage, rank correlation and sizes of the calibration metrics as a rich table."""
    table = Table(title=title)
    for column in ("error", "n", "coverage", "Spearman ρ", "mean u", "RMSE"):
        table.add_column(column, justify="left" if column == "error" else "right")
    for key, _, units in LEVELS:
        label = {"energy_per_atom": "|ΔE|/N", "forces_per_atom": "‖ΔF_i‖/√3"}[key]
        m = metrics[key]
        rho = "–" if m["spearman"] is None else f"{m['spearman']:.2f}"
        table.add_row(
            label, str(m["n"]), f"{100 * m['coverage']:.1f} %", rho,
            f"{m['mean_u']:.3g} {units}", f"{m['rmse']:.3g} {units}",
        )  # fmt: skip
    return table
