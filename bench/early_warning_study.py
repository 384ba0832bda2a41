"""Does the CLI-inspired index warn? Ethanol, GFN2-xTB, models trained on 25–200 frames.

Data: ``STABLEMD_ETHANOL_XTB`` (or ``--data``), an xTB ethanol database made by ``stablemd data
generate ethanol --oracle xtb --temperature 500`` (4 trajectories × 3 ps, a frame every 5 fs);
its trajectories calibrate each model's critical level. Working directory: ``STABLEMD_BENCH_WORK``
(default ``bench/data/early-warning-study``); models and runs there resume.

Protocol: PaiNN (32 features, 2 interactions, cutoff 5 Å, float32) trained on ``N_TRAIN`` frames
(random split, seed 0, 50 validation frames, ``TRAIN_MINUTES`` each, latent domain and critical
level stored by ``fit_and_attach`` as ``stablemd train`` does); per model and temperature
(350 / 500 / 700 K) a stability run of ``REPLICAS`` replicas from held-out frames, Nosé–Hoover,
0.5 fs, bond criterion 0.5 Å, ``TIME_PS`` ps, index every 20 steps (grade > 2). Measured:

- ROC AUC of "CLI has passed the critical level by time t" as a predictor of failure within
  (t, t + Δ], Δ = 1 ps, over every replica still stable at t and every t on a 0.05 ps grid with
  t + Δ within the run (a binary score: AUC = (TPR + TNR) / 2); and of the continuous score
  CLI(t) / L(t), the index over the critical level line;
- lead times (failure − crossing) of the failed replicas that crossed first, and how many
  failures were warned; stable replicas that crossed; saturation and survival;
- the paper's claims: the mean flagged fraction CLI(t_end)/t_end per model and temperature.

Writes ``early_warning_study.json`` and ``docs/images/early_warning_study.png``.
Run: ``OMP_NUM_THREADS=1 python bench/run.py early_warning_study``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import machine_info  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

from stablemd.data.database import read_frames  # noqa: E402
from stablemd.diagnose.early_warning.model_file import fit_and_attach  # noqa: E402
from stablemd.diagnose.early_warning.report import plot_cli  # noqa: E402
from stablemd.diagnose.stability.benchmark import StabilitySettings  # noqa: E402
from stablemd.diagnose.stability.compare import compare_models  # noqa: E402
from stablemd.models.registry import load_potential  # noqa: E402
from stablemd.systems import get_system  # noqa: E402
from stablemd.training.config import TrainConfig  # noqa: E402
from stablemd.training.workflow import locate_training_frames, train_from_database  # noqa: E402

N_TRAIN = (25, 50, 100, 200)
N_VAL = 50
TRAIN_MINUTES = 2.5
TEMPERATURES = (350.0, 500.0, 700.0)
REPLICAS = 16
TIME_PS = 5.0
DELTA_PS = 1.0
GRID_PS = 0.05
MODEL = {"n_features": 32, "n_interactions": 2, "cutoff": 5.0}


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC by the rank-sum (Mann–Whitney) formula, ties counted half; None without both
    classes."""
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def samples(record: dict, failures: list, run_ps: float) -> list[tuple[bool, float, bool]]:
    """(crossed by t, CLI(t)/L(t), fails within (t, t + Δ]) for every replica still stable at
    t and every grid time t with t + Δ ≤ the run length."""
    times = np.asarray(record["times_ps"])
    level, calibration = record["critical_level_ps"], record["calibration_ps"]
    out = []
    for values, crossing, failure in zip(
        record["cli_ps"], record["crossing_ps"], failures, strict=True
    ):
        end = failure if failure is not None else run_ps
        for t in np.arange(0.0, run_ps - DELTA_PS + 1e-9, GRID_PS):
            if t >= end:
                break
            cli = float(np.interp(t, times[: len(values)], values))
            ratio = cli / (level * max(1.0, t / calibration))
            crossed = crossing is not None and crossing <= t + 1e-12
            fails = failure is not None and failure <= t + DELTA_PS
            out.append((crossed, ratio, fails))
    return out


def analyse(rows: dict, run_ps: float) -> dict:
    """AUCs, lead times and counts over the (model, temperature) rows given."""
    pooled, leads, counts = [], [], {"failed": 0, "warned": 0, "survivors": 0, "crossed": 0}
    saturated_survived = saturated = 0
    for row in rows.values():
        record, failures = row["early_warning"], row["stable_times_ps"]
        pooled += samples(record, failures, run_ps)
        for failure, lead, crossing, sat in zip(
            failures, record["lead_ps"], record["crossing_ps"], record["saturated"], strict=True
        ):
            if failure is None:
                counts["survivors"] += 1
                counts["crossed"] += crossing is not None
                saturated_survived += sat
            else:
                counts["failed"] += 1
                if lead is not None and lead >= 0:
                    counts["warned"] += 1
                    leads.append(lead)
            saturated += sat
    crossed = np.array([s[0] for s in pooled], dtype=float)
    ratio = np.array([s[1] for s in pooled])
    labels = np.array([s[2] for s in pooled], dtype=bool)
    return {
        "samples": len(pooled),
        "positive_samples": int(labels.sum()),
        "auc_crossed": auc(crossed, labels) if len(pooled) else None,
        "auc_cli_over_level": auc(ratio, labels) if len(pooled) else None,
        "failed": counts["failed"],
        "warned_before_failure": counts["warned"],
        "median_lead_ps": float(np.median(leads)) if leads else None,
        "lead_ps": sorted(round(x, 4) for x in leads),
        "survivors": counts["survivors"],
        "survivors_crossed": counts["crossed"],
        "saturated": saturated,
        "saturated_survived": saturated_survived,
    }


