"""The quickstart's demonstration over seeds: does StABlE keep more replicas than its baseline?

Runs ``stablemd.quickstart.run_quickstart`` for every seed of each setting, two runs side by
side, each on one thread (``OMP_NUM_THREADS=1``), in ``bench/data/quickstart-seeds/`` (or
STABLEMD_BENCH_WORK). A finished run is read back, not rerun, so an interrupted experiment
continues. Writes, per setting and seed, the share of the 64 replicas stable at the end of the
2 ps run for both models, their medians, the held-out force MAE and the h(r) MAE, and the wall
time of each stage, to ``bench/results/quickstart_seeds.json`` (other settings than the default
pair: ``quickstart_seeds_<settings>.json``).

    python bench/quickstart_seeds.py [--settings default,labels20-lambda2] [--seeds 0,1,2,3,4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import machine_info

HERE = Path(__file__).resolve().parent
#: Settings compared: overrides of :class:`stablemd.quickstart.QuickstartSettings` ("default":
#: the current defaults). Each other setting pins what its name and results assume (frames,
#: split, λ, warm-up: off for those measured before it existed), so a later default does not
#: change what it means.
SETTINGS = {
    "default": {},
    "labels20-lambda2": {
        "n_train": 20,
        "qm_weight": 2.0,
        "split_by": "random",
        "stable_lr_warmup_epochs": 0,
    },
    "labels40-lambda2": {
        "n_train": 40,
        "qm_weight": 2.0,
        "split_by": "random",
        "stable_lr_warmup_epochs": 0,
    },
    "labels20-lambda10": {
        "n_train": 20,
        "qm_weight": 10.0,
        "split_by": "random",
        "stable_lr_warmup_epochs": 0,
    },
    "labels10-lambda2": {
        "n_train": 10,
        "qm_weight": 2.0,
        "split_by": "random",
        "stable_lr_warmup_epochs": 0,
    },
    "labels20-lambda2-600K": {
        "temperature_K": 600.0,
        "n_train": 20,
        "qm_weight": 2.0,
        "split_by": "random",
        "stable_lr_warmup_epochs": 0,
    },
    "consecutive20-lambda2": {
        "n_train": 20,
        "qm_weight": 2.0,
        "split_by": "trajectory",
        "stable_lr_warmup_epochs": 0,
    },
    "fast-700K-labels20": {
        "temperature_K": 700.0,
        "n_train": 20,
        "qm_weight": 2.0,
        "split_by": "random",
        "stable_replicas": 64,
        "stable_steps_per_epoch": 100,
        "stable_epochs": 40,
        "stable_lr_warmup_epochs": 0,
    },
    "fast40-lr1e-3": {
        "n_train": 20,
        "qm_weight": 2.0,
        "split_by": "trajectory",
        "stable_epochs": 40,
        "stable_learning_rate": 0.001,
        "stable_lr_warmup_epochs": 0,
    },
    "fast40-r32-s200-lr1e-3": {
        "n_train": 20,
        "qm_weight": 2.0,
        "split_by": "trajectory",
        "stable_epochs": 40,
        "stable_replicas": 32,
        "stable_steps_per_epoch": 200,
        "stable_learning_rate": 0.001,
        "stable_lr_warmup_epochs": 0,
    },
    "consecutive10-fast40-lr1e-3": {
        "n_train": 10,
        "qm_weight": 2.0,
        "split_by": "trajectory",
        "stable_epochs": 40,
        "stable_learning_rate": 0.001,
        "stable_lr_warmup_epochs": 0,
    },
    "consecutive10-fast40": {
        "n_train": 10,
        "qm_weight": 2.0,
        "split_by": "trajectory",
        "stable_epochs": 40,
        "stable_lr_warmup_epochs": 0,
    },
    "consecutive10-fast40-lr1e-3-warmup5": {
        "n_train": 10,
        "qm_weight": 2.0,
        "split_by": "trajectory",
        "stable_epochs": 40,
        "stable_learning_rate": 0.001,
        "stable_lr_warmup_epochs": 5,
    },
    "consecutive20-fast40-lr1e-3-warmup5": {
        "n_train": 20,
        "qm_weight": 2.0,
        "split_by": "trajectory",
        "stable_epochs": 40,
        "stable_learning_rate": 0.001,
        "stable_lr_warmup_epochs": 5,
    },
    "consecutive20-lambda2-warmup5": {
        "n_train": 20,
        "qm_weight": 2.0,
        "split_by": "trajectory",
        "stable_lr_warmup_epochs": 5,
    },
}
DEFAULT_NAMES = ["default", "labels20-lambda2"]
ONE_RUN = """
import json, sys
from stablemd.core.runtime import tune_memory_allocator
from stablemd.quickstart import QuickstartSettings, run_quickstart
tune_memory_allocator()
settings = QuickstartSettings(**json.loads(sys.argv[2]))
result = run_quickstart(sys.argv[1], settings, progress=False)
row = {}
for label in ("baseline", "stable"):
    summary = result.stability[label]["summary"]
    row[label] = {
        "fraction_stable": summary.fraction_stable, "median_ps": summary.median_ps,
        "h_r_mae": result.stability[label].get("h_r_mae"),
        "force_mae_meV_per_A": 1000 * result.errors[label]["forces_eV_per_A"]["mae"],
        "energy_mae_meV_per_atom": 1000 * result.errors[label]["energy_per_atom_eV"]["mae"],
    }
