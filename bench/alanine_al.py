"""Alanine dipeptide with GFN2-xTB: uncertainty-biased active learning against unbiased active
learning and random selection, at equal labels (issue 16; Zaverkin et al., METHODS.md §2).

Data (``stablemd data generate alanine-dipeptide --oracle xtb``): 100 frames of Langevin MD at
300 K (2000 steps of 0.5 fs, a frame every 20 steps, seed 0) and 50 at 1200 K (1000 steps, a
frame every 20, seed 1, ``hot.db``: a test set only). The starting model: the default PaiNN
trained on 16 frames of the 300 K set and validated on 20 (200 epochs, seed 0; the conformal
calibration at α = 0.05 needs at least 19), its uncertainty fitted with the defaults (sketched
gradient features, conformal calibration); the other 64 frames are the held-out 300 K test set.

Methods (``stablemd explore``, the same options otherwise: 16 labels a step up to a budget of
112, i.e. 16 → 128 training labels; pools of 8 replicas × at most 1000 steps at 300 K, a frame
every 50 steps, stop at an atomic u of 1.5 eV/Å; 100 epochs per step; labels in-process):

- ``biased``: uncertainty-biased MD (τ = 0.25) and max-det selection, the paper's method;
- ``unbiased``: τ = 0, max-det selection;
- ``random``: τ = 0, random selection from the same kind of pool;

each with seeds 0 and 1 (the pools' starts and noise). Per step the learning curve records the
force and energy RMSE on both test sets and the Ramachandran coverage (quadtree, depth 5) of
every label so far. Last, ``stablemd stability`` of each final model and of the starting
model (64 replicas × 5 ps at 500 K, started from frames of ``data.db``), and of the biased
and unbiased models at 800 K.

Stages are shared by workers (``bench/campaign.py``) and every explore run resumes, so

    OMP_NUM_THREADS=1 python bench/alanine_al.py --work bench/data/alanine-al &
    OMP_NUM_THREADS=1 python bench/alanine_al.py --work bench/data/alanine-al &

runs two at a time and continues after an interruption; ``--collect`` writes
``results/alanine_al.json``, ``docs/images/alanine_al.png`` (learning curves and coverage) and
``docs/images/alanine_al_ramachandran_<method>.png`` (seed 0's pools and labels), and prints
the final point of every run as a table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from campaign import (  # noqa: E402
    Stage,
    campaign_arguments,
    cli,
    recorded_stages,
    stability_rows,
    work_loop,
)
from machine import machine_info  # noqa: E402

SYSTEM = "alanine-dipeptide"
N_START, N_VAL, BUDGET, PER_STEP = 16, 20, 112, 16
#: (τ, selection) of each method.
METHODS = {"biased": (0.25, "max-det"), "unbiased": (0.0, "max-det"), "random": (0.0, "random")}
SEEDS = (0, 1)
EXPLORE = ("--replicas", 8, "--pool-steps", 1000, "--every", 50, "--epochs", 100)
STABILITY = ("--replicas", 64, "--time-ps", 5)
#: The issue's temperature, K, and a harsher one for the biased and unbiased models (at 500 K
#: every final model survived).
STABILITY_K, HARSH_K = 500, 800
#: The learning curve's test sets: the 300 K frames no model trains on, and the 1200 K frames.
TESTS = ("held-out", "hot.db")


def _generate(work: Path, name: str, temperature: float, steps: int, seed: int) -> list:
    return [
        "data", "generate", SYSTEM, "--oracle", "xtb", "--out", work / name,
        "--temperature", temperature, "--steps", steps, "--every", 20, "--seed", seed,
    ]  # fmt: skip


def stage_data(work: Path) -> dict:
    walls = {}
    for name, temperature, steps, seed in (("data.db", 300, 2000, 0), ("hot.db", 1200, 1000, 1)):
        walls[name] = cli(_generate(work, name, temperature, steps, seed), work / "data.log")
    return {"wall_s": walls}


def stage_model(work: Path) -> dict:
    bare, model = work / "bare.pt", work / "model.pt"
    wall = cli([
        "train", "--data", work / "data.db", "--n-train", N_START, "--n-val", N_VAL,
        "--max-epochs", 200, "--seed", 0, "--out", bare, "--run-dir", work / "train-run",
        "--no-progress",
    ], work / "model.log")  # fmt: skip
    wall += cli(["uncertainty", "fit", "--model", bare, "--data", work / "data.db", "--out", model],
                work / "model.log")  # fmt: skip
    return {"wall_s": wall}


def _run_dir(work: Path, method: str, seed: int) -> Path:
    return work / "runs" / f"{method}-s{seed}"


def stage_explore(work: Path, method: str, seed: int) -> dict:
    tau, selection = METHODS[method]
    args = [
        "explore", "--model", work / "model.pt", "--data", work / "data.db",
        "--test", work / "hot.db", "--out", _run_dir(work, method, seed), "--oracle", "xtb",
        "--budget", BUDGET, "--per-step", PER_STEP, *EXPLORE, "--tau", tau,
        "--selection", selection, "--seed", seed, "--workers", 0, "--no-progress",
    ]  # fmt: skip
    wall = cli(args, work / f"explore-{method}-s{seed}.log")
    curve = json.loads((_run_dir(work, method, seed) / "learning_curve.json").read_text())
    return {"wall_s": wall, "curve": curve["steps"]}


def stage_stability(work: Path, method: str, seed: int, temperature: int = STABILITY_K) -> dict:
    """The stability benchmark of a run's final model, or with ``method`` "start" of the
    model every run starts from, at ``temperature`` (K)."""
    name = "start" if method == "start" else f"{method}-s{seed}"
    model = work / "model.pt" if method == "start" else _run_dir(work, method, seed) / "model.pt"
    name += "" if temperature == STABILITY_K else f"-{temperature}K"
    out = work / "stability" / name
    args = [
        "stability", "--model", model, "--system", SYSTEM, "--starts", work / "data.db",
        "--out", out, *STABILITY, "--temperature", temperature, "--seed", 0, "--no-progress",
    ]  # fmt: skip
    wall = cli(args, work / f"stability-{name}.log")
    return {"wall_s": wall, "rows": stability_rows(out)}


def stages() -> list[Stage]:
    runs = [(m, s) for s in SEEDS for m in METHODS]
    plan = [Stage("data", (), stage_data), Stage("model", ("data",), stage_model)]
    plan += [Stage(f"explore-{m}-s{s}", ("model",), stage_explore, (m, s)) for m, s in runs]
    plan += [
        Stage(f"stability-{m}-s{s}", (f"explore-{m}-s{s}",), stage_stability, (m, s))
        for m, s in runs
    ]
    plan.append(Stage("stability-start", ("model",), stage_stability, ("start", 0)))
    plan += [
        Stage(f"stability-{m}-s{s}-{HARSH_K}K", (f"explore-{m}-s{s}",), stage_stability,
              (m, s, HARSH_K))
        for s in SEEDS for m in ("biased", "unbiased")
    ]  # fmt: skip
    return plan


def _force_rmse(row: dict, test: str) -> float:
    """The force RMSE (meV/Å) of one learning-curve point on ``test``."""
    return 1000 * row["test"][test]["force_rmse_eV_per_A"]


def _curve_series(curve: list[dict], test: str) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array([row["labels"] for row in curve])
    return labels, np.array([_force_rmse(row, test) for row in curve])


def _stability_columns(record: dict | None) -> dict:
    if not record or "rows" not in record:
        return {}
    (model,) = record["rows"].values()
    return {"median stable ps": model["median_ps"], "stable fraction": model["fraction_stable"]}


def final_rows(results: dict) -> list[dict]:
    """Per explore run: its last learning-curve point (labels, force RMSE on both test sets in
    meV/Å, φ/ψ coverage of its labels in %) and its stability at 500 K (median stable time, ps;
    fraction of replicas stable to the end); first the starting model's stability."""
    rows = [{"method": "start", **_stability_columns(results.get("stability-start"))}]
    for method in METHODS:
        for seed in SEEDS:
            explored = results.get(f"explore-{method}-s{seed}", {})
            if "curve" not in explored:
                continue
            first, last = explored["curve"][0], explored["curve"][-1]
            row = {
                "method": method, "seed": seed, "train+val frames": last["labels"],
                **{f"{test} F RMSE start (meV/Å)": _force_rmse(first, test) for test in TESTS},
                **{f"{test} F RMSE (meV/Å)": _force_rmse(last, test) for test in TESTS},
                "coverage start %": 100 * first["step_metrics"]["labelled"]["coverage"],
                "coverage %": 100 * last["step_metrics"]["labelled"]["coverage"],
            }  # fmt: skip
            row.update(_stability_columns(results.get(f"stability-{method}-s{seed}")))
            harsh = _stability_columns(results.get(f"stability-{method}-s{seed}-{HARSH_K}K"))
            row.update({f"{k} at {HARSH_K} K": v for k, v in harsh.items()})
            rows.append(row)
    return rows


