"""``stablemd stable-train``: StABlE fine-tuning of a trained model, without new labels."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from stablemd.cli.options import config_from_options
from stablemd.cli.output import console, early_warning_text
from stablemd.cli.train import check_model_output
from stablemd.diagnose.early_warning.model_file import stored_early_warning
from stablemd.fix.stable_training.config import StableConfig
from stablemd.fix.stable_training.workflow import stable_train as run_stable_training
from stablemd.systems.topology import describe_order


def stable_train(
    model: Path = typer.Option(..., help="Base model file written by stablemd train."),
    data: Path = typer.Option(
        ..., help="ASE database the model was trained on; its training frames are the fixed QM set."
    ),
    out: Path = typer.Option(
        ...,
        help="Where to write the StABlE-trained model (.pt); not --model, not an existing file "
        "(--overwrite).",
    ),
    config: Path = typer.Option(None, help="YAML file with further StABlE options."),
    system: str = typer.Option(
        None,
        help="Built-in or stored system the frames are, in any atom order (default: bonds "
        "derived from the frames).",
    ),
    estimator: str = typer.Option(None, help="global or local. (default global)"),
    observable: str = typer.Option(
        None, help="h_r, bond_lengths, rdf, molecule_bond_length or module:function."
    ),
    reference: Path = typer.Option(
        None,
        help="Reference observable: frames of a reference simulation (.db, .xyz, .extxyz; "
        "positions only) or an .npz file with a 'reference' array. (default: the training frames)",
    ),
    reference_temperature: float = typer.Option(
        None, help="Temperature (K) of the training frames; reweights the reference."
    ),
    criterion: str = typer.Option(
        None, help="bond_length_deviation or min_nonbonded_distance. (default by system)"
    ),
    max_bond_deviation: float = typer.Option(None, help="Training bond criterion in Å. (0.25)"),
    latent_grade_criterion: bool = typer.Option(
        None,
        "--latent-grade-criterion/--no-latent-grade-criterion",
        help="Also count a replica unstable when an atom's extrapolation grade in the model's "
        "latent space, refitted for the current weights before every run, exceeds --max-grade "
        "(docs/early_warning.md). (default off)",
    ),
    max_grade: float = typer.Option(
        None, help="Largest atomic grade the latent grade criterion allows; above 1. (25)"
    ),
    min_distance: float = typer.Option(None, help="Training contact criterion in Å. (1.2)"),
    temperature: float = typer.Option(None, help="MD temperature in K. (500)"),
    timestep: float = typer.Option(None, help="MD time step in fs. (0.5)"),
    replicas: int = typer.Option(None, help="Parallel replicas. (16)"),
    steps_per_epoch: int = typer.Option(None, help="MD steps per epoch, t. (400)"),
    f_max: float = typer.Option(None, help="Unstable fraction that starts learning. (0.75)"),
    f_min: float = typer.Option(None, help="Unstable fraction that ends learning. (0.25)"),
    qm_weight: float = typer.Option(None, help="λ, weight of the energy-and-force loss. (10)"),
    learning_rate: float = typer.Option(None, help="Adam's learning rate. (3e-4)"),
    lr_warmup: int = typer.Option(
        None, help="Learning epochs over which each phase's rate rises to its value. (0)"
    ),
    max_cycles: int = typer.Option(None, help="Simulation + learning cycles. (4)"),
    max_epochs: int = typer.Option(None, help="Epochs in all. (400)"),
    max_time: float = typer.Option(None, help="Wall-time budget in minutes."),
    seed: int = typer.Option(None, help="Seed of starts, velocities and minibatches. (0)"),
    run_dir: Path = typer.Option(
        None, help="Checkpoint, log.csv and plot directory. (default: <out stem>_run)"
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    overwrite: bool = typer.Option(
        False, help="Replace OUT if it exists (never --model; a resumed run has not written it)."
    ),
):
    """Alternate MD that finds instabilities with learning that fixes them; rerun to resume."""
    options = config_from_options(
        StableConfig, config, estimator=estimator, observable=observable,
        reference_temperature_K=reference_temperature, criterion=criterion,
        max_bond_deviation_A=max_bond_deviation, min_intermolecular_A=min_distance,
        latent_grade_criterion=latent_grade_criterion, max_grade=max_grade,
        temperature_K=temperature, timestep_fs=timestep, replicas=replicas,
        steps_per_epoch=steps_per_epoch, f_max=f_max, f_min=f_min, qm_weight=qm_weight,
        learning_rate=learning_rate, lr_warmup_epochs=lr_warmup, max_cycles=max_cycles,
        max_epochs=max_epochs, max_time_minutes=max_time, seed=seed,
    )  # fmt: skip
    run_dir = check_model_output(out, overwrite, [model, data, reference, config], run_dir)
    result = run_stable_training(model, data, out, options, system, reference, run_dir, progress)
    learning = sum(row["phase"] == "learning" for row in result.history)
    last = result.history[-1] if result.history else {"unstable_fraction": float("nan")}
    reference = result.reference
    n_eff = reference.effective_samples
    effective = f", N_eff {n_eff:.1f}" if math.isfinite(n_eff) else ""
    located = result.training_frames
    if located is not None:
        qm = len(located.train) if located.train else "all"
        console.print(f"{located.describe(data)}; L_QM uses {qm} frames of {data.name}")
    if result.atom_order is not None:
        console.print(
            f"{data}: atoms in another order than the {system} system, matched by bond graph "
            f"(system atom←frame atom: {describe_order(result.atom_order)}); trained in the "
            "frames' order",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    console.print(f"reference: {reference.source}{effective}")
    latent = last.get("latent_unstable_fraction")
    by_grade = "" if latent is None else f" ({latent:.2f} by the latent grade)"
    console.print(
        f"StABlE: {len(result.history)} epochs ({learning} learning) in {result.elapsed_s:.0f} s; "
        f"last unstable fraction {last['unstable_fraction']:.2f}{by_grade}; energies re-centred by "
        f"{1000 * result.energy_recentred_eV_per_atom:+.1f} meV/atom; model written to {out}"
    )
    console.print(early_warning_text(stored_early_warning(result.potential)))
