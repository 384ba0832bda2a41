"""Cost of a constant-pressure MD step against a constant-volume one, with a model.

8 replicas of the built-in 64-molecule SPC/Fw water box, PaiNN with default hyperparameters
(float32, random weights with energy scale 0.1 eV: cost depends on the structures, not the
weights), one thread, 300 K, 0.5 fs, Langevin noise:

- nvt: BAOAB with the model's conservative forces;
- npt: OBABO with stochastic cell rescaling at 1 bar, the model asked for the stress too (the
  strain derivative comes from the same backward pass as the forces; the barostat itself is a
  few tensor operations per replica).

The two run side by side in rounds (each round runs both, in turn, so a change of the
machine's load touches both alike) after one unrecorded round; the median over rounds of the
wall time and of this process's CPU time per step, and their ratio npt/nvt. One command:
``python bench/npt_cost.py`` (or ``python bench/run.py npt_cost``).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numba
import torch
from machine import machine_info

from stablemd.core.runtime import tune_memory_allocator
from stablemd.md.settings import MDSettings
from stablemd.md.starts import initial_state
from stablemd.models.painn import PaiNN
from stablemd.systems import get_system

REPLICAS = 8
TEMPERATURE_K = 300.0
TIMESTEP_FS = 0.5


def load_model() -> PaiNN:
    torch.manual_seed(0)
    model = PaiNN([1, 8]).eval()
    model.energy_scaling.scale.fill_(0.1)
    return model


def seconds_per_step(settings: MDSettings, model, start, steps: int) -> tuple[float, float]:
    """Wall and CPU time (this process) per step over ``steps`` steps from ``start``."""
    integrator, term = settings.integrator(), settings.force_term(model)
    state = integrator.prepare(start, term)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        state = integrator.step(state, term)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main(out_dir: Path, quick: bool) -> dict:
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    model = load_model()
    common = {"replicas": REPLICAS, "temperature_K": TEMPERATURE_K, "timestep_fs": TIMESTEP_FS,
              "thermostat": "langevin"}  # fmt: skip
    runs = {"nvt": MDSettings(**common), "npt": MDSettings(**common, pressure_bar=1.0)}
    start = initial_state([get_system("water").atoms], REPLICAS, TEMPERATURE_K, 0)
    rounds, steps = (1, 2) if quick else (7, 10)
    for settings in runs.values():  # a round unrecorded: kernels compiled, memory mapped
        seconds_per_step(settings, model, start, steps)
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    load_before = os.getloadavg()
    for _ in range(rounds):
        for name, settings in runs.items():
            w, c = seconds_per_step(settings, model, start, steps)
            wall[name].append(w)
            cpu[name].append(c)
    result = {
        "system": f"{REPLICAS} replicas of 64 SPC/Fw waters (192 atoms), PaiNN default, float32",
        "rounds": rounds,
        "steps_per_round": steps,
        "ms_per_step_wall": {k: 1000 * statistics.median(v) for k, v in wall.items()},
        "ms_per_step_cpu": {k: 1000 * statistics.median(v) for k, v in cpu.items()},
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "quick": quick,
        "machine": machine_info(),
    }
    for kind in ("wall", "cpu"):
        times = result[f"ms_per_step_{kind}"]
        result[f"npt_over_nvt_{kind}"] = times["npt"] / times["nvt"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "npt_cost.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    tune_memory_allocator()
    results = Path(__file__).resolve().parent / "results"
    print(json.dumps(main(results, quick="--quick" in sys.argv), indent=1))
