"""StABlE on xTB aspirin at 500 K: baseline, 10× labels, StABlE, energy-and-force-only control.

Every stage is a ``stablemd`` command run in a subprocess on one thread; a stage whose output
exists is not rerun (the commands resume), and the wall time of each stage is read back from
the files it wrote. Data: STABLEMD_BENCH_DATA, an xTB aspirin database of 8 trajectories
(default: made by this script with ``stablemd data generate aspirin --oracle xtb --temperature
500 --steps 12500 --every 10 --trajectories 8 --seed 1``, 18 minutes on one core);
STABLEMD_BENCH_WORK, the working directory.

Frames (``split_files``): the baseline's 50 labelled frames (``train-frames.db``); 1000 test
frames of trajectories 5–6, which no model sees (``test-frames.db``); 64 held-out starts, evenly
spaced over trajectory 7 (``starts64.db``); and the reference simulation, the positions of
trajectories 0–4 without their labels (``reference-sim.db``, 31 ps), whose h(r) is StABlE's
reference and the stability runs' h(r) reference.

Models (PaiNN, 32 features, 3 interactions, float32):
- ``baseline``: 50 frames (``--split-by trajectory``: 0.25 ps of one trajectory), 8 min;
- ``labels10x``: 500 frames of the same trajectory, 20 min;
- ``stable``: StABlE from the baseline, no new labels (``STABLE_CONFIG`` below: the library
  defaults with λ = 2 instead of 10, 150 epochs);
- ``control``: the same run with the observable loss switched off (``obs_weight: 0``), so that
  what the energy-and-force regulariser alone does to the under-trained baseline is measured.

Stability: 64 replicas from the 64 held-out starts, Nosé–Hoover, 0.5 fs, 0.5 Å bond criterion,
30 ps at 500 K; 5 ps at 350 K and 700 K for the baseline and the StABlE model. Force errors on
the test frames. Writes ``stable_aspirin.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402
from machine import machine_info  # noqa: E402

from stablemd.data.database import read_frames, write_frames  # noqa: E402
from stablemd.data.generate import generate_reference_data  # noqa: E402
from stablemd.models.registry import read_model_file  # noqa: E402

MODEL_CONFIG = """model_options: {n_features: 32, n_interactions: 3, cutoff: 5.0}
batch_size: 8
lr_patience: 8
early_stopping_patience: 40
max_epochs: 10000
"""
STABLE_CONFIG = """optimizer: adam
learning_rate: 0.0003
gradient_clip: 10.0
estimate_per: all
qm_weight: 2.0
max_epochs: 150
"""
TEMPERATURES = {500.0: 30.0, 350.0: 5.0, 700.0: 5.0}


def stablemd(*args: str, log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "a") as handle:
        subprocess.run(["stablemd", *args, "--no-progress"], check=True, env=env,
                       stdout=handle, stderr=subprocess.STDOUT)  # fmt: skip


def train(work: Path, data: Path, name: str, n_train: int, minutes: float) -> None:
    if (work / f"{name}.pt").is_file():
        return
    stablemd("train", "--data", str(data), "--n-train", str(n_train), "--n-val", "50",
             "--out", str(work / f"{name}.pt"), "--config", str(work / "painn-small.yaml"),
             "--max-time", str(minutes), "--split-by", "trajectory", "--seed", "0",
             log=work / f"{name}.log")  # fmt: skip


def stable_train(work: Path, data: Path, name: str, extra: str) -> None:
    config = work / f"{name}.yaml"
    config.write_text(STABLE_CONFIG + extra)
    stablemd("stable-train", "--model", str(work / "baseline.pt"), "--data", str(data),
             "--out", str(work / f"{name}.pt"), "--system", "aspirin", "--config", str(config),
             "--max-time", "120", "--reference", str(work / "reference-sim.db"),
             log=work / f"{name}.log")  # fmt: skip


KEPT = ("median_ps", "mean_ps", "fraction_stable", "h_r_mae", "steps_per_s", "stable_times_ps")


def stability(work: Path, models: list[str], temperature: float, ps: float):
    """Per model: stable times, h(r) MAE, speed and wall time of the run."""
    out = work / f"stability-{temperature:g}K"
    model_args = [a for m in models for a in ("--model", str(work / f"{m}.pt"))]
    stablemd("stability", *model_args, "--system", "aspirin", "--replicas", "64",
             "--temperature", str(temperature), "--time-ps", str(ps),
             "--starts", str(work / "starts64.db"),
             "--reference", str(work / "reference-sim.db"), "--out", str(out),
             log=work / "stability.log")  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    rows = {}
    for name in models:
        run = json.loads((out / name / "result.json").read_text())["run"]
        rows[name] = {k: summary[name][k] for k in KEPT if k in summary[name]}
        rows[name]["wall_time_s"] = run["wall_time_s"]
    return rows


def test_errors(work: Path, data: Path, name: str) -> dict:
    path = work / f"{name}-test.json"
    if not path.is_file():
        test = str(work / "test-frames.db")
        stablemd("evaluate", "--model", str(work / f"{name}.pt"), "--data", test,
                 "--json", str(path), log=work / "evaluate.log")  # fmt: skip
    return json.loads(path.read_text())


def split_files(work: Path, data: Path) -> None:
    """The frame files of the protocol (module docstring), made once (rewritten whole after an
    interruption)."""
    if (work / "reference-sim.db").is_file():
        return
    frames = read_frames(data)
    used = read_model_file(work / "baseline.pt")["metadata"]["training"]["train_indices"]
    write_frames(work / "train-frames.db", [frames[i] for i in used], overwrite=True)

    def trajectory(*numbers: int) -> list[int]:
        return [i for i, a in enumerate(frames) if a.info.get("trajectory") in numbers]

    test = np.random.default_rng(0).choice(trajectory(5, 6), size=1000, replace=False)
    write_frames(work / "test-frames.db", [frames[int(i)] for i in sorted(test)], overwrite=True)
    held_out = trajectory(7)
    spaced = np.linspace(0, len(held_out) - 1, 64).round().astype(int)
    write_frames(work / "starts64.db", [frames[held_out[k]] for k in spaced], overwrite=True)
    positions = [Atoms(frames[i].numbers, frames[i].positions) for i in trajectory(0, 1, 2, 3, 4)]
    write_frames(work / "reference-sim.db", positions, overwrite=True)


def main(out_dir: Path, quick: bool = False) -> dict:
    if quick:
        return {"skipped": "hours of work; run it without --quick"}
    work = Path(os.environ.get("STABLEMD_BENCH_WORK", HERE / "data" / "stable-aspirin"))
    work.mkdir(parents=True, exist_ok=True)
    data = Path(os.environ.get("STABLEMD_BENCH_DATA", work / "aspirin-xtb-500K.db"))
    if not data.is_file():
        generate_reference_data("aspirin", "xtb", 500.0, 12500, 10, data, n_trajectories=8, seed=1)
    (work / "painn-small.yaml").write_text(MODEL_CONFIG)
    started = time.perf_counter()
    train(work, data, "baseline", 50, 8)
    train(work, data, "labels10x", 500, 20)
    split_files(work, data)
    stable_train(work, data, "stable", "")
    stable_train(work, data, "control", "obs_weight: 0.0\n")
    result = {"machine": machine_info(), "data": str(data), "models": {}, "stability": {}}
    for name in ("baseline", "labels10x", "stable", "control"):
        metadata = read_model_file(work / f"{name}.pt")["metadata"]
        errors = test_errors(work, data, name)
        result["models"][name] = {
            "train_time_s": metadata["training"]["train_time_s"],
            "n_train": len(metadata["training"]["train_indices"]),
            "stable_time_s": metadata.get("stable", {}).get("wall_time_s"),
            "stable_epochs": metadata.get("stable", {}).get("epochs"),
            "test_force_mae_meV_per_A": 1000 * errors["forces_eV_per_A"]["mae"],
            "test_energy_mae_per_atom_meV": 1000 * errors["energy_per_atom_eV"]["mae"],
        }
    for temperature, ps in TEMPERATURES.items():
        models = ["baseline", "labels10x", "stable", "control"]
        if temperature != 500:
            models = ["baseline", "stable"]
        result["stability"][f"{temperature:g}K"] = stability(work, models, temperature, ps)
    result["wall_time_s"] = time.perf_counter() - started
    (out_dir / "stable_aspirin.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    print(json.dumps(main(out), indent=1)[:3000])