def ramachandran_figures(work: Path, images: Path) -> list[Path]:
    """Per method (seed 0): every pool frame of the run as the sampled states, its labels as
    points, ``alanine_al_ramachandran_<method>.png``."""
    import torch

    from stablemd.analysis.ramachandran import phi_psi, ramachandran_plot
    from stablemd.data.database import read_frames
    from stablemd.explore.active_learning.pool import Pool
    from stablemd.systems import get_system

    system, paths = get_system(SYSTEM), []
    for method in METHODS:
        run = _run_dir(work, method, 0)
        if not (run / "model.pt").is_file():
            continue
        pools = sorted(run.glob("step-*/pool.pt"))
        sampled = [
            c.atoms for path in pools
            for c in Pool.from_dict(torch.load(path, weights_only=True)).candidates
        ]  # fmt: skip
        tau, selection = METHODS[method]
        title = f"{method} (τ = {tau:g}, {selection}), seed 0: {len(pools)} pools and the labels"
        path = images / f"alanine_al_ramachandran_{method}.png"
        ramachandran_plot(
            phi_psi(sampled, system), phi_psi(read_frames(run / "train.db"), system), path, title,
            dpi=100,
        )  # fmt: skip
        paths.append(path)
    return paths


def collect(work: Path, out: Path, image: Path) -> dict:
    results = recorded_stages(work, work)
    summary = {
        "experiment": "bench/alanine_al.py",
        "settings": {"start_labels": N_START, "validation": N_VAL, "budget": BUDGET,
                     "per_step": PER_STEP, "methods": METHODS, "seeds": SEEDS,
                     "explore": [str(a) for a in EXPLORE],
                     "stability": [str(a) for a in STABILITY],
                     "stability_K": STABILITY_K, "harsh_stability_K": HARSH_K},
        "machine": machine_info(),
        "stages": results,
    }  # fmt: skip
    summary["final"] = final_rows(results)
    out.write_text(json.dumps(summary, indent=1))
    plot(results, image)
    ramachandran_figures(work, image.parent)
    return summary


