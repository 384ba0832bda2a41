"""Stages of the StABlE experiments: ``stablemd`` commands run in subprocesses on one thread.

A stage whose output exists is not rerun (the commands resume), so an interrupted experiment
continues where it stopped; wall times are read back from the files the commands wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ase import Atoms

from stablemd.data.database import write_frames
from stablemd.models.registry import read_model_file

HERE = Path(__file__).resolve().parent
#: Figures of a stability summary kept in the experiments' results.
KEPT = (
    "median_ps", "mean_ps", "fraction_stable", "h_r_mae", "steps_per_s", "stable_times_ps",
    "diffusivity_cm2_per_s",
)  # fmt: skip


def workspace(name: str, data_file: str, generate: Callable[[Path], object]) -> tuple[Path, Path]:
    """The working directory (STABLEMD_BENCH_WORK, default ``bench/data/name``) and the data
    (STABLEMD_BENCH_DATA, default ``data_file`` there, made by ``generate(path)`` if missing)."""
    work = Path(os.environ.get("STABLEMD_BENCH_WORK", HERE / "data" / name))
    work.mkdir(parents=True, exist_ok=True)
    data = Path(os.environ.get("STABLEMD_BENCH_DATA", work / data_file))
    if not data.is_file():
        generate(data)
    return work, data


def painn_config(n_interactions: int, cutoff: float, batch_size: int) -> str:
    """``stablemd train`` config of the experiments' small PaiNN (32 features), trained until
    the validation loss stops improving."""
    return (
        f"model_options: {{n_features: 32, n_interactions: {n_interactions}, cutoff: {cutoff}}}\n"
        f"batch_size: {batch_size}\nlr_patience: 8\nearly_stopping_patience: 40\n"
        "max_epochs: 10000\n"
    )


#: Commands with a progress bar, which a log file does not want.
WITH_PROGRESS = frozenset({"train", "stable-train", "stability"})


def stablemd(command: str, *args: str, log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    quiet = ["--no-progress"] if command in WITH_PROGRESS else []
    with open(log, "a") as handle:
        subprocess.run(["stablemd", command, *args, *quiet], check=True, env=env,
                       stdout=handle, stderr=subprocess.STDOUT)  # fmt: skip


def timed(work: Path, stage: str, output: Path, command: str, *args: str) -> None:
    """Run ``stablemd command args`` unless ``output`` exists; its wall time (summed over
    interrupted attempts) is kept in ``work/timings.json``."""
    if output.exists():
        return
    timings_path = work / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    started = time.perf_counter()
    try:
        stablemd(command, *args, log=work / f"{stage}.log")
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started
        timings_path.write_text(json.dumps(timings, indent=2))


def train(work: Path, data: Path, name: str, n_train: int, n_val: int, minutes: float) -> None:
    """``name.pt`` from ``n_train`` frames of one trajectory (``work/painn-small.yaml``)."""
    if (work / f"{name}.pt").is_file():
        return
    stablemd("train", "--data", str(data), "--n-train", str(n_train), "--n-val", str(n_val),
             "--out", str(work / f"{name}.pt"), "--config", str(work / "painn-small.yaml"),
             "--max-time", str(minutes), "--split-by", "trajectory", "--seed", "0",
             log=work / f"{name}.log")  # fmt: skip


def write_positions(path: Path, frames: list[Atoms]) -> None:
    """Frames without their labels (a reference simulation's structures)."""
    unlabelled = [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in frames]
    write_frames(path, unlabelled, overwrite=True)


def spaced(frames: list[Atoms], count: int) -> list[Atoms]:
    """``count`` frames evenly spaced over ``frames``."""
    return [frames[k] for k in np.linspace(0, len(frames) - 1, count).round().astype(int)]


def stability(work: Path, models: list[str], out: str, *options: str) -> dict:
    """Per model: stable times, h(r) MAE, diffusivity, speed and wall time of the run of
    ``stablemd stability`` with ``options`` into ``work/out``."""
    model_args = [a for m in models for a in ("--model", str(work / f"{m}.pt"))]
    stablemd("stability", *model_args, *options, "--out", str(work / out),
             log=work / "stability.log")  # fmt: skip
    return read_stability(work, models, out)


def read_stability(work: Path, models: list[str], out: str) -> dict:
    """The rows :func:`stability` returns, from a finished run in ``work/out``."""
    summary = json.loads((work / out / "summary.json").read_text())
    rows = {}
    for name in models:
        run = json.loads((work / out / name / "result.json").read_text())["run"]
        rows[name] = {k: summary[name][k] for k in KEPT if k in summary[name]}
        rows[name]["wall_time_s"] = run["wall_time_s"]
    return rows


def test_errors(work: Path, name: str) -> dict:
    """``stablemd evaluate`` of ``name.pt`` on ``work/test-frames.db`` (kept as JSON)."""
    path = work / f"{name}-test.json"
    if not path.is_file():
        test = str(work / "test-frames.db")
        stablemd("evaluate", "--model", str(work / f"{name}.pt"), "--data", test,
                 "--json", str(path), log=work / "evaluate.log")  # fmt: skip
    return json.loads(path.read_text())


def model_row(work: Path, name: str) -> dict:
    """Training size and times of ``name.pt`` and its errors on the test frames."""
    metadata = read_model_file(work / f"{name}.pt")["metadata"]
    errors = test_errors(work, name)
    return {
        "train_time_s": metadata["training"]["train_time_s"],
        "n_train": len(metadata["training"]["train_indices"]),
        "stable_time_s": metadata.get("stable", {}).get("wall_time_s"),
        "stable_epochs": metadata.get("stable", {}).get("epochs"),
        "test_force_mae_meV_per_A": 1000 * errors["forces_eV_per_A"]["mae"],
        "test_energy_mae_per_atom_meV": 1000 * errors["energy_per_atom_eV"]["mae"],
    }


def finish(out_dir: Path, name: str, result: dict, started: float) -> dict:
    """Add the wall time since ``started`` (perf_counter) and write ``out_dir/name.json``."""
    result["wall_time_s"] = time.perf_counter() - started
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
    return result