def train_models(work: Path, data: Path) -> dict:
    potentials = {}
    for n in N_TRAIN:
        path = work / f"painn-{n}.pt"
        if not path.is_file():
            config = TrainConfig(model_options=MODEL, max_time_minutes=TRAIN_MINUTES, seed=0,
                                 batch_size=8)  # fmt: skip
            train_from_database(data, n, N_VAL, config, path, progress=False,
                                fit_attachments=fit_and_attach)  # fmt: skip
        potentials[f"n{n}"] = load_potential(path)
    return potentials


def held_out_starts(potentials: dict, data: Path, frames: list) -> list:
    """Frames no model was trained or validated on, evenly spaced."""
    used = set()
    for potential in potentials.values():
        located = locate_training_frames(potential.metadata, data, frames)
        used |= set(located.train) | set(located.val)
    free = [i for i in range(len(frames)) if i not in used]
    chosen = np.linspace(0, len(free) - 1, REPLICAS).round().astype(int)
    return [frames[free[k]] for k in chosen]


def figure(results: dict, example: tuple[dict, list], path: Path) -> None:
    fig = Figure(figsize=(15, 4.2))
    left, middle, right = fig.subplots(1, 3)
    plot_cli(left, *example, title="n = 25 frames, 500 K")
    for temperature in TEMPERATURES:
        key = f"{temperature:g}K"
        per_model = [results["per_temperature_model"][key][f"n{n}"] for n in N_TRAIN]
        aucs = [np.nan if r["auc_crossed"] is None else r["auc_crossed"] for r in per_model]
        middle.plot(N_TRAIN, aucs, "o-", label=key)
        leads = [np.nan if r["median_lead_ps"] is None else r["median_lead_ps"] for r in per_model]
        right.plot(N_TRAIN, leads, "o-", label=key)
    middle.axhline(0.8, color="black", ls="--", lw=1, label="goal 0.8")
    middle.set_ylabel(f"ROC AUC, crossed by t → fails within {DELTA_PS:g} ps")
    right.axhline(1.0, color="black", ls="--", lw=1, label="goal 1 ps")
    right.set_ylabel("median lead time (ps)")
    for ax in (middle, right):
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(N_TRAIN, [str(n) for n in N_TRAIN])
        ax.set_xlabel("training frames")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(out_dir: Path, quick: bool = False) -> dict:
    if quick:
        return {"skipped": "about an hour of work; run it without --quick"}
    data = Path(os.environ.get("STABLEMD_ETHANOL_XTB", HERE / "data" / "ethanol-xtb-500K.db"))
    work = Path(os.environ.get("STABLEMD_BENCH_WORK", HERE / "data" / "early-warning-study"))
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    started = time.perf_counter()
    frames = read_frames(data)
    potentials = train_models(work, data)
    starts = held_out_starts(potentials, data, frames)
    system = get_system("ethanol")
    result = {
        "machine": machine_info(),
        "data": data.name,
        "protocol": {
            "n_train": list(N_TRAIN),
            "n_val": N_VAL,
            "train_minutes": TRAIN_MINUTES,
            "model": MODEL,
            "temperatures_K": list(TEMPERATURES),
            "replicas": REPLICAS,
            "time_ps": TIME_PS,
            "delta_ps": DELTA_PS,
            "grid_ps": GRID_PS,
            "indicator": "grade",
        },  # fmt: skip
        "models": {},
        "per_temperature_model": {},
        "per_temperature": {},
        "per_model": {},
    }
    for label, potential in potentials.items():
        training = potential.metadata["training"]
        result["models"][label] = {
            "n_train": len(training["train_indices"]),
            "validation_force_mae_meV_per_A": 1000
            * potential.metadata["validation"]["forces_eV_per_A"]["mae"],
            "critical_level_ps": potential.attachments["latent_domain"]["critical_levels"]["grade"][
                "level_ps"
            ],
        }
    all_rows = {}
    for temperature in TEMPERATURES:
        settings = StabilitySettings(replicas=REPLICAS, temperature_K=temperature,
                                     time_ps=TIME_PS, seed=0)  # fmt: skip
        rows = compare_models(potentials, system, starts, None, settings,
                              work / f"stability-{temperature:g}K", progress=False)  # fmt: skip
        key = f"{temperature:g}K"
        flat = {
            label: {
                "early_warning": row["early_warning"],
                "stable_times_ps": list(row["summary"].stable_times_ps),
            }
            for label, row in rows.items()
        }
        result["per_temperature_model"][key] = {
            label: {
                **analyse({label: row}, TIME_PS),
                "mean_flagged_fraction": float(
                    np.mean([
                        cli / (t if t is not None else TIME_PS)
                        if (t is None or t > 0) else 0.0
                        for cli, t in zip(row["early_warning"]["final_cli_ps"],
                                          row["stable_times_ps"], strict=True)
                    ])
                ),
            }
            for label, row in flat.items()
        }  # fmt: skip
        result["per_temperature"][key] = analyse(flat, TIME_PS)
        all_rows.update({(label, key): row for label, row in flat.items()})
    for label in potentials:
        chosen = {k: v for k, v in all_rows.items() if k[0] == label}
        result["per_model"][label] = analyse(chosen, TIME_PS)
    result["pooled"] = analyse(all_rows, TIME_PS)
    example = all_rows[("n25", "500K")]
    figure(result, (example["early_warning"], example["stable_times_ps"]),
           HERE.parent / "docs" / "images" / "early_warning_study.png")  # fmt: skip
    result["wall_time_s"] = time.perf_counter() - started
    (out_dir / "early_warning_study.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    from stablemd.core.runtime import tune_memory_allocator

    tune_memory_allocator()
    print(json.dumps(main(HERE / "results")["pooled"], indent=2))