row["n_train"], row["n_held_out"] = result.n_train, result.n_held_out
row["stage_seconds"] = result.stage_seconds
row["settings"] = json.loads(sys.argv[2])
json.dump(row, open(sys.argv[3], "w"), indent=1)
"""


def run_one(work: Path, name: str, seed: int) -> dict:
    out = work / f"{name}-seed{seed}"
    done = out / "row.json"
    settings = {**SETTINGS[name], "seed": seed}
    if not done.is_file():
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
        with open(out / "log.txt", "a") as log:
            subprocess.run(
                [sys.executable, "-c", ONE_RUN, str(out), json.dumps(settings), str(done)],
                check=True, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
    row = json.loads(done.read_text())
    if row.get("settings") != settings:
        raise SystemExit(f"{out}: made with other settings than {name}'s; remove it to rerun")
    return row


def main(out_dir: Path, quick: bool = False, names=None, seeds=None) -> dict:
    if quick:
        return {"skipped": "about an hour per setting; run it without --quick"}
    names = names or DEFAULT_NAMES
    seeds = seeds or [0, 1, 2, 3, 4]
    work = Path(os.environ.get("STABLEMD_BENCH_WORK", HERE / "data" / "quickstart-seeds"))
    started = time.perf_counter()
    jobs = [(name, seed) for name in names for seed in seeds]
    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(lambda job: run_one(work, *job), jobs))
    table: dict[str, dict] = {name: {} for name in names}
    for (name, seed), row in zip(jobs, rows, strict=True):
        row["gain_points"] = 100 * (
            row["stable"]["fraction_stable"] - row["baseline"]["fraction_stable"]
        )
        table[name][f"seed{seed}"] = row
    for per_seed in table.values():
        gains = [row["gain_points"] for row in per_seed.values()]
        per_seed["min_gain_points"] = min(gains)
        per_seed["mean_gain_points"] = sum(gains) / len(gains)
    result = {
        "benchmark": "quickstart_seeds",
        "description": "stablemd quickstart per seed, one thread per run, two runs at a time: "
        "share of 64 replicas stable for 2 ps (baseline, StABlE), held-out errors",
        "command": f"python bench/quickstart_seeds.py --settings {','.join(names)} "
        f"--seeds {','.join(map(str, seeds))}",
        "machine": machine_info(),
        "settings": {name: SETTINGS[name] for name in names},
        "results": table,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    name = "quickstart_seeds" if names == DEFAULT_NAMES else "quickstart_seeds_" + "+".join(names)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settings", default=",".join(DEFAULT_NAMES))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    args = parser.parse_args()
    out = HERE / "results"
    main(out, names=args.settings.split(","), seeds=[int(s) for s in args.seeds.split(",")])
