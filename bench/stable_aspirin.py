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

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import numpy as np  # noqa: E402
import stages  # noqa: E402
from ase import Atoms  # noqa: E402
from machine import machine_info  # noqa: E402

from stablemd.data.database import read_frames, write_frames  # noqa: E402
from stablemd.data.generate import generate_reference_data  # noqa: E402
from stablemd.models.registry import read_model_file  # noqa: E402

MODEL_CONFIG = stages.painn_config(n_interactions=3, cutoff=5.0, batch_size=8)
STABLE_CONFIG = """optimizer: adam
learning_rate: 0.0003
gradient_clip: 10.0
estimate_per: all
qm_weight: 2.0
max_epochs: 150
"""
TEMPERATURES = {500.0: 30.0, 350.0: 5.0, 700.0: 5.0}


def stable_train(work: Path, data: Path, name: str, extra: str, system: str = "aspirin") -> None:
    """``name.pt``: StABlE from ``baseline.pt`` with ``STABLE_CONFIG`` plus ``extra``."""
    if (work / f"{name}.pt").is_file():  # finished; stablemd never replaces a model silently
        return
    config = work / f"{name}.yaml"
    config.write_text(STABLE_CONFIG + extra)
    stages.stablemd(
        "stable-train", "--model", str(work / "baseline.pt"), "--data", str(data),
        "--out", str(work / f"{name}.pt"), "--system", system, "--config", str(config),
        "--max-time", "120", "--reference", str(work / "reference-sim.db"),
        log=work / f"{name}.log",
    )  # fmt: skip


def stability(
    work: Path, models: list[str], temperature: float, ps: float, system: str = "aspirin"
) -> dict:
    return stages.stability(
        work, models, f"stability-{temperature:g}K", "--system", system, "--replicas", "64",
        "--temperature", str(temperature), "--time-ps", str(ps),
        "--starts", str(work / "starts64.db"), "--reference", str(work / "reference-sim.db"),
    )  # fmt: skip


def split_files(work: Path, data: Path) -> None:
    """The frame files of the protocol (module docstring), made once (rewritten whole after an
    interruption)."""
    if (work / "reference-sim.db").is_file():
        return
    frames = read_frames(data)
    used = read_model_file(work / "baseline.pt")["metadata"]["training"]["train_indices"]
    write_frames(work / "train-frames.db", [frames[i] for i in used], overwrite=True)

    def trajectory(*numbers: int) -> list[Atoms]:
        return [a for a in frames if a.info.get("trajectory") in numbers]

    test = trajectory(5, 6)
    chosen = np.random.default_rng(0).choice(len(test), size=1000, replace=False)
    write_frames(work / "test-frames.db", [test[int(i)] for i in sorted(chosen)], overwrite=True)
    write_frames(work / "starts64.db", stages.spaced(trajectory(7), 64), overwrite=True)
    stages.write_positions(work / "reference-sim.db", trajectory(0, 1, 2, 3, 4))


def main(out_dir: Path, quick: bool = False) -> dict:
    if quick:
        return {"skipped": "hours of work; run it without --quick"}
    work, data = stages.workspace(
        "stable-aspirin", "aspirin-xtb-500K.db",
        lambda path: generate_reference_data("aspirin", "xtb", 500.0, 12500, 10, path, 8, 1),
    )  # fmt: skip
    (work / "painn-small.yaml").write_text(MODEL_CONFIG)
    started = time.perf_counter()
    stages.train(work, data, "baseline", 50, 50, 8)
    stages.train(work, data, "labels10x", 500, 50, 20)
    split_files(work, data)
    stable_train(work, data, "stable", "")
    stable_train(work, data, "control", "obs_weight: 0.0\n")
    result = {"machine": machine_info(), "data": str(data), "models": {}, "stability": {}}
    for name in ("baseline", "labels10x", "stable", "control"):
        result["models"][name] = stages.model_row(work, name)
    for temperature, ps in TEMPERATURES.items():
        models = ["baseline", "labels10x", "stable", "control"]
        if temperature != 500:
            models = ["baseline", "stable"]
        result["stability"][f"{temperature:g}K"] = stability(work, models, temperature, ps)
    return stages.finish(out_dir, "stable_aspirin", result, started)
