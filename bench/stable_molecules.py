"""StABlE on the StABlE paper's MD17 molecules beside aspirin, each from nothing but its SMILES.

For each molecule: ``stablemd systems add NAME --smiles ...`` (RDKit, relaxed with GFN2-xTB);
xTB data at 500 K made as for aspirin (8 Langevin trajectories of 12500 steps, a frame every
10); then ``bench/stable_aspirin.py``'s protocol: a PaiNN baseline on 50 frames (0.25 ps of one
trajectory), StABlE from it with λ = 2 and no new labels, force errors on 1000 frames of
trajectories 5–6, and 64 replicas from held-out starts for 10 ps at 500 K (Nosé–Hoover,
0.5 fs, 0.5 Å bond criterion; h(r) reference: trajectories 0–4 without labels), one
``stablemd stability`` per model so that the baseline's runs while StABlE trains. Aspirin's
30 ps run of the same protocol is cut at 10 ps to stand beside them. Every stage
runs as a ``stablemd`` command on one thread; its wall time is kept.

The stored systems go to ``WORK/config`` (``XDG_CONFIG_HOME``), not the user's configuration.
Naphthalene's 50-frame baseline left StABlE nothing to fix, so naphthalene is run again with
baselines on fewer frames of the same data (``RUNS``).

``python bench/stable_molecules.py collect [RUN ...]`` rewrites the named runs' entries (default:
all) of ``stable_molecules.json`` from what their stages wrote and keeps the others, so a run
measured in another session stays; ``python bench/stable_molecules.py RUN [STEP]`` runs one
(resumable; run them in parallel processes once a molecule's data exist, since its runs
share them), or one step of it (``prepare``, then
``stability baseline`` beside ``stable``, then ``stability stable``); without argument, runs
what is missing and writes ``stable_molecules.json``. Working directory: STABLEMD_BENCH_WORK
(default ``bench/data/stable-molecules``), one subdirectory per molecule (its system and data)
and per run.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import stable_aspirin  # noqa: E402
import stages  # noqa: E402
from machine import machine_info  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from stablemd.diagnose.stability.report import summarize, survival_curve  # noqa: E402

SMILES = {"naphthalene": "c1ccc2ccccc2c1", "salicylic-acid": "OC(=O)c1ccccc1O"}


@dataclass(frozen=True)
class Run:
    """A baseline of ``molecule`` on the first ``n_train`` frames of one trajectory, StABlE from it
    and the stability of both."""

    molecule: str
    n_train: int = 50


RUNS = {
    "salicylic-acid": Run("salicylic-acid"),
    "naphthalene": Run("naphthalene"),
    "naphthalene-20-frames": Run("naphthalene", 20),
    "naphthalene-10-frames": Run("naphthalene", 10),
}
DATA = ("--oracle", "xtb", "--temperature", "500", "--steps", "12500", "--every", "10",
        "--trajectories", "8", "--seed", "1")  # fmt: skip
#: bench/stable_aspirin.py's run of the same protocol (baseline, StABlE with λ = 2).
ASPIRIN = HERE / "results" / "stable_aspirin_500K_summary.json"
IMAGE = HERE.parent / "docs" / "images" / "stable_molecules.png"
STABILITY_PS = 10.0
WORK = Path(os.environ.get("STABLEMD_BENCH_WORK", HERE / "data" / "stable-molecules"))


def run_all(name: str) -> None:
    prepare(name)
    stability(name, "baseline")
    stable(name)
    stability(name, "stable")


def data_path(molecule: str) -> Path:
    return WORK / molecule / f"{molecule}-xtb-500K.db"


def prepare(name: str) -> None:
    """The stored system and its data (shared by the molecule's runs), the run's baseline and
    its frame files."""
    os.environ["XDG_CONFIG_HOME"] = str(WORK / "config")  # inherited by every stage
    molecule, n_train = RUNS[name].molecule, RUNS[name].n_train
    home, work, data = WORK / molecule, WORK / name, data_path(molecule)
    work.mkdir(parents=True, exist_ok=True)
    home.mkdir(exist_ok=True)
    stored = WORK / "config" / "stablemd" / "systems" / f"{molecule}.extxyz"
    smiles = SMILES[molecule]
    stages.timed(home, "systems_add", stored, "systems", "add", molecule, "--smiles", smiles)
    stages.timed(
        home, "data_generate", data, "data", "generate", molecule, *DATA, "--out", str(data)
    )
    (work / "painn-small.yaml").write_text(stable_aspirin.MODEL_CONFIG)
    stages.train(work, data, "baseline", n_train, 50, 8)
    stable_aspirin.split_files(work, data)


def stable(name: str) -> None:
    """StABlE from the baseline (``bench/stable_aspirin.py``'s settings)."""
    molecule = RUNS[name].molecule
    stable_aspirin.stable_train(WORK / name, data_path(molecule), "stable", "", system=molecule)


def stability(name: str, model: str) -> dict:
    """64 replicas of ``model`` (baseline or stable) of run ``name`` at 500 K."""
    work = WORK / name
    return stages.stability(
        work, [model], f"stability-500K-{model}", "--system", RUNS[name].molecule,
        "--replicas", "64", "--temperature", "500", "--time-ps", str(STABILITY_PS),
        "--starts", str(work / "starts64.db"), "--reference", str(work / "reference-sim.db"),
    )  # fmt: skip


def run_result(name: str) -> dict:
    """What the run's stages wrote (a stage not run yet is left out): models, their test
    errors and stability, wall times (those of the molecule's shared stages too), and the
    StABlE loop's phases."""
    work, molecule = WORK / name, RUNS[name].molecule
    models = [m for m in ("baseline", "stable") if (work / f"{m}.pt").is_file()]
    rows = {m: stages.model_row(work, m) for m in models}
    runs = {
        m: stages.read_stability(work, [m], f"stability-500K-{m}")[m]
        for m in models
        if (work / f"stability-500K-{m}" / "summary.json").is_file()
    }
    return {
        "molecule": molecule,
        "smiles": SMILES[molecule],
        "stage_wall_time_s": {
            **json.loads((WORK / molecule / "timings.json").read_text()),
            "train_baseline": rows["baseline"]["train_time_s"],
            "stable_train": rows.get("stable", {}).get("stable_time_s"),
            **{f"stability_{m}": row["wall_time_s"] for m, row in runs.items()},
        },
        "models": rows,
        "stable_loop": stable_loop(work / "stable_run" / "log.csv"),
        "stability_500K": runs,
    }


def stable_loop(log: Path) -> dict:
    """Epochs per phase of a StABlE run (finished or not), the MD it ran and the largest
    fraction of its replicas it saw unstable."""
    rows = list(csv.DictReader(log.open())) if log.is_file() else []
    phases = [row["phase"] for row in rows]
    return {
        "epochs": len(rows),
        "learning_epochs": phases.count("learning"),
        "simulation_epochs": phases.count("simulation"),
        "simulated_ps_per_replica": float(rows[-1]["simulated_ps"]) if rows else 0.0,
        "largest_unstable_fraction": max(
            (float(row["unstable_fraction"]) for row in rows), default=None
        ),
    }


def figure(runs: dict, path: Path) -> None:
    """Fraction of the 64 replicas still stable against time, baseline and StABlE, per run."""
    aspirin = json.loads(ASPIRIN.read_text())
    cut = {  # failures after STABILITY_PS count as stable, as in a run that long
        label: {"stable_times_ps": [t if t is not None and t <= STABILITY_PS else None
                                    for t in aspirin[key]["stable_times_ps"]]}
        for label, key in (("baseline", "baseline"), ("stable", "stable-lambda2"))
    }  # fmt: skip
    panels = {"aspirin, 50 frames": cut} | {
        f"{row['molecule']}, {row['models']['baseline']['n_train']} frames": row["stability_500K"]
        for row in runs.values()
    }
    labels = {"baseline": "baseline", "stable": "StABlE"}
    fig = Figure(figsize=(3.5 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), sharey=True)
    for ax, (name, rows) in zip(axes, panels.items(), strict=True):
        for label, row in rows.items():
            summary = summarize(row["stable_times_ps"], STABILITY_PS)
            times, unstable = survival_curve(summary)
            ax.step(times, 1 - unstable, where="post",
                    label=f"{labels[label]} (median {summary.median_text} ps)")  # fmt: skip
        ax.set(xlabel="time (ps)", ylim=(0, 1.02))
        ax.set_title(f"{name}, 500 K", fontsize=10)
        ax.legend(frameon=False, fontsize=8)
    fig.axes[0].set_ylabel("replicas still stable")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(out_dir: Path, quick: bool = False) -> dict:
    if quick:
        return {"skipped": "about an hour per molecule; run it without --quick"}
    started = time.perf_counter()
    for name in RUNS:
        run_all(name)
    return collect(out_dir, started)


def collect(out_dir: Path, started: float, names: list[str] | None = None) -> dict:
    """``stable_molecules.json`` and the figure: the entries of runs ``names`` (default: all)
    from what their stages wrote, the others as the file had them."""
    os.environ["XDG_CONFIG_HOME"] = str(WORK / "config")
    path = out_dir / "stable_molecules.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() else {}
    runs |= {name: run_result(name) for name in names or RUNS}
    result = {
        "machine": machine_info(),
        "runs": {name: runs[name] for name in RUNS if name in runs},
    }
    figure(result["runs"], IMAGE)
    return stages.finish(out_dir, "stable_molecules", result, started)


if __name__ == "__main__":
    if sys.argv[1:2] == ["collect"]:
        collect(HERE / "results", time.perf_counter(), sys.argv[2:])
    elif len(sys.argv) == 2:
        run_all(sys.argv[1])
    elif len(sys.argv) > 2:
        os.environ["XDG_CONFIG_HOME"] = str(WORK / "config")
        {"prepare": prepare, "stability": stability, "stable": stable}[sys.argv[2]](
            sys.argv[1], *sys.argv[3:]
        )
    else:
        main(HERE / "results")
