"""Dynamic against conventional training on xTB aspirin, for PaiNN and MACE, with the same
labels and the same wall time; then StABlE after each, against each alone.

Data: ``stablemd data generate aspirin --oracle xtb --temperature 1000 --friction 0 --every 1
--steps 2000 --trajectories 4 --seed 3``: NVE (velocity Verlet, 0.5 fs) with every step kept;
velocities drawn at 1000 K fall to about 500 K as the kinetic energy shares itself with the
potential energy. ``--split-by trajectory --seed 0`` (the same split for every model): 500
frames (0.25 ps) of one trajectory train, 484 of another validate, the other two are held out.

Models: PaiNN (32 features, 3 interactions, 5 Å) and the MACE adapter (its defaults, 5 Å),
float32, each trained conventionally (``stablemd train``: MSE of energies and forces) and
dynamically (``--dynamic``: the authors' loss and curriculum from S = 1, the schedule
compressed to fit the budget: patience 5, floor 1e-5, windows up to 4; ``TRAINED``) for
``MINUTES`` each on one thread, two runs side by side. StABlE (``bench/stable_aspirin.py``'s
λ = 2 settings, no new labels) from the conventional and from the dynamic PaiNN.

Measured on the held-out trajectories: force MAE along 120-step rollouts from every
non-overlapping start (the paper's figure), single-frame errors on every 4th frame, and 64
replicas from 64 evenly spaced frames at 500 K for ``STABILITY_PS`` of the architecture
(Nosé–Hoover, 0.5 Å bond criterion; h(r) reference: the held-out trajectories' positions).
The plan runs the stages in the order of their worth: trainings, rollouts, the stability runs,
then StABlE after each PaiNN.

Stages share one-thread workers (``bench/campaign.py``): ``python bench/dynamic_aspirin.py
--work DIR`` in two shells; ``--collect`` writes ``bench/results/dynamic_aspirin.json`` and
``docs/images/dynamic_aspirin_rollout.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import numpy as np  # noqa: E402
import stable_aspirin  # noqa: E402
import stages  # noqa: E402
import yaml  # noqa: E402
from campaign import Stage, campaign_arguments, cli, recorded_stages, work_loop  # noqa: E402
from machine import machine_info  # noqa: E402

from stablemd.data.database import read_frames, write_frames  # noqa: E402
from stablemd.data.splits import split_indices  # noqa: E402
from stablemd.data.trajectories import read_trajectories  # noqa: E402
from stablemd.fix.dynamic_training.plots import plot_rollout_errors  # noqa: E402
from stablemd.fix.dynamic_training.validation import rollout_force_errors  # noqa: E402
from stablemd.models.registry import load_potential  # noqa: E402

DATA = "aspirin-nve.db"
GENERATE = ["data", "generate", "aspirin", "--oracle", "xtb", "--temperature", 1000,
            "--friction", 0, "--every", 1, "--steps", 2000, "--trajectories", 4,
            "--seed", 3]  # fmt: skip
N_TRAIN, N_VAL = 500, 484
MINUTES = 20.0
#: Simulated time of each stability replica (ps) by architecture. MACE's runs are shorter: a
#: Nosé–Hoover step of 64 aspirin replicas on one thread took 0.80 s with the MACE adapter
#: against 0.095 s with PaiNN (one after the other, beside two other jobs), so 10 ps would
#: take hours.
STABILITY_PS = {"painn": 10.0, "mace": 3.0}
ROLLOUT_STEPS = 120
TRAINING = {"batch_size": 8, "lr_patience": 8, "early_stopping_patience": 40, "max_epochs": 10000}
ARCHITECTURES = {
    "painn": {"model": "painn", "model_options": {"n_features": 32, "n_interactions": 3,
                                                  "cutoff": 5.0}},
    "mace": {"model": "mace", "model_options": {"cutoff": 5.0, "avg_num_neighbors": 15.0}},
}  # fmt: skip
DYNAMIC = {"window_max": 4, "lr_patience": 5, "min_learning_rate": 1e-5,
           "early_stopping_patience": 10000}  # fmt: skip
#: Trained models: architecture and the options beyond ``TRAINING``. Dynamic runs start the
#: curriculum at S = 1 as the authors do (an earlier campaign's start at S = 2 gave PaiNN a
#: worse rollout error and fewer stable replicas, and left MACE under-trained: 9 epochs).
TRAINED = {
    "painn-conventional": ("painn", {}),
    "painn-dynamic": ("painn", DYNAMIC),
    "mace-conventional": ("mace", {}),
    "mace-dynamic": ("mace", DYNAMIC),
}
STABLE_FROM = ["painn-conventional", "painn-dynamic"]
MODELS = [*TRAINED, *(f"{name}-stable" for name in STABLE_FROM)]


def data_stage(work: Path) -> dict:
    if not (work / DATA).is_file():  # rerunning the command resumes it
        cli([*GENERATE, "--out", work / DATA, "--quiet"], work / "data.log")
    return {}


def held_out(frames: list) -> list:
    """The trajectories of neither the training nor the validation frames (``train``'s split)
    among ``frames``, the data."""
    ids = [a.info["trajectory"] for a in frames]
    split = split_indices(len(frames), N_TRAIN, N_VAL, seed=0, by="trajectory", trajectories=ids)
    used = {ids[i] for i in (*split.train, *split.val)}
    return [t for t in read_trajectories(frames, DATA) if t.trajectory_id not in used]


def splits_stage(work: Path) -> dict:
    frames = read_frames(work / DATA)
    test = [frames[i] for t in held_out(frames) for i in t.frame_indices]
    write_frames(work / "test-frames.db", test[::4], overwrite=True)
    write_frames(work / "starts64.db", stages.spaced(test, 64), overwrite=True)
    stages.write_positions(work / "reference-sim.db", test)
    temperatures = [a.get_temperature() for a in test]
    return {"test_frames": len(test[::4]), "mean_temperature_K": float(np.mean(temperatures))}


def train_stage(work: Path, name: str) -> dict:
    architecture, options = TRAINED[name]
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**ARCHITECTURES[architecture], **TRAINING, **options}))
    dynamic = ["--dynamic"] if options else []
    if not (work / f"{name}.pt").is_file():
        cli(["train", "--data", work / DATA, "--n-train", N_TRAIN, "--n-val", N_VAL,
             "--split-by", "trajectory", "--seed", 0, "--config", path, "--max-time", MINUTES,
             "--out", work / f"{name}.pt", "--no-progress", *dynamic],
            work / f"train-{name}.log")  # fmt: skip
    return {}


def stable_stage(work: Path, name: str) -> dict:
    if not (work / f"{name}-stable.pt").is_file():
        config = work / "stable.yaml"
        config.write_text(stable_aspirin.STABLE_CONFIG)
        cli(["stable-train", "--model", work / f"{name}.pt", "--data", work / DATA,
             "--out", work / f"{name}-stable.pt", "--system", "aspirin", "--config", config,
             "--max-time", 120, "--reference", work / "reference-sim.db", "--no-progress"],
            work / f"train-{name}-stable.log")  # fmt: skip
    return {}


def rollout_stage(work: Path, name: str) -> dict:
    """Rollout force errors from the held-out trajectories and single-frame test errors."""
    runs = held_out(read_frames(work / DATA))
    errors = rollout_force_errors(load_potential(work / f"{name}.pt"), runs, ROLLOUT_STEPS)
    return {"rollout": errors, "single_frame": stages.test_errors(work, name)}


def architecture(name: str) -> str:
    """The architecture of model ``name`` (a trained one, or StABlE from one)."""
    return TRAINED[name.removesuffix("-stable")][0]


def stability_stage(work: Path, name: str) -> dict:
    out = f"stability-{name}"
    time_ps = STABILITY_PS[architecture(name)]
    cli(["stability", "--model", work / f"{name}.pt", "--system", "aspirin", "--replicas", 64,
         "--temperature", 500, "--time-ps", time_ps, "--starts", work / "starts64.db",
         "--reference", work / "reference-sim.db", "--out", work / out, "--no-progress"],
        work / f"stability-{name}.log")  # fmt: skip
    return stages.read_stability(work, [name], out)[name]


def plan() -> list[Stage]:
    """Every stage, in the order workers take them when their inputs are ready."""

    def after_training(kind, run, names):
        return [Stage(f"{kind}-{n}", [f"train-{n}", "splits"], run, (n,)) for n in names]

    stabilized = [f"{name}-stable" for name in STABLE_FROM]
    plan = [Stage("data", [], data_stage), Stage("splits", ["data"], splits_stage)]
    plan += [Stage(f"train-{name}", ["data"], train_stage, (name,)) for name in TRAINED]
    plan += after_training("rollout", rollout_stage, TRAINED)
    plan += after_training("stability", stability_stage, TRAINED)
    plan += [Stage(f"train-{name}-stable", [f"train-{name}", "splits"], stable_stage, (name,))
             for name in STABLE_FROM]  # fmt: skip
    plan += after_training("rollout", rollout_stage, stabilized)
    plan += after_training("stability", stability_stage, stabilized)
    return plan


def collect(work: Path, out: Path, image: Path) -> dict:
    recorded = recorded_stages(work, work)
    models = {}
    for name in MODELS:
        if f"rollout-{name}" not in recorded:
            continue
        row = stages.model_row(work, name)
        rollout = recorded[f"rollout-{name}"]["rollout"]
        row["rollout_force_mae_meV_per_A"] = 1000 * rollout["mae"]
        row["rollouts_exploded"] = rollout["exploded"]
        row["stability_500K"] = recorded.get(f"stability-{name}")
        models[name] = row
    curves = {name: recorded[f"rollout-{name}"]["rollout"] for name in models}
    plot_rollout_errors(curves, image, "aspirin, held-out NVE trajectories: 120-step rollouts")
    result = {"machine": machine_info(), "data": " ".join(map(str, GENERATE)),
              "split": recorded["splits"], "minutes_per_training": MINUTES,
              "stability_ps": STABILITY_PS, "models": models, "rollouts": curves}  # fmt: skip
    out.write_text(json.dumps(result, indent=1))
    return result


def command_line() -> None:
    args = campaign_arguments(__doc__.split("\n")[0], HERE / "data" / "dynamic-aspirin")
    if args.collect:
        collect(args.work, HERE / "results" / "dynamic_aspirin.json",
                ROOT / "docs" / "images" / "dynamic_aspirin_rollout.png")  # fmt: skip
        return
    work_loop(args.work, plan(), args.words, args.until)


if __name__ == "__main__":
    command_line()
