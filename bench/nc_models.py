"""Non-conservative forces on xTB ethanol: conservative, direct, both and fine-tuned PaiNN side by
side (issue 17; Bigi, Langer & Ceriotti, "The dark side of the forces", ICML 2025; METHODS.md §3).

Data: 2400 GFN2-xTB ethanol frames at 500 K (4 Langevin trajectories of 3 ps, a frame every
5 fs), made by ``stablemd data generate ethanol --out ethanol-xtb-500K.db --temperature 500
--steps 6000 --every 10 --trajectories 4 --seed 1``. Trajectories 0–2 are the training pool
(500 training and 100 validation frames, random split, seed 0); trajectory 3 is held out.

Models (default PaiNN: 64 features, 3 interactions, cutoff 5 Å; float32; one thread each; the
same wall-time budget, ``--minutes``): ``conservative`` (−∂E/∂r), ``direct`` (direct head on
forces, energy head on energies only), ``both`` (both heads), and ``finetuned``: conservative
fine-tuning of the direct model (``--init direct.pt --forces conservative
--direct-forces-weight 1``, i.e. 0.01 × the default forces weight; ``--finetune-minutes``).

Measurements per model and force scheme (conservative −∂E/∂r, direct head, MTS with M = 8):
held-out force MAE; Jacobian asymmetry λ on 16 held-out frames; closed-loop work around the
relaxed ethanol (the system's xTB geometry); NVE kinetic-temperature drift and drift score
(8 replicas × 5 ps at 300 K from held-out frames, 0.5 fs, after 0.5 ps of CSVR with the same
forces; for ``both`` also MTS with M = 4 and 2); per-element temperatures under CSVR
(τ = 100 fs, 300 K, 8 replicas × 5 ps); FIRE and L-BFGS to fmax 1e-4 eV/Å within 1000 steps
from two held-out frames; and, last, ``stablemd stability`` (16 replicas × 5 ps at 500 K) with
h(r) against the held-out frames.

``--system water`` runs the same campaign on SPC/Fw water (64 molecules, OpenMM) with its own
data, split, model size and run lengths (``CAMPAIGNS["water"]``; docs/nc_results_water.md):
conservative, direct and both heads, no fine-tuning, and SPC/Fw itself through the stability
benchmark for the reference diffusion coefficients; results in ``results/nc_models_water.json``.

Every stage writes ``<work>/stages/<stage>.json`` and is skipped when that file exists, so an
interrupted campaign continues. Several processes may run the script at once: each claims the
next stage whose inputs exist (a lock file per stage), so

    OMP_NUM_THREADS=1 python bench/nc_models.py --work bench/data/nc &   # worker 1
    OMP_NUM_THREADS=1 python bench/nc_models.py --work bench/data/nc &   # worker 2

runs two stages at a time. ``--collect`` gathers the stage files into
``results/nc_models.json`` and draws the figures in ``docs/images/``; ``--stages`` limits a
worker to stages whose name contains one of the given words; ``--until HH:MM`` (UTC) makes a
worker take no new stage after that time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from campaign import Stage, cli, recorded_stages, stability_rows, work_loop  # noqa: E402
from machine import machine_info  # noqa: E402

#: The force schemes measured for each model (MTS: M = 8 inner direct steps).
SCHEMES = {
    "conservative": ("conservative",),
    "direct": ("direct",),
    "both": ("conservative", "direct", "mts8"),
    "finetuned": ("conservative", "direct", "mts8"),
}
#: NVE only: MTS with shorter outer steps, to see whether M = 8 (4 fs) is resonant.
EXTRA_NVE = {"both": ("mts4", "mts2")}
TIMESTEP_FS, MD_T, RECORD_FS = 0.5, 300.0, 8.0
CSVR_TAU_FS = 100.0
EQUILIBRATE_TAU_FS = 20.0
RELAX_STEPS = 1000
SMOKE = bool(os.environ.get("STABLEMD_NC_SMOKE"))  # a few seconds per stage: check the plumbing


@dataclass(frozen=True)
class Campaign:
    """What differs between the systems of the campaign: data, split, model, run lengths."""

    system: str
    data_file: str  # in bench/data unless STABLEMD_NC_DATA names it
    data_note: str
    n_train: int
    n_val: int
    test_trajectory: int
    models: tuple[str, ...]
    elements: tuple[str, ...]
    model_note: str
    md_ps: float  # NVE and CSVR runs
    replicas: int
    n_lambda_frames: int
    relax_frames: tuple[int, ...]  # indices into the held-out trajectory
    stability: dict
    results: str  # file name in bench/results
    image_prefix: str
    train_config: str = ""  # a `stablemd train --config` YAML, when not the defaults
    discard_fs: float = 500.0

    @property
    def data(self) -> Path:
        return Path(os.environ.get("STABLEMD_NC_DATA", HERE / "data" / self.data_file))


CAMPAIGNS = {
    "ethanol": Campaign(
        system="ethanol",
        data_file="ethanol-xtb-500K.db",
        data_note="ethanol-xtb-500K.db (GFN2-xTB, 4 × 3 ps Langevin at 500 K, frame every 5 fs)",
        n_train=500, n_val=100, test_trajectory=3,
        models=("conservative", "direct", "both", "finetuned"),
        elements=("H", "C", "O"),
        model_note="PaiNN defaults (64 features, 3 interactions, cutoff 5 A), float32, one thread",
        md_ps=5.0, replicas=8, n_lambda_frames=16, relax_frames=(0, 300),
        stability={"replicas": 16, "time_ps": 5.0, "temperature": 500.0},
        results="nc_models.json", image_prefix="nc_",
    ),
    "water": Campaign(
        system="water",
        data_file="water-spcfw-300K.db",
        data_note="water-spcfw-300K.db (SPC/Fw via OpenMM, 64 molecules, 3 × 3 ps Langevin at "
                  "300 K, frame every 10 fs)",
        n_train=300, n_val=50, test_trajectory=2,
        models=("conservative", "direct", "both"),
        elements=("H", "O"),
        model_note="PaiNN, 64 features, 2 interactions, cutoff 4.5 A, batch 4, float32, one thread",
        md_ps=2.0, replicas=4, n_lambda_frames=2, relax_frames=(0,),
        stability={"replicas": 4, "time_ps": 2.0, "temperature": 300.0, "timestep": 0.5},
        results="nc_models_water.json", image_prefix="nc_water_",
        train_config="model_options: {n_features: 64, n_interactions: 2, cutoff: 4.5}\n"
                     "batch_size: 4\n",
    ),
}  # fmt: skip
if SMOKE:
    RELAX_STEPS = 20
    CAMPAIGNS = {
        k: replace(c, md_ps=0.1, discard_fs=20.0, n_lambda_frames=2,
                   stability={**c.stability, "replicas": 4, "time_ps": 0.05})
        for k, c in CAMPAIGNS.items()
    }  # fmt: skip
#: The campaign this process runs (``--system``).
C = CAMPAIGNS["ethanol"]


# ----------------------------------------------------------------------------------------------
# Stages


def stage_data(work: Path) -> dict:
    from ase.db import connect

    train, test = work / "train.db", work / "test.db"
    for path in (train, test):
        path.unlink(missing_ok=True)
    counts = {"train_pool": 0, "test": 0}
    src = connect(C.data, use_lock_file=False)
    with connect(train) as a, connect(test) as b:
        for row in src.select():
            held = row.key_value_pairs.get("trajectory") == C.test_trajectory
            (b if held else a).write(row.toatoms(), key_value_pairs=row.key_value_pairs)
            counts["test" if held else "train_pool"] += 1
    return {"source": C.data.name, "frames": counts, "test_trajectory": C.test_trajectory}


def _train_args(work: Path, model: str, minutes: float) -> list:
    out = work / "models" / f"{model}.pt"
    args = [
        "train", "--data", work / "train.db", "--n-train", C.n_train, "--n-val", C.n_val,
        "--out", out, "--run-dir", work / "runs" / model, "--max-time", minutes,
        "--max-epochs", 100000, "--seed", 0, "--no-progress",
    ]  # fmt: skip
    if model == "finetuned":
        args += ["--forces", "conservative", "--init", work / "models" / "direct.pt"]
        args += ["--direct-forces-weight", 1]
    else:
        args += ["--forces", model]
    if C.train_config:
        config = work / "train.yaml"
        config.write_text(C.train_config)
        args += ["--config", config]
    return args


def read_metrics(path: Path) -> list[dict]:
    with open(path) as handle:
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items()}
                for row in csv.DictReader(handle)]  # fmt: skip


def stage_train(work: Path, model: str, minutes: float) -> dict:
    (work / "models").mkdir(exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    args = _train_args(work, model, minutes)
    wall = cli(args, work / "logs" / f"train-{model}.log")
    history = read_metrics(work / "runs" / model / "metrics.csv")
    best = min(history, key=lambda r: r["val_forces_mae_eV_per_A"])
    return {
        "command": "stablemd " + " ".join(str(a).replace(str(work) + "/", "") for a in args),
        "wall_s": wall,
        "epochs": len(history),
        "trained_s": history[-1]["elapsed_s"],
        "best_epoch": int(best["epoch"]),
        "best_val_forces_mae_eV_per_A": best["val_forces_mae_eV_per_A"],
        "history": history,
    }


def load(work: Path, model: str):
    import torch

    from stablemd.models.registry import load_potential

    return load_potential(work / "models" / f"{model}.pt", dtype=torch.float32)


def held_out(work: Path):
    from stablemd.data.database import read_frames

    return read_frames(work / "test.db")


def loop_path(frames):
    """The closed loop of the campaign (1000 points): the relaxed molecule turned once while
    deformed by 0.02 Å; in a water box, the first molecule of the first held-out frame turned
    and deformed in place among the others (the paper's loop)."""
    from ase.io import read

    from stablemd.diagnose.conservation import LoopPath, rotation_deformation_loop

    if C.system != "water":
        molecule = read(ROOT / "src" / "stablemd" / "systems" / "geometries" / f"{C.system}.xyz")
        return rotation_deformation_loop(molecule, n_points=1000)
    box = frames[0]
    if np.linalg.norm(box.positions[1:3] - box.positions[0], axis=1).max() > 1.5:
        raise ValueError("the first water of the first held-out frame is split by the cell")
    one = rotation_deformation_loop(box[:3], n_points=1000)
    positions = np.repeat(box.positions[None], one.n_points, axis=0)
    positions[:, :3] = one.positions
    tangents = np.zeros_like(positions)
    tangents[:, :3] = one.tangents
    return LoopPath(positions=positions, tangents=tangents, structure=box.copy())


def stage_static(work: Path, model: str) -> dict:
    """Held-out errors, λ, closed-loop work and geometry optimisation."""
    from stablemd.data.frames import FrameSet
    from stablemd.diagnose.conservation import (
        closed_loop_work,
        jacobian_asymmetry,
    )
    from stablemd.diagnose.relaxation import relaxation_convergence
    from stablemd.training.metrics import error_metrics

    potential = load(work, model)
    frames = held_out(work)
    kinds = ("conservative",) if model == "conservative" else ("conservative", "direct")
    out: dict = {}
    t = time.perf_counter()
    out["errors"] = error_metrics(
        potential, FrameSet(frames), forces="conservative" if model == "conservative" else "both"
    )
    out["errors_s"] = time.perf_counter() - t
    picks = np.linspace(0, len(frames) - 1, C.n_lambda_frames).round().astype(int)
    path = loop_path(frames)
    for kind in kinds:
        row: dict = {}
        t = time.perf_counter()
        lam = jacobian_asymmetry(potential, [frames[i] for i in picks], kind)
        row["lambda_s"] = time.perf_counter() - t
        row["lambda_overall"] = lam.overall_lambda
        row["lambda_per_structure"] = lam.structure_lambda.tolist()
        row["lambda_atom_mean_by_element"] = {
            str(int(z)): float(lam.atom_lambda[lam.atom_numbers == z].mean())
            for z in np.unique(lam.atom_numbers)
        }
        near = lam.pair_distance < 2.0
        row["lambda_pair_mean_below_2A"] = float(lam.pair_lambda[near].mean())
        row["lambda_pair_mean_above_2A"] = float(lam.pair_lambda[~near].mean())
        t = time.perf_counter()
        loop = closed_loop_work(potential, path, kind)
        row["loop_s"] = time.perf_counter() - t
        for key in ("work_eV", "work_per_atom_eV", "absolute_work_eV", "quadrature_error_eV",
                    "path_length_A"):  # fmt: skip
            row[f"loop_{key}"] = float(getattr(loop, key))
        relax = {}
        for i in C.relax_frames:
            t = time.perf_counter()
            runs = relaxation_convergence(potential, frames[i], kind, max_steps=RELAX_STEPS)
            seconds = time.perf_counter() - t
            relax[str(i)] = {
                name: {
                    "converged": r.converged,
                    "steps": r.steps,
                    "final_fmax_eV_per_A": r.final_fmax_eV_per_A,
                    "min_fmax_eV_per_A": float(np.min(r.fmax_trace_eV_per_A)),
                    "failure": r.failure,
                    "fmax_trace_every10": r.fmax_trace_eV_per_A[::10].tolist(),
                }  # fmt: skip
                for name, r in runs.items()
            }
            relax[str(i)]["wall_s"] = seconds
        row["relaxation"] = relax
        out[kind] = row
        print(f"  {model}/{kind}: λ = {row['lambda_overall']:.4g}, "
              f"W = {row['loop_work_eV']:.3g} eV", flush=True)  # fmt: skip
    return out


def _md_setup(work: Path, model: str, scheme: str, thermostat: str):
    from stablemd.md.settings import MDSettings
    from stablemd.md.starts import initial_state

    potential = load(work, model)
    frames = held_out(work)
    picks = np.linspace(0, len(frames) - 1, C.replicas).round().astype(int)
    state = initial_state([frames[i] for i in picks], C.replicas, MD_T, seed=0)
    mts = int(scheme[3:]) if scheme.startswith("mts") else None
    settings = MDSettings(
        replicas=C.replicas, temperature_K=MD_T, timestep_fs=TIMESTEP_FS, thermostat=thermostat,
        tau_fs=CSVR_TAU_FS, seed=0, forces=None if mts else scheme, mts=mts,
    )  # fmt: skip
    term = settings.force_term(potential, model=f"{model}.pt")
    n_steps = round(C.md_ps * 1000 / settings.step_fs)
    every = max(1, round(RECORD_FS / settings.step_fs))
    return state, settings, term, n_steps, every


def _series(time_fs: np.ndarray, values: np.ndarray, every_fs: float = 40.0) -> dict:
    """Replica-mean series thinned to one point per ``every_fs`` (for plots)."""
    step = max(1, round(every_fs / float(time_fs[1] - time_fs[0])))
    return {"time_fs": time_fs[::step].tolist(), "mean": values[::step].tolist()}


def stage_nve(work: Path, model: str, scheme: str) -> dict:
    from stablemd.diagnose.energy_drift import EnergyRecorder, energy_drift_from_series
    from stablemd.md.runner import run
    from stablemd.monitors.criteria import NonFinite

    state, settings, term, n_steps, every = _md_setup(work, model, scheme, "nve")
    # equilibrate at 300 K with the same forces (CSVR, τ = 20 fs), then NVE from there
    warm = settings.model_copy(update={"thermostat": "csvr", "tau_fs": EQUILIBRATE_TAU_FS})
    n_warm = round(C.discard_fs / settings.step_fs)
    t = time.perf_counter()
    state = run(state, warm.integrator(), term, n_warm, monitors=[NonFinite()],
                progress=False).state  # fmt: skip
    integrator = settings.integrator()
    recorder = EnergyRecorder(integrator, every)
    run(state, integrator, term, n_steps, monitors=[NonFinite(), recorder], progress=False)
    wall = time.perf_counter() - t
    s = recorder.arrays()
    s["time_fs"] = s["time_fs"] - s["time_fs"][0]
    kept = s["active"]
    drift = energy_drift_from_series(
        s["time_fs"], s["conserved"], s["kinetic"], s["temperature"],
        state.atoms_per_system.numpy(), active=kept,
    )  # fmt: skip
    n = C.replicas
    temp = np.where(s["active"], s["temperature"], np.nan)
    return {
        "wall_s": wall,
        "n_steps": n_steps,
        "step_fs": integrator.step_fs,
        "ms_per_inner_step": 1000 * wall / (n_steps * integrator.step_fs / TIMESTEP_FS),
        "equilibration_fs": C.discard_fs,
        "temperature_drift_K_per_ps": drift.temperature_drift_K_per_ps.tolist(),
        "mean_temperature_drift_K_per_ps": drift.mean_temperature_drift_K_per_ps,
        "sem_temperature_drift_K_per_ps": float(
            drift.temperature_drift_K_per_ps.std(ddof=1) / np.sqrt(n)
        ),  # fmt: skip
        "slope_eV_per_atom_per_ps": drift.slope_eV_per_atom_per_ps.tolist(),
        "mean_slope_eV_per_atom_per_ps": drift.mean_slope_eV_per_atom_per_ps,
        "sem_slope_eV_per_atom_per_ps": float(
            drift.slope_eV_per_atom_per_ps.std(ddof=1) / np.sqrt(n)
        ),  # fmt: skip
        "score": drift.score.tolist(),
        "mean_score": drift.mean_score,
        "passed": drift.passed,
        "non_finite": drift.non_finite.tolist(),
        "mean_temperature_K": float(np.nanmean(temp)),
        "first_ps_mean_temperature_K": float(np.nanmean(temp[s["time_fs"] <= 1000])),
        "last_ps_mean_temperature_K": float(
            np.nanmean(temp[s["time_fs"] >= C.md_ps * 1000 - 1000])
        ),
        "temperature_series": _series(s["time_fs"], np.nanmean(temp, axis=1)),
    }


def stage_csvr(work: Path, model: str, scheme: str) -> dict:
    from stablemd.diagnose.energy_drift import thermostat_element_temperatures

    state, settings, term, n_steps, every = _md_setup(work, model, scheme, "csvr")
    integrator = settings.integrator()
    t = time.perf_counter()
    try:
        r = thermostat_element_temperatures(
            term, state, integrator, n_steps, every=every, discard_fs=C.discard_fs
        )
    except Exception as exc:  # a replica turned non-finite: record, do not hide
        return {"wall_s": time.perf_counter() - t, "failure": str(exc)}
    wall = time.perf_counter() - t
    symbols = {1: "H", 6: "C", 8: "O"}
    names = [symbols.get(int(z), str(int(z))) for z in r.elements]
    per_rep = r.mean_per_replica_K
    kept = r.time_fs >= C.discard_fs + r.time_fs[0]
    return {
        "wall_s": wall,
        "n_steps": n_steps,
        "elements": names,
        "mean_K": dict(zip(names, r.mean_K.tolist(), strict=True)),
        "sem_K": dict(
            zip(names, (per_rep.std(0, ddof=1) / np.sqrt(len(per_rep))).tolist(), strict=True)
        ),  # fmt: skip
        "mean_drift_K_per_ps": dict(zip(names, r.mean_drift_K_per_ps.tolist(), strict=True)),
        "mean_per_replica_K": per_rep.tolist(),
        "total_mean_K": float(r.total_temperature_K[kept].mean()),
        "series": {
            name: _series(r.time_fs, r.temperature_K[:, :, k].mean(1), 100.0)
            for k, name in enumerate(names)
        },
    }


def stage_stability(work: Path, model: str, scheme: str) -> dict:
    out = work / "stability" / f"{model}-{scheme}"
    (work / "stability").mkdir(exist_ok=True)
    force = ["--mts", 8] if scheme == "mts8" else ["--forces", scheme]
    args = [
        "stability", "--model", work / "models" / f"{model}.pt", "--system", C.system,
        "--out", out, "--replicas", C.stability["replicas"], "--time-ps", C.stability["time_ps"],
        "--temperature", C.stability["temperature"], "--starts", work / "test.db",
        "--seed", 0, "--no-progress", *force,
    ]  # fmt: skip
    if "timestep" in C.stability:
        args += ["--timestep", C.stability["timestep"]]
    wall = cli(args, work / "logs" / f"stability-{model}-{scheme}.log")
    return {
        "command": "stablemd " + " ".join(str(a).replace(str(work) + "/", "") for a in args),
        "wall_s": wall,
        "rows": stability_rows(out),
    }


def stage_reference(work: Path) -> dict:
    """The reference method itself through the stability benchmark, run like the models (same
    starts, velocities, thermostat, time step and observers): its diffusivities are the
    reference the models' are compared with (the data's Langevin friction would slow them)."""
    from stablemd.data.formats import read_positions
    from stablemd.diagnose.stability.benchmark import StabilitySettings, run_stability
    from stablemd.md.forces import CalculatorForces
    from stablemd.oracles import get_oracle
    from stablemd.systems import get_system

    system = get_system(C.system)
    settings = StabilitySettings(
        replicas=C.stability["replicas"], temperature_K=C.stability["temperature"],
        time_ps=C.stability["time_ps"], timestep_fs=C.stability.get("timestep"), seed=0,
    )  # fmt: skip
    forces = CalculatorForces(get_oracle(system.default_oracle))
    t = time.perf_counter()
    result = run_stability(
        forces, system, read_positions(work / "test.db"), settings,
        work / "stability" / "reference", system.default_oracle, progress=False,
    )  # fmt: skip
    return {
        "oracle": system.default_oracle,
        "wall_s": time.perf_counter() - t,
        "summary": asdict(result.summary),
        "steps_per_s": result.steps_per_s,
        "diffusivity_cm2_per_s": result.diffusivity_cm2_per_s,
    }


def stages(minutes: float, finetune_minutes: float) -> list[Stage]:
    main = tuple(m for m in ("conservative", "direct", "both") if m in C.models)
    out = [Stage("data", (), stage_data)]
    out += [Stage(f"train-{m}", ("data",), stage_train, (m, minutes)) for m in main]
    tuned = ("finetuned",) if "finetuned" in C.models else ()
    if tuned:
        out.append(Stage("train-finetuned", ("train-direct",), stage_train,
                         ("finetuned", finetune_minutes)))  # fmt: skip
    for group in (main, tuned):
        for m in group:
            out.append(Stage(f"static-{m}", (f"train-{m}",), stage_static, (m,)))
        for kind, fn in (("nve", stage_nve), ("csvr", stage_csvr)):
            for m in group:
                for s in SCHEMES[m]:
                    out.append(Stage(f"{kind}-{m}-{s}", (f"train-{m}",), fn, (m, s)))
        for m in group:
            for s in EXTRA_NVE.get(m, ()):
                out.append(Stage(f"nve-{m}-{s}", (f"train-{m}",), stage_nve, (m, s)))
    for m in (*main, *tuned):
        for s in SCHEMES[m]:
            out.append(Stage(f"stability-{m}-{s}", (f"train-{m}",), stage_stability, (m, s)))
    if C.system == "water":  # a cheap reference method: run it for the diffusivities
        out.append(Stage("stability-reference", ("data",), stage_reference))
    return out


# ----------------------------------------------------------------------------------------------
# Collect: JSON summary and figures


def time_to_accuracy(work_results: dict) -> dict | None:
    """Conservative from scratch vs direct pretraining + conservative fine-tuning: training
    time (s, validation included) to reach 2×, 1.5×, 1.2× and 1× the scratch run's best
    validation −∂E/∂r MAE."""
    need = ("train-conservative", "train-direct", "train-finetuned")
    if any(k not in work_results or "history" not in work_results[k] for k in need):
        return None
    scratch = work_results["train-conservative"]["history"]
    pre = work_results["train-direct"]["history"][-1]["elapsed_s"]
    tuned = work_results["train-finetuned"]["history"]
    best = min(r["val_forces_mae_eV_per_A"] for r in scratch)
    rows = []
    for level in (2.0, 1.5, 1.2, 1.0):
        target = level * best

        def first(history, offset=0.0, target=target):
            hit = next((r for r in history if r["val_forces_mae_eV_per_A"] <= target), None)
            return None if hit is None else offset + hit["elapsed_s"]

        a, b = first(scratch), first(tuned, pre)
        rows.append({
            "level": level, "target_eV_per_A": target, "scratch_s": a, "finetune_route_s": b,
            "finetune_only_s": None if b is None else b - pre,
            "ratio_route_over_scratch": None if a is None or b is None else b / a,
        })  # fmt: skip
    return {"scratch_best_eV_per_A": best, "pretraining_s": pre,
            "finetuned_best_eV_per_A": min(r["val_forces_mae_eV_per_A"] for r in tuned),
            "levels": rows}  # fmt: skip


def collect(work: Path, out: Path, images: Path) -> dict:
    results = recorded_stages(work, work / "logs")
    summary = {
        "experiment": f"bench/nc_models.py --system {C.system}",
        "data": C.data_note,
        "split": f"{C.n_train} train + {C.n_val} val from trajectories 0-{C.test_trajectory - 1} "
                 f"(random, seed 0); test: trajectory {C.test_trajectory}",
        "model": C.model_note,
        "md": {"timestep_fs": TIMESTEP_FS, "time_ps": C.md_ps, "temperature_K": MD_T,
               "replicas": C.replicas, "csvr_tau_fs": CSVR_TAU_FS,
               "nve_equilibration": f"{C.discard_fs:g} fs CSVR, tau {EQUILIBRATE_TAU_FS:g} fs, "
                                    "same forces, then NVE",
               "csvr_discarded_fs": C.discard_fs},
        "machine": machine_info(),
        "stages": results,
        "finetune_cost": time_to_accuracy(results),
    }  # fmt: skip
    out.write_text(json.dumps(summary, indent=1))
    print(f"wrote {out.relative_to(ROOT)} ({len(results)} stages)")
    plots(results, images)
    return summary


LABEL = {"conservative": "−∂E/∂r", "direct": "direct", "mts8": "MTS M=8", "mts4": "MTS M=4",
         "mts2": "MTS M=2"}  # fmt: skip
ORDER = [f"{m}-{s}" for m in SCHEMES for s in (*SCHEMES[m], *EXTRA_NVE.get(m, ()))]


def ordered(rows: dict) -> dict:
    return {k: rows[k] for k in sorted(rows, key=lambda k: ORDER.index(k) if k in ORDER else 99)}


def plots(results: dict, images: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images.mkdir(parents=True, exist_ok=True)
    nve = ordered({k[4:]: v for k, v in results.items()
                   if k.startswith("nve-") and "failure" not in v})  # fmt: skip
    if nve:
        fig, ax = plt.subplots(figsize=(7, 4))
        for key, row in nve.items():
            s = row["temperature_series"]
            model, scheme = key.split("-", 1)
            ax.plot(np.array(s["time_fs"]) / 1000, s["mean"],
                    label=f"{model} model, {LABEL[scheme]} "
                          f"(median {np.median(row['temperature_drift_K_per_ps']):+.1f} K/ps)",
                    ls="-" if scheme != "direct" else "--", lw=1)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("time (ps)")
        ax.set_ylabel(f"kinetic temperature, mean of {C.replicas} replicas (K)")
        ax.set_title(f"NVE from held-out {C.system} frames, velocities at {MD_T:g} K")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(images / f"{C.image_prefix}nve_temperature.png", dpi=120)
        plt.close(fig)
    csvr = ordered({k[5:]: v for k, v in results.items()
                    if k.startswith("csvr-") and "failure" not in v})  # fmt: skip
    if csvr:
        keys = list(csvr)
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(C.elements)
        colours = {"H": "C0", "C": "C7", "O": "C3"}
        for e, element in enumerate(C.elements):
            colour = colours.get(element)
            means = [csvr[k]["mean_K"][element] for k in keys]
            errs = [csvr[k]["sem_K"][element] for k in keys]
            ax.bar(np.arange(len(keys)) + (e - (len(C.elements) - 1) / 2) * width, means, width,
                   yerr=errs,
                   color=colour, label=element, capsize=2)  # fmt: skip
        ax.axhline(MD_T, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(keys)))
        ax.set_xticklabels([f"{k.split('-', 1)[0]}\n{LABEL[k.split('-', 1)[1]]}" for k in keys],
                           fontsize=7)  # fmt: skip
        ax.set_ylabel("mean element temperature (K)")
        lo = min(min(v["mean_K"].values()) for v in csvr.values())
        hi = max(v["mean_K"][z] + v["sem_K"][z] for v in csvr.values() for z in v["mean_K"])
        ax.set_ylim(min(lo, MD_T) - 40, max(hi, MD_T) + 20)
        ax.set_title(f"CSVR (τ = {CSVR_TAU_FS:g} fs) at {MD_T:g} K: per-element temperatures")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(images / f"{C.image_prefix}csvr_elements.png", dpi=120)
        plt.close(fig)
    train = {k[6:]: v for k, v in results.items() if k.startswith("train-") and "history" in v}
    if train:
        fig, ax = plt.subplots(figsize=(7, 4))
        offset = train.get("direct", {}).get("history", [{}])[-1].get("elapsed_s", 0.0)
        for model, row in train.items():
            h = row["history"]
            t = np.array([r["elapsed_s"] for r in h]) + (offset if model == "finetuned" else 0)
            ax.plot(t / 60, [r["val_forces_mae_eV_per_A"] for r in h], label=model, lw=1)
            if model in ("both", "finetuned") and h and h[0].get("val_direct_forces_mae_eV_per_A"):
                ax.plot(t / 60, [r["val_direct_forces_mae_eV_per_A"] for r in h], lw=0.8,
                        ls=":", label=f"{model} (direct head)")  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("training wall time, one thread (min; fine-tuning after the direct run)")
        ax.set_ylabel("validation force MAE (eV/Å)")
        ax.set_title("Training curves: MD forces of each model (−∂E/∂r, or direct head)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(images / f"{C.image_prefix}training.png", dpi=120)
        plt.close(fig)


def _f(x, fmt=".3g", missing="—"):
    return missing if x is None else format(x, fmt)


def diffusion_table(stab: list[tuple[str, dict]], reference: dict) -> str:
    """Diffusivities (10⁻⁵ cm²/s) of each stability run against the reference method's."""
    elements = list(reference)
    scaled = lambda d: "—" if d is None else f"{1e5 * d:.2f}"  # noqa: E731
    out = ["| model, scheme | " + " | ".join(f"D_{z} (10⁻⁵ cm²/s)" for z in elements)
           + " | " + " | ".join(f"D_{z} / reference" for z in elements) + " |",
           "| --- " * (2 * len(elements) + 1) + "|",
           "| reference | " + " | ".join(scaled(reference[z]) for z in elements)
           + " |" + " 1 |" * len(elements)]  # fmt: skip
    for key, r in stab:
        if "failure" in r:
            continue
        m, s = key.split("-", 1)
        d = next(iter(r["rows"].values())).get("diffusivity_cm2_per_s") or {}
        ratios = [_f(d.get(z) and d[z] / reference[z], ".2f") for z in elements]
        out.append(f"| {m}, {LABEL[s]} | " + " | ".join(scaled(d.get(z)) for z in elements)
                   + " | " + " | ".join(ratios) + " |")  # fmt: skip
    return "\n".join(out)


def tables(path: Path) -> str:
    """The docs' markdown tables from ``results/nc_models.json``."""
    from ase.data import atomic_numbers

    res = json.loads(path.read_text())["stages"]
    slash = " / ".join(C.elements)
    numbers = [str(atomic_numbers[z]) for z in C.elements]
    out = []
    out.append("| model | epochs | trained (min) | best val MAE of MD forces (eV/Å) |")
    out.append("| --- | --- | --- | --- |")
    for m in C.models:
        r = res.get(f"train-{m}")
        if r and "history" in r:
            out.append(f"| {m} | {r['epochs']} | {r['trained_s'] / 60:.1f} | "
                       f"{r['best_val_forces_mae_eV_per_A']:.4f} |")  # fmt: skip
    out.append("")
    out.append("| model | energy MAE (meV/atom) | −∂E/∂r MAE (meV/Å) | direct-head MAE (meV/Å) "
               f"| −∂E/∂r {slash} | direct {slash} |")  # fmt: skip
    out.append("| --- | --- | --- | --- | --- | --- |")
    for m in C.models:
        r = res.get(f"static-{m}")
        if not r or "errors" not in r:
            continue
        e = r["errors"]
        cons = e.get("forces_eV_per_A", {}).get("mae")
        dire = e.get("direct_forces_eV_per_A", {}).get("mae")
        pc = e.get("forces_per_element_eV_per_A", {})
        pd = e.get("direct_forces_per_element_eV_per_A", {})
        el = lambda d: " / ".join(_f(1000 * d[z]["mae"], ".0f") for z in C.elements) if d else "—"  # noqa: E731
        out.append(f"| {m} | {1000 * e['energy_per_atom_eV']['mae']:.1f} | "
                   f"{_f(cons and 1000 * cons, '.1f')} | {_f(dire and 1000 * dire, '.1f')} | "
                   f"{el(pc)} | {el(pd)} |")  # fmt: skip
    out.append("")
    out.append(f"| model, forces | λ overall | λ per atom {slash} | λ pairs < 2 Å / ≥ 2 Å "
               r"| loop W (eV) | ∮\|dW\| (eV) | quadrature error (eV) |")  # fmt: skip
    out.append("| --- | --- | --- | --- | --- | --- | --- |")
    for m in C.models:
        r = res.get(f"static-{m}")
        for kind in ("conservative", "direct"):
            if not r or kind not in r:
                continue
            k = r[kind]
            a = k["lambda_atom_mean_by_element"]
            out.append(f"| {m}, {LABEL[kind]} | {k['lambda_overall']:.3g} | "
                       f"{' / '.join(_f(a[z], '.3g') for z in numbers)} | "
                       f"{k['lambda_pair_mean_below_2A']:.3g} / "
                       f"{k['lambda_pair_mean_above_2A']:.3g} | "
                       f"{k['loop_work_eV']:.3g} | {k['loop_absolute_work_eV']:.3g} | "
                       f"{k['loop_quadrature_error_eV']:.2g} |")  # fmt: skip
    out.append("")
    out.append("| model, scheme | T drift (K/ps) ± s.e. | median, min–max over replicas (K/ps) "
               "| C slope (meV/atom/ps) ± s.e. | score (mean) | ⟨T⟩ first / last ps (K) "
               "| ms per inner step | wall (s) |")  # fmt: skip
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key in ORDER:
        r = res.get(f"nve-{key}")
        if not r:
            continue
        if "failure" in r:
            out.append(f"| {key} | failed: {r['failure'][:80]} | | | | | |")
            continue
        m, s = key.split("-", 1)
        per = np.array(r["temperature_drift_K_per_ps"])
        out.append(f"| {m}, {LABEL[s]} | {r['mean_temperature_drift_K_per_ps']:+.1f} ± "
                   f"{r['sem_temperature_drift_K_per_ps']:.1f} | {np.median(per):+.1f}, "
                   f"{per.min():+.1f} – {per.max():+.1f} | "
                   f"{1000 * r['mean_slope_eV_per_atom_per_ps']:+.3f} ± "
                   f"{1000 * r['sem_slope_eV_per_atom_per_ps']:.3f} | {r['mean_score']:.2g} | "
                   f"{r['first_ps_mean_temperature_K']:.0f} / "
                   f"{r['last_ps_mean_temperature_K']:.0f} | "
                   f"{r['ms_per_inner_step']:.1f} | {r['wall_s']:.0f} |")  # fmt: skip
    out.append("")
    out.append("| model, scheme | " + " | ".join(f"T_{z} (K)" for z in C.elements)
               + f" | (T_H − T_O)/T | total T (K) | drift {slash} (K/ps) |")  # fmt: skip
    out.append("| --- " * (len(C.elements) + 4) + "|")
    for key in ORDER:
        r = res.get(f"csvr-{key}")
        if not r:
            continue
        m, s = key.split("-", 1)
        if "failure" in r:
            out.append(f"| {m}, {LABEL[s]} | failed: {r['failure'][:80]} | | | | | |")
            continue
        t, e = r["mean_K"], r["sem_K"]
        d = r["mean_drift_K_per_ps"]
        cells = " | ".join(f"{t[z]:.0f} ± {e[z]:.0f}" for z in C.elements)
        out.append(f"| {m}, {LABEL[s]} | {cells} | {(t['H'] - t['O']) / r['total_mean_K']:+.1%} "
                   f"| {r['total_mean_K']:.0f} | "
                   f"{' / '.join(f'{d[z]:+.1f}' for z in C.elements)} |")  # fmt: skip
    out.append("")
    out.append("| model, forces | start frame | FIRE: converged, steps, final fmax (eV/Å) "
               "| L-BFGS: converged, steps, final fmax (eV/Å) |")  # fmt: skip
    out.append("| --- | --- | --- | --- |")
    for m in C.models:
        r = res.get(f"static-{m}")
        for kind in ("conservative", "direct"):
            if not r or kind not in r:
                continue
            for frame, row in r[kind]["relaxation"].items():
                cells = []
                for opt in ("FIRE", "LBFGS"):
                    o = row[opt]
                    cells.append(f"{'yes' if o['converged'] else 'no'}, {o['steps']}, "
                                 f"{o['final_fmax_eV_per_A']:.2g}"
                                 + (f" ({o['failure']})" if o["failure"] else ""))  # fmt: skip
                out.append(f"| {m}, {LABEL[kind]} | {frame} | {cells[0]} | {cells[1]} |")
    out.append("")
    stab = [(k, res[f"stability-{k}"]) for k in ORDER if f"stability-{k}" in res]
    if stab:
        out.append("| model, scheme | stable fraction | median stable time (ps) | h(r) MAE "
                   "| steps/s | wall (s) |")  # fmt: skip
        out.append("| --- | --- | --- | --- | --- | --- |")
        for key, r in stab:
            m, s = key.split("-", 1)
            if "failure" in r:
                out.append(f"| {m}, {LABEL[s]} | failed: {r['failure'][:150]} | | | | |")
                continue
            row = next(iter(r["rows"].values()))
            out.append(f"| {m}, {LABEL[s]} | {_f(row.get('fraction_stable'), '.2f')} | "
                       f"{_f(row.get('median_ps'), '.2f')} | {_f(row.get('h_r_mae'), '.3g')} | "
                       f"{_f(row.get('steps_per_s'), '.0f')} | {r['wall_s']:.0f} |")  # fmt: skip
    reference = res.get("stability-reference", {}).get("diffusivity_cm2_per_s")
    if reference:
        out += ["", diffusion_table(stab, reference)]
    cost = json.loads(path.read_text()).get("finetune_cost")
    if cost:
        out.append("")
        out.append("| target (× scratch best) | target MAE (eV/Å) | scratch (min) "
                   "| direct pretraining + fine-tuning (min) "
                   "| fine-tuning alone (min) |")  # fmt: skip
        out.append("| --- | --- | --- | --- | --- |")
        for row in cost["levels"]:
            mins = lambda x: "not reached" if x is None else f"{x / 60:.1f}"  # noqa: E731
            out.append(f"| {row['level']:g} | {row['target_eV_per_A']:.4f} | "
                       f"{mins(row['scratch_s'])} | {mins(row['finetune_route_s'])} | "
                       f"{mins(row['finetune_only_s'])} |")  # fmt: skip
    return "\n".join(out)


def main(out_dir: Path, quick: bool = False) -> dict:
    """The whole campaign in this process (``bench/run.py``); two processes running the command
    line below share it faster. ``quick``: 1-minute budgets in their own work directory, figures
    beside the JSON instead of in docs/images."""
    work = HERE / "data" / ("nc-quick" if quick else "nc")
    plan = stages(1.0, 0.5) if quick else stages(8.0, 4.0)
    work_loop(work, plan, None, None)
    return collect(work, out_dir / C.results, out_dir if quick else ROOT / "docs" / "images")


def command_line() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--system", choices=sorted(CAMPAIGNS), default="ethanol")
    parser.add_argument("--work", type=Path, default=HERE / "data" / "nc")
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per model")
    parser.add_argument("--finetune-minutes", type=float, default=4.0)
    parser.add_argument("--stages", help="comma-separated words: run matching stages only")
    parser.add_argument("--until", help="HH:MM UTC: take no new stage after this time")
    parser.add_argument("--collect", action="store_true")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--tables", action="store_true", help="print the docs' tables")
    args = parser.parse_args()
    global C
    C = CAMPAIGNS[args.system]
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    plan = stages(args.minutes, args.finetune_minutes)
    if args.list:
        for s in plan:
            done = (work / "stages" / f"{s.name}.json").exists()
            print(f"{'done' if done else '    '}  {s.name}")
        return
    if args.tables:
        print(tables(HERE / "results" / C.results))
        return
    if args.collect:
        collect(work, HERE / "results" / C.results, ROOT / "docs" / "images")
        return
    words = args.stages.split(",") if args.stages else None
    work_loop(work, plan, words, args.until)


if __name__ == "__main__":
    command_line()
