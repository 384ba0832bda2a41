"""Reference-data throughput: frames/s and oracle calls/s of xTB Langevin MD.

For ethanol and aspirin: ``generate_reference_data`` at 500 K (one trajectory, a frame every
10 steps; each MD step is one GFN2-xTB force call), and bare single points on one OpenMP
thread (the oracle's default) and on the OpenMP default thread count.
Run ``python bench/data_throughput.py [--quick]``; writes ``bench/results/data_throughput.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info  # noqa: E402

from stablemd.core.runtime import tune_memory_allocator  # noqa: E402
from stablemd.data.generate import generate_reference_data  # noqa: E402
from stablemd.oracles import get_oracle  # noqa: E402
from stablemd.systems import get_system  # noqa: E402

SYSTEMS = ("ethanol", "aspirin")


def single_points_per_s(name: str, threads: int | None, n_calls: int) -> float:
    """GFN2-xTB energy+force calls per second on thermally displaced structures."""
    atoms = get_system(name).atoms
    atoms.calc = get_oracle("xtb", threads=threads)
    rng = np.random.default_rng(0)
    reference = atoms.positions.copy()
    atoms.get_forces()  # set-up outside the timing
    started = time.perf_counter()
    for _ in range(n_calls):
        atoms.positions = reference + rng.normal(scale=0.05, size=reference.shape)
        atoms.get_forces()
    return n_calls / (time.perf_counter() - started)


def main(out_dir: Path, quick: bool) -> dict:
    n_steps = 40 if quick else 400
    results = {"machine": machine_info(), "quick": quick, "n_steps": n_steps, "every": 10}
    for name in SYSTEMS:
        with tempfile.TemporaryDirectory() as tmp:
            summary = generate_reference_data(
                name, "xtb", 500.0, n_steps, 10, Path(tmp) / "data.db", progress=False
            )
        results[name] = {
            "atoms": len(get_system(name).atoms),
            "frames_per_s": summary["frames_per_s"],
            "md_steps_per_s": summary["md_steps_per_s"],
            "wall_s": summary["wall_s"],
            "single_points_per_s_1_thread": single_points_per_s(name, 1, n_steps // 2),
            "single_points_per_s_openmp_default": single_points_per_s(name, None, n_steps // 2),
        }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "data_throughput.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    tune_memory_allocator()  # as the stablemd command does
    result = main(Path(__file__).resolve().parent / "results", quick="--quick" in sys.argv)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
