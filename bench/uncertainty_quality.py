"""Quality of the ensemble-free uncertainty against a 5-model ensemble, on structures further
from the training set than the calibration frames (issue 16: u ranks the force errors at
least as well as a 5-model ensemble; its 95 % intervals cover 90–98 % of the test errors).

Two sets of structures, one measurement:

- rattled ethanol (``python bench/uncertainty_quality.py``): ethanol labelled with GFN2-xTB,
  100 structures rattled by 0.05 Å (training 70, validation 30) and 40 "hot" test structures
  rattled by 0.15 Å. Five small PaiNN models (16 features, 2 interactions, 60 epochs), seeds
  0–4 (the seed draws the split and the initial weights, so the members also see different
  splits of the same 100 frames). Results ``uncertainty_quality.json``, plots
  ``docs/images/uncertainty_quality_<kind>.png`` (beside the JSON from ``bench/run.py``).
- frames of MD (``--data data.db --hot hot.db --name alanine --work DIR``, e.g. the two
  databases of ``bench/alanine_al.py``): the members are trained as that experiment trains
  its starting model (default PaiNN, 16 training and 20 validation frames of ``data.db``, 200
  epochs), seeds 0–4 on seed 0's split, so they differ in initial weights and batch order
  only and none has seen model 0's validation frames, on which the ensemble is calibrated.
  Test sets: every frame of ``hot.db`` (MD at a higher temperature) and the frames of
  ``data.db`` that no member trained or validated on. Results
  ``uncertainty_quality_<name>.json``, plots
  ``docs/images/uncertainty_quality_<name>_<test set>_<kind>.png``; the members' training
  resumes in ``--work``.

Model 0 gets the gradient-feature uncertainty (sketched, 512 projections; and last-layer),
calibrated (conformal, α = 0.05) on its validation frames; the ensemble's spread is calibrated
on the same frames. Reported per test set, per structure (u against |ΔE|/N) and per atom (u
against ‖ΔF_i‖/√3): the Spearman rank correlation between u and the error and the coverage of
the 95 % interval. The ensemble is judged against the error of its mean, as it is used.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from machine import machine_info
from scipy.stats import spearmanr

from stablemd.core.runtime import tune_memory_allocator
from stablemd.data.database import read_frames, write_frames
from stablemd.data.frames import FrameSet
from stablemd.data.splits import Split, split_indices
from stablemd.explore.uncertainty.calibration import calibration_factor, interval_factor
from stablemd.explore.uncertainty.ensemble import ensemble_predict
from stablemd.explore.uncertainty.estimator import model_uncertainty
from stablemd.explore.uncertainty.evaluation import (
    calibration_metrics,
    interval_metrics,
    plot_calibration,
)
from stablemd.explore.uncertainty.fit import UncertaintyErrors
from stablemd.explore.uncertainty.workflow import fit_model_uncertainty
from stablemd.models.registry import load_potential
from stablemd.oracles import get_oracle
from stablemd.systems import get_system
from stablemd.training.config import TrainConfig
from stablemd.training.workflow import locate_training_frames, train_from_database

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = 5
KINDS = ("sketched", "last-layer")
#: Conformal calibration of the ensemble, as ``uncertainty fit`` calibrates by default.
ALPHA = 0.05
#: Training and validation frames of the MD mode: bench/alanine_al.py's starting model.
MD_SPLIT = (16, 20)
MD_EPOCHS = 200
#: Resamples of the test frames for the intervals of the per-atom rank correlation.
BOOTSTRAP = 2000
#: What each uncertainty is called in the plots' titles.
TITLES = {
    "sketched": "gradient features, sketched",
    "last-layer": "gradient features, last layer",
    "ensemble": "spread of a 5-model ensemble",
}


class TestSet(NamedTuple):
    frames: FrameSet
    stem: str  # the plots are <stem>_<kind>.png
    label: str  # the plots' titles


def labelled(n: int, scale: float, seed: int):
    rng = np.random.default_rng(seed)
    oracle = get_oracle("xtb")
    base = get_system("ethanol").atoms
    frames = []
    for _ in range(n):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
        atoms.calc = oracle
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


def train_members(
    data: Path, n_train: int, n_val: int, config: TrainConfig, work: Path, split: Split | None
) -> list[Path]:
    """Members trained with seeds 0…MEMBERS−1 (on ``split`` when given, else each on its seed's
    split); a rerun continues or reuses their runs in ``work``."""
    paths = []
    for seed in range(MEMBERS):
        member = TrainConfig(**{**config.model_dump(), "seed": seed})
        path = work / f"m{seed}.pt"
        train_from_database(data, n_train, n_val, member, path, progress=False, split=split)
        paths.append(path)
    return paths


def ensemble_errors(members, frames: FrameSet) -> UncertaintyErrors:
    """The ensemble's raw spreads and the errors of its mean on ``frames``."""
    parts = {"atomic": [], "forces": [], "total": [], "energy": []}
    for batch in frames.batches(16):
        out = ensemble_predict(members, batch)
        n = batch.atoms_per_system.double()
        parts["total"].append(out["uncertainty"])
        parts["energy"].append((out["energy"] - batch.energy.double()).abs() / n)
        parts["atomic"].append(out["atomic_uncertainty"])
        error = out["forces"] - batch.forces.double()
        parts["forces"].append(error.pow(2).mean(1).sqrt())
    return UncertaintyErrors(*(torch.cat(v) for v in parts.values()))


