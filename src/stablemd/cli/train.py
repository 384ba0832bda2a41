"""``stablemd train`` and ``stablemd evaluate``."""

from __future__ import annotations

from pathlib import Path

import typer

from stablemd.cli.options import check_positive, config_from_options
from stablemd.cli.output import console, early_warning_text, metrics_table
from stablemd.cli.uncertainty import calibration_table
from stablemd.core.config_file import read_config_file
from stablemd.core.errors import InputError
from stablemd.core.files import check_output_directory, check_output_file, write_json
from stablemd.data.database import count_frames, read_frames
from stablemd.data.trajectories import read_trajectories
from stablemd.diagnose.early_warning.model_file import fit_and_attach, stored_early_warning
from stablemd.diagnose.held_out import held_out_errors
from stablemd.explore.uncertainty.estimator import model_uncertainty
from stablemd.explore.uncertainty.evaluation import held_out_calibration
from stablemd.fix.dynamic_training.config import DynamicTrainConfig
from stablemd.fix.dynamic_training.workflow import train_dynamic_from_database
from stablemd.models.registry import check_hyperparameters, load_potential, read_model_file
from stablemd.training.config import TrainConfig
from stablemd.training.workflow import (
    default_run_dir,
    train_from_database,
)

#: Extension of model files: every command that writes one refuses another.
MODEL_SUFFIXES = (".pt",)


def check_model_output(
    out: Path, overwrite: bool, inputs: list[Path | None], run_dir: Path | None
) -> Path:
    """Check ``--out`` (a new ``.pt`` file, none of the inputs; an existing one only with
    ``--overwrite``) and the run directory (default ``<out stem>_run``) before any training;
    returns the run directory."""
    check_output_file(out, "--out", inputs=inputs, overwrite=overwrite, suffixes=MODEL_SUFFIXES)
    option = "--run-dir" if run_dir is not None else "--out (its run directory)"
    run_dir = run_dir if run_dir is not None else default_run_dir(out)
    return check_output_directory(run_dir, option, inputs=inputs)


