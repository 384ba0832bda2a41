"""``stablemd early-warning fit``: store the early warning with a model trained before it
existed or elsewhere (``train`` and ``stable-train`` store it themselves)."""

from __future__ import annotations

from pathlib import Path

import typer

from stablemd.cli.output import console, early_warning_text
from stablemd.cli.train import MODEL_SUFFIXES
from stablemd.core.files import check_output_file
from stablemd.data.database import count_frames
from stablemd.diagnose.early_warning.model_file import fit_model_file
from stablemd.models.registry import read_model_file

app = typer.Typer(no_args_is_help=True)


@app.command()
def fit(
    model: Path = typer.Option(..., help="Model file (.pt); it is never written."),
    data: Path = typer.Option(
        ...,
        help="ASE database holding the model's training frames (found by content); its "
        "reference MD trajectories, when it has them, calibrate the critical level.",
    ),
    out: Path = typer.Option(
        ..., help="The model with its early warning (.pt); not an existing file (--overwrite)."
    ),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists (never --model)."),
):
    """Fit the latent domain on the model's training frames and store it in a copy of the model."""
    check_output_file(
        out, "--out", inputs=[model, data], overwrite=overwrite, suffixes=MODEL_SUFFIXES
    )
    read_model_file(model)  # a missing or foreign file is refused before the data are read
    count_frames(data)
    fitted = fit_model_file(model, data, out)
    if fitted.located.by == "none":
        console.print(
            f"{model} records no training frames: fitted on all {fitted.n_training_frames}"
        )
    else:
        console.print(
            fitted.located.describe(data) + "; the domain is fitted on the training frames"
        )
    console.print(early_warning_text(fitted.early_warning))
    if fitted.held_out_flagged is not None:
        shares = ", ".join(f"{100 * v:.1f} % ({k})" for k, v in fitted.held_out_flagged.items())
        console.print(f"atoms of the other frames of {data.name} flagged: {shares}")
    console.print(f"model written to {out}")
