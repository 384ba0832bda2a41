"""Cost of the Boltzmann-estimator gradient: one weighted backward pass vs per-sample gradients.

N = 128 aspirin samples (the xTB-relaxed structure with 0.05 Å noise), the built-in PaiNN
(64 features, 3 interactions, as in the aspirin benchmarks), observable h(r). Each path runs in
its own process so that its peak memory is its own: peak resident memory during the call minus
the resident memory before it. The per-sample path is the authors' recipe (batched backward
passes over minibatches of 40 samples, N × n_parameters gradients kept); the one-pass path runs
once on all N frames at a time and once 32 frames per backward pass (the passes add up to the
same gradient, so memory stays bounded). The gradients are saved and compared.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from machine import machine_info
from model_throughput import aspirin_replicas

from stablemd.analysis.structure import distance_histogram_h_r
from stablemd.core.batch import Batch
from stablemd.core.runtime import tune_memory_allocator
from stablemd.fix.stable_training.estimator import boltzmann_gradient, per_sample_gradient
from stablemd.models.registry import build_potential

MODEL = {"n_features": 64, "n_interactions": 3, "cutoff": 5.0}
PATHS = {
    "one_pass": partial(boltzmann_gradient),
    "one_pass_32_frames_per_pass": partial(boltzmann_gradient, frames_per_pass=32),
    "per_sample": partial(per_sample_gradient, samples_per_pass=40),
}


def _rss_mb() -> float:
    """Current resident memory of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 1e6


def measure(path: str, n_samples: int, repeats: int, gradient_file: str) -> dict:
    """Time and peak memory of one gradient path (run in a child process)."""
    tune_memory_allocator()
    torch.manual_seed(0)
    model = build_potential("painn", elements=[1, 6, 8], **MODEL)
    frames = aspirin_replicas(n_samples)
    samples = Batch.from_atoms(frames, dtype=torch.float32)
    positions = torch.as_tensor(np.stack([a.positions for a in frames]))
    _, h = distance_histogram_h_r(positions, r_max=10.0)
    reference = h.mean(0) * 0.9
    groups = torch.arange(n_samples) // 32  # four replicas of 32 samples
    baseline = _rss_mb()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        _, gradient = PATHS[path](model, samples, h, reference, 500.0, groups=groups)
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # kB → MB
    flat = torch.cat([g.reshape(-1) for g in gradient]).double().numpy()
    np.save(gradient_file, flat)
    return {"median_s": statistics.median(times), "times_s": times, "peak_mb": peak - baseline}


def main(out_dir: Path, quick: bool) -> dict:
    n_samples, repeats = (32, 1) if quick else (128, 2)
    result = {"machine": machine_info(), "n_samples": n_samples, "model": MODEL, "paths": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for path in PATHS:
            gradient_file = f"{tmp}/{path}.npy"
            command = [sys.executable, __file__, "--measure", path, str(n_samples),
                       str(repeats), gradient_file]  # fmt: skip
            child = subprocess.run(command, capture_output=True, text=True, check=True)
            result["paths"][path] = json.loads(child.stdout.strip().splitlines()[-1])
        per = np.load(f"{tmp}/per_sample.npy")
        paths = result["paths"]
        for name in PATHS:
            if name == "per_sample":
                continue
            one = np.load(f"{tmp}/{name}.npy")
            paths[name]["relative_difference"] = float(
                np.linalg.norm(one - per) / np.linalg.norm(per)
            )
            paths[name]["speedup"] = paths["per_sample"]["median_s"] / paths[name]["median_s"]
            paths[name]["memory_ratio"] = paths["per_sample"]["peak_mb"] / paths[name]["peak_mb"]
    (out_dir / "estimator_cost.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:  # a child process measuring one path
        path, n, repeats, gradient_file = sys.argv[2:6]
        print(json.dumps(measure(path, int(n), int(repeats), gradient_file)))
    else:
        print(json.dumps(main(Path(__file__).parent / "results", "--quick" in sys.argv), indent=2))