def train(
    data: Path = typer.Option(
        ..., help="ASE database of labelled frames (energy eV, forces eV/Å)."
    ),
    n_train: int = typer.Option(..., help="Number of training frames."),
    n_val: int = typer.Option(..., help="Number of validation frames (early stopping, schedule)."),
    out: Path = typer.Option(
        ..., help="Where to write the trained model (.pt); not an existing file (--overwrite)."
    ),
    model: str = typer.Option(None, help="Model kind: painn (built-in) or mace. (default painn)"),
    config: Path = typer.Option(None, help="YAML file with further training options."),
    max_epochs: int = typer.Option(None, help="Maximum number of epochs."),
    max_time: float = typer.Option(None, help="Training wall-time budget in minutes."),
    dtype: str = typer.Option(None, help="float32 or float64. (default float32)"),
    seed: int = typer.Option(None, help="Seed of the split, the initial weights and batch order."),
    forces: str = typer.Option(
        None,
        help="Forces to train: conservative (−∂E/∂r), direct (the direct-force head alone, no "
        "derivative in training: cheaper, not energy-conserving) or both. (default conservative)",
    ),
    direct_forces_weight: float = typer.Option(
        None,
        help="Weight of the direct head's force error, (eV/Å)⁻². (default: forces_weight for "
        "direct and both, 0 for conservative; pass 1 = 0.01 × forces_weight in conservative "
        "fine-tuning of a direct model to keep its head for --mts)",
    ),
    init: Path = typer.Option(
        None,
        help="Start from this saved model's weights (fine-tuning, e.g. --forces conservative "
        "from a direct model); the model kind and size are its own.",
    ),
    split_by: str = typer.Option(
        None,
        help="random, or trajectory: validation frames come from other trajectories. "
        "(default random; trajectory with --dynamic)",
    ),
    dynamic: bool = typer.Option(
        False,
        "--dynamic",
        help="Dynamic training: the model's own velocity-Verlet rollouts over windows of "
        "consecutive reference frames, the window growing as the rate reaches its floor "
        "(needs trajectory data: data generate --friction 0, or data import --timestep).",
    ),
    window_max: int = typer.Option(
        None, help="With --dynamic: the largest window, frames per rollout. (default 4)"
    ),
    backprop: str = typer.Option(
        None,
        help="With --dynamic: detached (the state is cut from the graph between steps, the "
        "authors' choice) or through-time. (default detached)",
    ),
    run_dir: Path = typer.Option(
        None, help="Checkpoint and metrics.csv directory. (default: <out stem>_run next to --out)"
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    overwrite: bool = typer.Option(
        False, help="Replace OUT if it exists (a run that is resumed has not written it yet)."
    ),
):
    """Train a potential on energies and forces; rerun the same command to resume."""
    if init is not None and model is None:
        kind = read_model_file(init)["kind"]  # refuses what is not a model file, naming it
        if config is None or "model" not in read_config_file(config):
            model = kind  # the starting model's kind, unless one is asked for
    if not dynamic and (window_max is not None or backprop is not None):
        given = "--window-max" if window_max is not None else "--backprop"
        raise InputError(f"{given} is an option of dynamic training: add --dynamic")
    extra = {"window_max": window_max, "backprop": backprop} if dynamic else {}
    options = config_from_options(
        DynamicTrainConfig if dynamic else TrainConfig, config, model=model,
        max_epochs=max_epochs, max_time_minutes=max_time, dtype=dtype, seed=seed, forces=forces,
        direct_forces_weight=direct_forces_weight, **extra,
    )  # fmt: skip
    split_by = split_by or ("trajectory" if dynamic else "random")
    where = f"{config}: model_options" if config is not None else "model_options"
    check_hyperparameters(options.model, options.model_options, where)
    check_positive(n_train=n_train, n_val=n_val)
    available = count_frames(data)  # a missing or foreign file is refused before any output
    if n_train + n_val > available:
        raise InputError(
            f"{data}: has {available} frames, fewer than --n-train {n_train} + --n-val {n_val}"
        )
    if init is not None:
        load_potential(init)  # a damaged file is refused before any output
    if dynamic:  # frames without velocities or time are refused before any output
        read_trajectories(read_frames(data), str(data))
    run_dir = check_model_output(out, overwrite, [data, config, init], run_dir)
    trained = (train_dynamic_from_database if dynamic else train_from_database)(
        data, n_train, n_val, options, out, run_dir=run_dir, split_by=split_by,
        progress=progress, init=init, fit_attachments=fit_and_attach,
    )  # fmt: skip
    info = trained.metadata["training"]
    what = options.model
    if options.forces != "conservative":
        what += f" ({options.forces} forces)"
    if dynamic:
        what += f" by dynamic training up to S = {options.window_max}"
    start = f" from {init}" if init is not None else ""
    console.print(
        f"trained {what}{start} for {info['epochs']} epochs in {info['train_time_s']:.0f} s "
        f"(best epoch {info['best_epoch']}); model written to {out}"
    )
    console.print(metrics_table(trained.metadata["validation"], "validation errors"))
    if dynamic:
        rollout = trained.metadata["validation"]["rollout"]
        console.print(
            f"validation rollouts: force MAE {1000 * rollout['mae']:.1f} meV/Å over "
            f"{rollout['steps']} steps ({rollout['n_rollouts']} rollouts, "
            f"{rollout['exploded']} exploded); per window size: "
            f"{run_dir / 'rollout_errors.png'}"
        )
    console.print(early_warning_text(stored_early_warning(trained.potential)))


def evaluate(
    model: Path = typer.Option(..., help="Model file written by stablemd train."),
    data: Path = typer.Option(..., help="ASE database of labelled frames."),
    json_out: Path = typer.Option(None, "--json", help="Write the metrics to this JSON file."),
    include_training: bool = typer.Option(
        False, help="Also count frames the model was trained or validated on."
    ),
    batch_size: int = typer.Option(32, help="Frames per forward pass."),
    plot: Path = typer.Option(
        None, help="For a model with an uncertainty: write the plot of error against u here."
    ),
    overwrite: bool = typer.Option(False, help="Replace the --json or --plot file if it exists."),
):
    """Energy (per atom, per structure) and force errors, per element, on held-out frames; for a
    model with an uncertainty (stablemd uncertainty fit), its calibration too."""
    check_positive(batch_size=batch_size)
    if json_out is not None:
        check_output_file(
            json_out, "--json", inputs=[model, data], overwrite=overwrite, suffixes=(".json",)
        )
    potential = load_potential(model)
    uncertainty = model_uncertainty(potential)
    if plot is not None:
        if uncertainty is None:
            raise InputError(f"--plot: {model} carries no uncertainty (stablemd uncertainty fit)")
        check_output_file(
            plot, "--plot", inputs=[model, data, json_out], overwrite=overwrite,
            suffixes=(".png", ".pdf", ".svg"),
        )  # fmt: skip
    result = held_out_errors(potential, data, include_training, batch_size, str(model))
    if result.located is not None:
        left_out = "" if result.located.by == "none" else "; they are left out"
        console.print(result.located.describe(data) + left_out)
    metrics, indices = result.metrics, result.indices
    console.print(metrics_table(metrics, f"{model.name} on {len(indices)} frames of {data.name}"))
    if uncertainty is not None:
        calibration = held_out_calibration(potential, uncertainty, data, indices, batch_size, plot)
        metrics = {**metrics, "uncertainty": calibration}
        nominal = f"{100 * calibration['nominal_coverage']:.0f} %"
        title = f"uncertainty ({calibration['calibration']}; interval {calibration['interval']}, "
        console.print(calibration_table(calibration, title + f"nominal coverage {nominal})"))
    if json_out is not None:
        write_json({"model": str(model), "data": str(data), **metrics}, json_out)
