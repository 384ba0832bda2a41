"""Cost of the CLI-inspired early-warning monitor on the MD step.

64 aspirin replicas, Langevin BAOAB at 300 K, 0.5 fs, PaiNN of default size (float32 unless
``STABLEMD_BENCH_MODEL`` names a model file), one thread for torch and numba unless
``STABLEMD_BENCH_THREADS`` says otherwise. The latent domain is fitted on 50 rattled aspirin
structures (0.05 Å). Reported:

(a) the monitor's own time per call (grade of every atom, accumulation, series), timed on a
    state of the run, as a fraction of the plain MD step (goal ≤ 5 % when called every step);
(b) whole runs, plain (``ModelForces(model)``, no monitor) against the same run with features
    returned and the monitor called every step and every ``check_every`` = 20 steps, in
    alternating repeats (medians), so that a loaded machine slows all of them alike.

Both in CPU time of this process (``time.process_time``, one thread) and in wall time: on a
machine shared with other jobs the wall times of runs a minute apart differ by tens of per
cent, the CPU times much less.
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
from md_throughput import aspirin_state, langevin, load_model

from stablemd.diagnose.early_warning import LatentInstabilityMonitor, fit_latent_domain
from stablemd.md.forces import ModelForces
from stablemd.md.runner import run
from stablemd.systems import get_system

REPLICAS = 64
TRAINING_FRAMES = 50
RATTLE_A = 0.05


def training_frames():
    import numpy as np

    rng = np.random.default_rng(0)
    base = get_system("aspirin").atoms
    frames = []
    for _ in range(TRAINING_FRAMES):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=RATTLE_A, size=atoms.positions.shape)
        frames.append(atoms)
    return frames


def timed_run(model, domain, n_steps: int, every: int | None) -> tuple[float, float]:
    """CPU and wall seconds per step of one run (``every`` None: no features, no monitor)."""
    state = aspirin_state(REPLICAS, seed=1)
    if every is None:
        forces, monitors = ModelForces(model), []
    else:
        forces = ModelForces(model, outputs=("features",))
        monitors = [LatentInstabilityMonitor(domain, every=every)]
    cpu = time.process_time()
    result = run(state, langevin(0.5, seed=1), forces, n_steps, monitors, progress=False)
    return (time.process_time() - cpu) / n_steps, result.wall_time_s / n_steps


def monitor_call_time(model, domain, n_calls: int) -> tuple[float, float]:
    """CPU and wall seconds per monitor call on a state carrying features, after a few
    warm-up calls."""
    state = aspirin_state(REPLICAS, seed=1)
    forces = ModelForces(model, outputs=("features",))
    state = langevin(0.5, seed=1).prepare(state, forces)
    monitor = LatentInstabilityMonitor(domain)
    for _ in range(3):
        monitor(state)
    cpu, started = time.process_time(), time.perf_counter()
    for k in range(n_calls):
        state.time_fs += 0.5 * (k + 1)
        monitor(state)
    return (time.process_time() - cpu) / n_calls, (time.perf_counter() - started) / n_calls


def main(out_dir: Path, quick: bool) -> dict:
    threads = int(os.environ.get("STABLEMD_BENCH_THREADS", 1))
    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    model = load_model(torch.float32)
    domain = fit_latent_domain(model, training_frames())
    n_steps, repeats = (5, 1) if quick else (20, 3)
    timed_run(model, domain, 3, 1)  # warm-up: numba kernels, allocator
    plain, every_step, every_20 = [], [], []
    for _ in range(repeats):
        plain.append(timed_run(model, domain, n_steps, None))
        every_step.append(timed_run(model, domain, n_steps, 1))
        every_20.append(timed_run(model, domain, n_steps, 20))
    call_cpu, call_wall = monitor_call_time(model, domain, 10 if quick else 50)

    def median(runs, k):  # k = 0: CPU, 1: wall
        return statistics.median(r[k] for r in runs)

    step_cpu, step_wall = median(plain, 0), median(plain, 1)
    result = {
        "benchmark": "early_warning_overhead",
        "quick": quick,
        "model": os.environ.get("STABLEMD_BENCH_MODEL") or "untrained PaiNN (defaults)",
        "machine": {**machine_info(), "numba_threads": numba.get_num_threads()},
        "replicas": REPLICAS,
        "atoms": REPLICAS * len(get_system("aspirin").atoms),
        "domain": {
            "training_frames": TRAINING_FRAMES,
            "rank_per_element": {str(z): d.rank for z, d in domain.elements.items()},
        },
        "steps_per_run": n_steps,
        "repeats": repeats,
        "plain_step_cpu_s": step_cpu,
        "plain_step_wall_s": step_wall,
        "monitor_call_cpu_s": call_cpu,
        "monitor_call_wall_s": call_wall,
        "monitor_call_fraction_of_step_cpu": call_cpu / step_cpu,
        "monitor_call_fraction_of_step_wall": call_wall / step_wall,
        "run_every_step_overhead_fraction_cpu": median(every_step, 0) / step_cpu - 1,
        "run_every_20_steps_overhead_fraction_cpu": median(every_20, 0) / step_cpu - 1,
        "run_every_step_overhead_fraction_wall": median(every_step, 1) / step_wall - 1,
        "run_every_20_steps_overhead_fraction_wall": median(every_20, 1) / step_wall - 1,
        "cpu_wall_s_per_step_repeats": {
            "plain": plain,
            "every_step": every_step,
            "every_20_steps": every_20,
        },
        "target_fraction": 0.05,
    }
    (out_dir / "early_warning_overhead.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from run import run_as_script

    run_as_script(main)
