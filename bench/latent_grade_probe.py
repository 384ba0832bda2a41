"""What does a replica's largest latent grade look like in a model's own MD? A probe for the
default ``max_grade`` of StABlE's latent grade criterion (docs/early_warning.md).

Data: ``STABLEMD_ETHANOL_XTB`` (or ``--data``), the xTB ethanol database of
``early_warning_study`` (4 trajectories × 3 ps at 500 K, a frame every 5 fs). Working directory:
``STABLEMD_BENCH_WORK`` (default ``bench/data/latent-grade-probe``); trained models there are
reused.

Protocol: PaiNN (32 features, 2 interactions, cutoff 5 Å) trained by ``stablemd train`` on 25
and 100 frames (``--split-by trajectory``, 50 validation frames, seed 0, 1.5 minutes each), with
the latent domain it stores; per model and temperature (500, 700 K) 16 replicas started from
every 40th frame of trajectory 3 (0.2 ps apart), Nosé–Hoover, 0.5 fs, 2 ps, replicas frozen at
1 Å bond deviation; every 20 steps each replica's largest grade max_i γ_i and largest bond
deviation. Measured per run and threshold γ*: the share of "healthy" checks (every bond within
0.25 Å, StABlE's training criterion) with max_i γ_i > γ*; the replicas that pass 0.25 Å and how
many of them passed γ* while still healthy (warned first); the replicas that never pass 0.5 Å
and how many of them passed γ* at some check.

Writes ``latent_grade_probe.json``. Run: ``STABLEMD_ETHANOL_XTB=ethanol-xtb-500K.db
OMP_NUM_THREADS=1 python bench/run.py latent_grade_probe``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from campaign import cli  # noqa: E402
from machine import machine_info  # noqa: E402

from stablemd.core.files import write_json  # noqa: E402
from stablemd.data.database import read_frames  # noqa: E402
from stablemd.diagnose.early_warning import LatentInstabilityMonitor  # noqa: E402
from stablemd.diagnose.early_warning.model_file import stored_early_warning  # noqa: E402
from stablemd.md.forces import ModelForces  # noqa: E402
from stablemd.md.monitoring import Observer  # noqa: E402
from stablemd.md.runner import run  # noqa: E402
from stablemd.md.settings import MDSettings  # noqa: E402
from stablemd.md.starts import initial_state  # noqa: E402
from stablemd.models.registry import load_potential  # noqa: E402
from stablemd.monitors.criteria import BondLengthDeviation  # noqa: E402
from stablemd.systems import get_system  # noqa: E402

N_TRAIN = (25, 100)
TEMPERATURES = (500.0, 700.0)
REPLICAS = 16
STEPS = 4000  # 2 ps of 0.5 fs
EVERY = 20
HEALTHY_A, FAILED_A, FROZEN_A = 0.25, 0.5, 1.0
THRESHOLDS = (2, 5, 10, 25, 50, 100)
MODEL_YAML = "model_options: {n_features: 32, n_interactions: 2, cutoff: 5.0}\n"


class BondDeviations(Observer):
    """Each replica's largest bond deviation (Å) at every call, NaN once frozen."""

    name = "bond_deviations"

    def __init__(self, criterion: BondLengthDeviation, every: int):
        super().__init__(every)
        self.criterion = criterion
        self.values: list[torch.Tensor] = []

    def __call__(self, state) -> None:
        values = self.criterion.values(state).clone()
        values[~state.active] = float("nan")
        self.values.append(values)


def first_check(mask: np.ndarray) -> list[int | None]:
    """Per replica (column) the first check (row) where ``mask`` holds; None: never."""
    return [int(np.argmax(column)) if column.any() else None for column in mask.T]


def summarise(grades: np.ndarray, bonds: np.ndarray) -> dict:
    """The threshold scan of one run: ``grades`` and ``bonds`` [n_checks, n_replicas]."""
    healthy = bonds <= HEALTHY_A  # NaN (frozen) is not healthy
    healthy_grades = grades[healthy]
    past_healthy = first_check(bonds > HEALTHY_A)
    failed = first_check(bonds > FAILED_A)
    failing = [r for r, check in enumerate(past_healthy) if check is not None]
    surviving = [r for r, check in enumerate(failed) if check is None]
    scan = {}
    for threshold in THRESHOLDS:
        warned = first_check((grades > threshold) & healthy)
        crossed = first_check(grades > threshold)
        scan[str(threshold)] = {
            "healthy_checks_above": float((healthy_grades > threshold).mean()),
            "failing_warned_first": sum(
                warned[r] is not None and warned[r] < past_healthy[r] for r in failing
            ),
            "surviving_crossed": sum(crossed[r] is not None for r in surviving),
        }
    quantiles = np.percentile(healthy_grades, [50, 90, 99, 100])
    return {
        "healthy_max_grade_quantiles_50_90_99_100": [round(float(q), 2) for q in quantiles],
        "replicas_past_healthy": len(failing),
        "replicas_never_failed": len(surviving),
        "thresholds": scan,
    }


def main(out_dir: Path, quick: bool = False) -> dict:
    started = time.perf_counter()
    data = Path(os.environ.get("STABLEMD_ETHANOL_XTB", "ethanol-xtb-500K.db"))
    for k, arg in enumerate(sys.argv):
        if arg == "--data":
            data = Path(sys.argv[k + 1])
    work = Path(os.environ.get("STABLEMD_BENCH_WORK", HERE / "data" / "latent-grade-probe"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "painn.yaml").write_text(MODEL_YAML)
    frames = read_frames(data)
    starts = [a for a in frames if a.info.get("trajectory") == 3][::40][:REPLICAS]
    system = get_system("ethanol")
    steps = 400 if quick else STEPS
    runs = {}
    for n in N_TRAIN:
        model = work / f"n{n}.pt"
        if not model.is_file():
            cli(["train", "--data", data, "--n-train", n, "--n-val", 50, "--out", model,
                 "--config", work / "painn.yaml", "--max-time", 1.5, "--split-by", "trajectory",
                 "--no-progress", "--seed", 0], work / "train.log")  # fmt: skip
        potential = load_potential(model)
        domain = stored_early_warning(potential).domain
        for temperature in TEMPERATURES:
            state = initial_state(starts, REPLICAS, temperature, seed=1)
            grades = LatentInstabilityMonitor(domain, every=EVERY)
            bonds = BondDeviations(
                BondLengthDeviation(system.bonds, system.reference_bond_lengths), EVERY
            )
            frozen = BondLengthDeviation(
                system.bonds, system.reference_bond_lengths, FROZEN_A, every=EVERY
            )
            integrator = MDSettings(temperature_K=temperature, timestep_fs=0.5).integrator()
            forces = ModelForces(potential, outputs=("features",))
            run(state, integrator, forces, steps, [grades, bonds, frozen], progress=False)
            runs[f"n{n}_{temperature:.0f}K"] = summarise(
                grades.series()["max_grade"].numpy(), torch.stack(bonds.values).numpy()
            )
    result = {
        "machine": machine_info(),
        "data": data.name,
        "protocol": {
            "n_train": list(N_TRAIN),
            "temperatures_K": list(TEMPERATURES),
            "replicas": REPLICAS,
            "steps": steps,
            "timestep_fs": 0.5,
            "every": EVERY,
            "healthy_A": HEALTHY_A,
            "failed_A": FAILED_A,
            "frozen_A": FROZEN_A,
        },
        "runs": runs,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    write_json(result, out_dir / "latent_grade_probe.json")
    return result


if __name__ == "__main__":
    from run import run_as_script

    run_as_script(main)