def calibrated(validation: UncertaintyErrors, test: UncertaintyErrors) -> UncertaintyErrors:
    """``test`` with its spreads scaled by the conformal factors fitted on ``validation``."""
    atomic = calibration_factor(validation.force_errors, validation.atomic, "conformal", ALPHA)
    total = calibration_factor(validation.energy_errors, validation.total, "conformal", ALPHA)
    return UncertaintyErrors(
        atomic * test.atomic, test.force_errors, total * test.total, test.energy_errors
    )


def spearman_intervals(values: dict[str, UncertaintyErrors], n_atoms: torch.Tensor) -> dict:
    """95 % bootstrap intervals of each uncertainty's per-atom Spearman ρ (u against the force
    error) and of its difference from the ensemble's, resampling whole frames (the atoms of a
    frame are not independent), the same resamples for every uncertainty."""
    rng = np.random.default_rng(0)
    counts = n_atoms.numpy()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    draws: dict[str, list[float]] = {name: [] for name in values}
    for _ in range(BOOTSTRAP):
        chosen = rng.integers(0, len(counts), len(counts))
        atoms = np.concatenate([np.arange(starts[f], starts[f] + counts[f]) for f in chosen])
        for name, v in values.items():
            draws[name].append(spearmanr(v.atomic[atoms], v.force_errors[atoms]).statistic)
    rho = {name: np.array(d) for name, d in draws.items()}
    ensemble = rho.pop("ensemble_of_5")
    return {
        "forces_per_atom_spearman_95": {
            "ensemble_of_5": _interval(ensemble),
            **{n: _interval(r) for n, r in rho.items()},
        },
        "minus_ensemble_95": {n: _interval(r - ensemble) for n, r in rho.items()},
        "resamples": BOOTSTRAP,
    }


def _interval(draws: np.ndarray) -> list[float]:
    return [float(q) for q in np.percentile(draws, [2.5, 97.5])]


