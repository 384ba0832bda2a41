"""Cost of an MD step with conservative forces, direct forces and multiple time stepping.

64 aspirin replicas in one batch, PaiNN with default hyperparameters (float32), one thread
(torch's and numba's), NVE from the same 300 K start. Three force schemes, run side by side
in rounds (each round runs all three, in turn, so a change of the machine's load touches each
alike) after one unrecorded round; the median over rounds of the wall time and of this
process's CPU time per (inner) step:

- conservative: velocity Verlet with −∂E/∂r (forward and backward pass every step);
- direct: velocity Verlet with the direct-force head (forward pass only, no autograd);
- mts: RESPA with M = 8 inner steps, the direct head inside and the conservative correction
  every outer step (one shared forward + backward pass), per inner step.

Ratios conservative/direct (what direct forces save; the paper's reason for them) and
mts/direct (what the conservative correction costs; goal ≤ 1.3×). The weights are random:
cost does not depend on them, only on the structures, which stay near the start over these
few steps (energy scale 0.1 eV keeps the random forces gentle). ``STABLEMD_BENCH_MODEL`` names
a model file instead. One command: ``python bench/mts.py`` (or ``python bench/run.py mts``).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numba
import torch
from machine import machine_info

from stablemd.md.forces import model_force_term
from stablemd.md.integrators import RESPA, VelocityVerlet
from stablemd.md.starts import state_from_atoms
from stablemd.md.velocities import maxwell_boltzmann
from stablemd.models.painn import PaiNN
from stablemd.models.registry import load_potential
from stablemd.systems import get_system

REPLICAS = 64
TEMPERATURE_K = 300.0
TIMESTEP_FS = 0.5
M = 8
#: A model trained with both heads, as far as the force-term builder is concerned.
BOTH_HEADS = {"training": {"config": {"forces": "both"}}}


def load_model():
    path = os.environ.get("STABLEMD_BENCH_MODEL")
    if path:
        return load_potential(path, dtype=torch.float32)
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8]).eval()
    model.energy_scaling.scale.fill_(0.1)
    model.metadata = BOTH_HEADS
    return model


def schemes(model) -> dict:
    """name → (integrator, force term, inner steps per integrator step)."""
    return {
        "conservative": (VelocityVerlet(TIMESTEP_FS), model_force_term(model, "conservative"), 1),
        "direct": (VelocityVerlet(TIMESTEP_FS), model_force_term(model, "direct"), 1),
        "mts": (RESPA(TIMESTEP_FS, M), model_force_term(model, mts=M), M),
    }


def seconds_per_inner_step(
    integrator, term, inner: int, start, inner_steps: int
) -> tuple[float, float]:
    """Wall and CPU time (this process) per inner step over ``inner_steps`` inner steps from
    ``start`` (forces prepared first). On one thread, CPU time is what the step costs even when
    other processes share the cores (they lengthen the wall time only)."""
    state = integrator.prepare(start, term)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(inner_steps // inner):
        state = integrator.step(state, term)
    return (
        (time.perf_counter() - wall) / inner_steps,
        (time.process_time() - cpu) / inner_steps,
    )


def main(out_dir: Path, quick: bool) -> dict:
    torch.set_num_threads(1)
    numba.set_num_threads(1)  # the fused kernel's block sums would otherwise use every core
    model = load_model()
    start = maxwell_boltzmann(
        state_from_atoms([get_system("aspirin").atoms] * REPLICAS), TEMPERATURE_K, 0
    )
    runs = schemes(model)
    rounds, inner_steps = (1, M) if quick else (7, 2 * M)
    for integrator, term, inner in runs.values():  # a round unrecorded: kernels compiled, memory
        seconds_per_inner_step(integrator, term, inner, start, inner_steps)  # mapped
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    load_before = os.getloadavg()
    for _ in range(rounds):
        for name, (integrator, term, inner) in runs.items():
            seconds = seconds_per_inner_step(integrator, term, inner, start, inner_steps)
            wall[name].append(seconds[0])
            cpu[name].append(seconds[1])

    def ratios(per_step: dict[str, float]) -> dict:
        direct = per_step["direct"]
        return {
            "conservative_over_direct": per_step["conservative"] / direct,
            "mts_over_direct": per_step["mts"] / direct,
            # M − 1 direct steps and one conservative step per outer step
            "mts_expected_over_direct": ((M - 1) * direct + per_step["conservative"])
            / (M * direct),
        }

    def summary(times: dict[str, list[float]]) -> dict:
        median = {name: statistics.median(values) for name, values in times.items()}
        fastest = {name: min(values) for name, values in times.items()}
        return {
            "ms_per_inner_step": {name: 1e3 * value for name, value in median.items()},
            "ms_per_inner_step_each_round": {
                name: [round(1e3 * v, 2) for v in values] for name, values in times.items()
            },
            **ratios(median),
            # on a busy machine the least disturbed round is the better estimate
            "fastest_round": {
                "ms_per_inner_step": {name: 1e3 * value for name, value in fastest.items()},
                **ratios(fastest),
            },
        }

    result = {
        "benchmark": "mts",
        "quick": quick,
        "model": os.environ.get("STABLEMD_BENCH_MODEL") or "PaiNN defaults, random weights",
        "machine": machine_info(),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "replicas": REPLICAS,
        "atoms": start.n_atoms,
        "timestep_fs": TIMESTEP_FS,
        "mts_inner_steps": M,
        "rounds": rounds,
        "inner_steps_per_round": inner_steps,
        "wall": summary(wall),
        "cpu": summary(cpu),
        "target_mts_over_direct": 1.3,
    }
    (out_dir / "mts.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from run import run_as_script

    run_as_script(main)