def markdown_table(rows: list[dict]) -> str:
    """The final rows as a Markdown table (numbers rounded for reading)."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "| " + " | ".join("---" for _ in keys) + " |"]
    for row in rows:
        cells = [f"{row[k]:.3g}" if isinstance(row.get(k), float) else str(row.get(k, "–"))
                 for k in keys]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, image: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for k, method in enumerate(METHODS):
        for seed in SEEDS:
            row = results.get(f"explore-{method}-s{seed}", {})
            if "curve" not in row:
                continue
            curve = row["curve"]
            style = {"color": f"C{k}", "ls": "-" if seed == 0 else "--", "marker": "o", "ms": 3}
            label = f"{method}, seed {seed}"
            for ax, test in zip(axes[:2], TESTS, strict=True):
                ax.plot(*_curve_series(curve, test), label=label, **style)
            labels = [r["labels"] for r in curve]
            coverage = [100 * r["step_metrics"]["labelled"]["coverage"] for r in curve]
            axes[2].plot(labels, coverage, label=label, **style)
    axes[0].set(title="300 K held-out frames", ylabel="force RMSE (meV/Å)", yscale="log")
    axes[1].set(title="1200 K frames", ylabel="force RMSE (meV/Å)", yscale="log")
    axes[2].set(title="φ/ψ coverage of the labels", ylabel="quadtree coverage (%)")
    for ax in axes:
        ax.set_xlabel("training + validation labels")
        ax.grid(alpha=0.3, which="both")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(image, dpi=120)
    plt.close(fig)


def command_line() -> None:
    args = campaign_arguments(__doc__.split("\n")[0], HERE / "data" / "alanine-al")
    if args.collect:
        summary = collect(
            args.work, HERE / "results" / "alanine_al.json",
            ROOT / "docs" / "images" / "alanine_al.png",
        )  # fmt: skip
        print(markdown_table(summary["final"]))
        return
    work_loop(args.work, stages(), args.words, args.until)


if __name__ == "__main__":
    command_line()