def evaluate(
    paths: list[Path], data: Path, tests: dict, work: Path, images: Path
) -> tuple[dict, dict]:
    """Model 0's gradient-feature uncertainties and the ensemble's spread on each test set
    (``tests``: name → :class:`TestSet`); the metrics and the wall times (s)."""
    results, walls = {}, {}
    values = {name: {} for name in tests}  # test → uncertainty → calibrated values
    for kind in KINDS:
        start = time.perf_counter()
        out = work / f"m0-{kind}.pt"
        fit_model_uncertainty(paths[0], data, out, kind=kind)
        potential = load_potential(out)
        uncertainty = model_uncertainty(potential)
        k = interval_factor(uncertainty.calibration, uncertainty.alpha)
        results[f"gradient_features_{kind}"] = {}
        for name, test in tests.items():
            metrics, found = calibration_metrics(potential, uncertainty, test.frames)
            results[f"gradient_features_{kind}"][name] = metrics
            values[name][f"gradient_features_{kind}"] = found
            title = f"{TITLES[kind]}: {test.label}"
            plot_calibration(found, k, images / f"{test.stem}_{kind}.png", title)
        walls[f"fit_and_evaluate_{kind}"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    members = [load_potential(p) for p in paths]
    frames = read_frames(data)
    located = locate_training_frames(members[0].metadata, data, frames)
    validation = ensemble_errors(members, FrameSet([frames[i] for i in located.val]))
    results["ensemble_of_5"] = {}
    for name, test in tests.items():
        found = calibrated(validation, ensemble_errors(members, test.frames))
        results["ensemble_of_5"][name] = interval_metrics(found, 1.0)
        values[name]["ensemble_of_5"] = found
        title = f"{TITLES['ensemble']}: {test.label}"
        plot_calibration(found, 1.0, images / f"{test.stem}_ensemble.png", title)
    walls["evaluate_ensemble"] = round(time.perf_counter() - start, 1)
    results["bootstrap"] = {
        name: spearman_intervals(values[name], test.frames.n_atoms) for name, test in tests.items()
    }
    return results, walls


def main(out_dir: Path, quick: bool, images: Path | None = None) -> dict:
    """The rattled-ethanol measurement (as ``bench/run.py`` calls it: plots beside the JSON
    unless ``images`` is given)."""
    torch.set_num_threads(int(os.environ.get("STABLEMD_BENCH_THREADS", 1)))
    images = out_dir if images is None else images
    epochs = 5 if quick else 60
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        train_frames, hot = labelled(100, 0.05, 0), labelled(40, 0.15, 1)
        write_frames(work / "ethanol.db", train_frames)
        config = TrainConfig(
            model="painn", max_epochs=epochs, batch_size=8,
            model_options={"n_features": 16, "n_interactions": 2},
        )  # fmt: skip
        paths = train_members(work / "ethanol.db", 70, 30, config, work, split=None)
        label = "ethanol rattled by 0.15 Å"
        tests = {"hot": TestSet(FrameSet(hot, torch.float32), "uncertainty_quality", label)}
        results, _ = evaluate(paths, work / "ethanol.db", tests, work, images)
    result = {
        "benchmark": "uncertainty_quality",
        "quick": quick,
        "machine": machine_info(),
        "system": "ethanol, GFN2-xTB",
        "train_val": [70, 30],
        "hot_test_frames": 40,
        "rattle_A": {"train": 0.05, "hot": 0.15},
        "model": "PaiNN 16 features, 2 interactions",
        "epochs": epochs,
        "results": results,
    }
    (out_dir / "uncertainty_quality.json").write_text(json.dumps(result, indent=1))
    return result


def _describe(frames: list, name: str) -> dict:
    """What a test set is: its frames' system, reference and temperature, its size, a label."""
    info = frames[0].info
    record = {"frames": len(frames), "label": name.replace("_", " ")}
    record |= {k: info.get(k) for k in ("system", "level_of_theory", "temperature_K")}
    if record["temperature_K"] is not None:
        record["label"] = f"{record['temperature_K']:.0f} K MD, {record['label']}"
    record["label"] += f" ({len(frames)} frames)"
    return record


def md_frames(
    data: Path, hot: Path, name: str, work: Path, out_dir: Path, images: Path, quick: bool
) -> dict:
    torch.set_num_threads(int(os.environ.get("STABLEMD_BENCH_THREADS", 1)))
    epochs = 5 if quick else MD_EPOCHS
    frames, hot_frames = read_frames(data), read_frames(hot)
    split = split_indices(len(frames), *MD_SPLIT, seed=0)
    start = time.perf_counter()
    paths = train_members(data, *MD_SPLIT, TrainConfig(max_epochs=epochs), work, split)
    train_wall = round(time.perf_counter() - start, 1)
    used = set()
    for path in paths:
        located = locate_training_frames(load_potential(path).metadata, data, frames)
        used |= set(located.train) | set(located.val)
    held_out = [i for i in range(len(frames)) if i not in used]
    sets = {"hot": hot_frames, "held_out": [frames[i] for i in held_out]}
    described = {k: _describe(v, k) for k, v in sets.items()}
    tests = {
        k: TestSet(FrameSet(v), f"uncertainty_quality_{name}_{k}", described[k]["label"])
        for k, v in sets.items()
    }
    results, walls = evaluate(paths, data, tests, work, images)
    records = [load_potential(p).metadata for p in paths]
    keys = ("epochs", "best_epoch", "train_time_s")
    result = {
        "benchmark": "uncertainty_quality",
        "quick": quick,
        "machine": machine_info(),
        "data": data.name,
        "train_val": list(MD_SPLIT),
        "split": "seed 0's split for every member; the seed draws initial weights, batch order",
        "test_sets": {
            "hot": {"file": hot.name, **described["hot"]},
            "held_out": {"file": data.name, **described["held_out"]},
        },
        "model": "PaiNN, default options",
        "epochs": epochs,
        "members": [
            {
                "seed": r["training"]["config"]["seed"],
                **{k: r["training"][k] for k in keys},
                "validation_forces_rmse_eV_per_A": r["validation"]["forces_eV_per_A"]["rmse"],
            }
            for r in records
        ],
        "wall_s": {"train_members": train_wall, **walls},
        "results": results,
    }
    (out_dir / f"uncertainty_quality_{name}.json").write_text(json.dumps(result, indent=1))
    return result


def command_line() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 epochs: a check of the code")
    parser.add_argument("--data", type=Path, help="MD frames: training, validation, held out")
    parser.add_argument("--hot", type=Path, help="MD frames at a higher temperature: a test set")
    parser.add_argument("--name", default="md", help="names the results and plots of --data")
    parser.add_argument("--work", type=Path, help="with --data: where the members are trained")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    args.out_dir.mkdir(exist_ok=True)
    args.images.mkdir(exist_ok=True)
    if args.data is None:
        return main(args.out_dir, args.quick, args.images)
    if args.hot is None or args.work is None:
        parser.error("--data needs --hot and --work")
    args.work.mkdir(parents=True, exist_ok=True)
    return md_frames(
        args.data, args.hot, args.name, args.work, args.out_dir, args.images, args.quick
    )


if __name__ == "__main__":
    tune_memory_allocator()
    print(json.dumps(command_line(), indent=1))
