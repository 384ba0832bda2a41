"""Every resumable command, killed with SIGKILL at random moments and rerun, ends with the result
of a run that was never interrupted: the same frames, weights, metrics, stable times and
trajectories, to the last bit.

Each command runs in a subprocess of the command line. The uninterrupted run gives the reference
and its duration W (from the end of the imports to its exit); then the same command is started
again into another output ``KILLS`` times, each time killed after a random fraction of W drawn
from a seeded generator (or left to finish, when a resumed run needs less than that), and
finally run to its end. ``STABLEMD_KILL_SEED=n`` draws other kill times, to explore. The cases
are tiny: ethanol, at most 200 MD steps per run, an 8-feature PaiNN; the module takes 1–2 min.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import stablemd
from stablemd.data.database import read_frames
from stablemd.models.painn import PaiNN
from stablemd.models.registry import load_potential, save_potential
from stablemd.monitors.trajectory import read_replica

pytestmark = pytest.mark.slow

#: Kills per command before the run that is let finish.
KILLS = 3
#: Longer than any of these runs takes: a rerun that waits for ever fails instead.
TIMEOUT_S = 180
SRC = Path(stablemd.__file__).resolve().parents[1]
#: Tiny systems gain nothing from threads; on a busy machine idle OpenMP threads that spin
#: waiting for work made these runs 2-3x slower.
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
#: The command line, with a mark on stderr once the imports are done (kills are timed from it).
CLI = (
    "import sys; from stablemd.cli.main import main; "
    "print('imported', file=sys.stderr, flush=True); main()"
)


def _start(args: list) -> subprocess.Popen:
    """Start ``stablemd args`` and wait until it has imported everything it needs to run."""
    env = {**os.environ, **SINGLE_THREAD, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen(
        [sys.executable, "-c", CLI, *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    before = []
    for line in process.stderr:
        if line.strip() == "imported":
            return process
        before.append(line)
    process.wait()
    raise AssertionError(f"stablemd {args} did not start: {''.join(before)}")


def _finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, err


def run_uninterrupted(args: list) -> float:
    """Run ``stablemd args`` to its end; its duration (s) after the imports."""
    process = _start(args)
    started = time.perf_counter()
    _finish(process)
    return time.perf_counter() - started


def run_with_kills(
    args: list, duration_s: float, seed: int, written_last: Path | None = None
) -> list[str]:
    """Kill ``stablemd args`` ``KILLS`` times at random fractions of ``duration_s``, rerunning it
    each time, then let it finish. Returns what happened to each attempt.

    ``written_last`` is an output the command writes last and refuses to replace: once it exists
    (the run finished, or was killed between writing it and exiting) the run is complete and
    the same command is not repeated.
    """
    rng = np.random.default_rng([seed, int(os.environ.get("STABLEMD_KILL_SEED", 0))])
    outcomes = [f"uninterrupted: {duration_s:.2f} s"]
    for _ in range(KILLS):
        if written_last is not None and written_last.exists():
            return [*outcomes, f"{written_last.name} written: the run is complete"]
        delay = rng.uniform(0.1, 0.7) * duration_s
        process = _start(args)
        started = time.perf_counter()
        while process.poll() is None and time.perf_counter() - started < delay:
            time.sleep(0.01)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        _, err = process.communicate(timeout=TIMEOUT_S)
        killed = process.returncode == -signal.SIGKILL
        assert killed or process.returncode == 0, err
        took = time.perf_counter() - started
        outcomes.append(f"killed after {delay:.2f} s" if killed else f"finished in {took:.2f} s")
    if written_last is None or not written_last.exists():
        _finish(_start(args))
    return outcomes


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kill")


def _generate_args(out: Path) -> list:
    return ["data", "generate", "ethanol", "--out", out, "--steps", 200, "--every", 10,
            "--trajectories", 2, "--seed", 3, "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def generated(work):
    """Reference data: 2 × 20 xTB frames of ethanol, and the time it took."""
    out = work / "reference.db"
    return out, run_uninterrupted(_generate_args(out))


def test_data_generate(generated, work):
    reference, duration = generated
    out = work / "killed.db"
    print(run_with_kills(_generate_args(out), duration, seed=1))
    expected, got = read_frames(reference), read_frames(out)
    assert len(got) == len(expected) == 40
    for a, b in zip(got, expected, strict=True):
        assert a.info == b.info
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.get_momenta(), b.get_momenta())
        np.testing.assert_array_equal(a.get_forces(), b.get_forces())
        assert a.get_potential_energy() == b.get_potential_energy()


def _train_args(work: Path, data: Path, out: Path) -> list:
    config = work / "train.yaml"
    config.write_text(
        "model_options: {n_features: 8, n_interactions: 1}\nbatch_size: 4\n"
        "checkpoint_every_seconds: 0.05\n"
    )
    return ["train", "--data", data, "--n-train", 16, "--n-val", 6, "--out", out,
            "--config", config, "--max-epochs", 3, "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(generated, work):
    out = work / "reference.pt"
    return out, run_uninterrupted(_train_args(work, generated[0], out))


def _metrics(path: Path) -> list[dict]:
    with path.open() as handle:
        return [
            {k: float(v) for k, v in row.items() if k != "elapsed_s"}
            for row in csv.DictReader(handle)
        ]


def _assert_same_weights(a: Path, b: Path) -> tuple[dict, dict]:
    first, second = load_potential(a), load_potential(b)
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key
    return first.metadata, second.metadata


def test_train(generated, trained, work):
    reference, duration = trained
    out = work / "killed.pt"
    print(run_with_kills(_train_args(work, generated[0], out), duration, seed=2, written_last=out))
    expected, got = _assert_same_weights(reference, out)
    for key in ("epochs", "best_epoch", "train_indices", "val_indices", "shortest_distances_A"):
        assert got["training"][key] == expected["training"][key], key
    _assert_equal(got["validation"], expected["validation"])
    _assert_equal(
        _metrics(work / "killed_run" / "metrics.csv"),
        _metrics(work / "reference_run" / "metrics.csv"),
    )


def _assert_equal(got, expected, where: str = "") -> None:
    """Equal nested dicts and lists, NaN equal to NaN; ``where`` names the first difference."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), where
        for key in expected:
            _assert_equal(got[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for k, (a, b) in enumerate(zip(got, expected, strict=True)):
            _assert_equal(a, b, f"{where}[{k}]")
    elif isinstance(expected, float) and np.isnan(expected):
        assert isinstance(got, float) and np.isnan(got), where
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


@pytest.fixture(scope="module")
def untrained(work) -> Path:
    """A second model for the stability benchmark: random weights, scaled down."""
    torch.manual_seed(1)
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1)
    model.energy_scaling.scale.fill_(0.1)
    path = work / "untrained.pt"
    save_potential(model, path)
    return path


def _simulate_args(model: Path, out: Path) -> list:
    return ["simulate", "--model", model, "--system", "ethanol", "--out", out, "--replicas", 2,
            "--time-ps", 0.025, "--every", 5, "--checkpoint-every", 5, "--no-progress"]  # fmt: skip


def test_simulate(trained, work):
    reference = work / "simulate-reference"
    duration = run_uninterrupted(_simulate_args(trained[0], reference))
    out = work / "simulate-killed"
    print(run_with_kills(_simulate_args(trained[0], out), duration, seed=3))
    for k in range(2):
        expected = read_replica(reference / "trajectory.h5", k)
        got = read_replica(out / "trajectory.h5", k)
        assert set(got) == set(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value, err_msg=key)


def _stability_args(models: list[Path], out: Path) -> list:
    flags = [item for model in models for item in ("--model", model)]
    return ["stability", *flags, "--system", "ethanol", "--out", out, "--replicas", 2,
            "--time-ps", 0.025, "--check-every", 5, "--no-progress"]  # fmt: skip


def _stability_results(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    kept = {}
    for label, row in summary.items():
        if label == "settings":
            kept[label] = row
            continue
        for key in ("steps_per_s", "atom_steps_per_s", "wall_time_s"):
            row.pop(key, None)
        result = json.loads((out / label / "result.json").read_text())
        kept[label] = {**row, "h_r": result["run"]["h_r"]}
    return kept


def test_stability(trained, untrained, work):
    models = [trained[0], untrained]
    reference = work / "stability-reference"
    duration = run_uninterrupted(_stability_args(models, reference))
    out = work / "stability-killed"
    print(run_with_kills(_stability_args(models, out), duration, seed=4))
    expected, got = _stability_results(reference), _stability_results(out)
    assert set(got) == set(expected) == {"settings", "reference", "untrained"}
    _assert_equal(got, expected)


def _stable_train_args(work: Path, model: Path, data: Path, out: Path) -> list:
    config = work / "stable.yaml"
    config.write_text(
        "replicas: 4\nsteps_per_epoch: 10\nsample_every: 5\ncheck_every: 5\nqm_batch_size: 8\n"
        "max_epochs: 3\nf_max: 0.25\nf_min: 0.0\ncheckpoint_every_seconds: 0.01\n"
    )
    return ["stable-train", "--model", model, "--data", data, "--out", out, "--config", config,
            "--no-progress"]  # fmt: skip


def test_stable_train(generated, trained, work):
    reference = work / "stable-reference.pt"
    args = _stable_train_args(work, trained[0], generated[0], reference)
    duration = run_uninterrupted(args)
    log = _log(work / "stable-reference_run" / "log.csv")
    assert "learning" in [row["phase"] for row in log]  # the case covers a gradient step
    out = work / "stable-killed.pt"
    args = _stable_train_args(work, trained[0], generated[0], out)
    print(run_with_kills(args, duration, seed=5, written_last=out))
    _assert_same_weights(reference, out)
    assert _log(work / "stable-killed_run" / "log.csv") == log


def _log(path: Path) -> list[dict]:
    with path.open() as handle:
        return [
            {k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(handle)
        ]


def _explore_args(model: Path, data: Path, out: Path) -> list:
    return ["explore", "--model", model, "--data", data, "--out", out, "--oracle", "xtb",
            "--budget", 4, "--per-step", 2, "--replicas", 2, "--pool-steps", 60, "--every", 10,
            "--epochs", 2, "--workers", 0, "--no-progress"]  # fmt: skip


def test_explore(generated, trained, work):
    """Killed anywhere (in the pool's MD, in training, between labels, inside the database
    transaction), the explore loop ends with the labels, rows and learning curve of a run never
    interrupted."""
    model = work / "explore-model.pt"
    fit = ["uncertainty", "fit", "--model", trained[0], "--data", generated[0], "--out", model,
           "--calibration", "gaussian", "--projections", 32]  # fmt: skip
    _finish(_start(fit))
    reference, out = work / "explore-reference", work / "explore-killed"
    duration = run_uninterrupted(_explore_args(model, generated[0], reference))
    print(run_with_kills(_explore_args(model, generated[0], out), duration, seed=6))

    def rows(run: Path) -> list:
        return [a for a in read_frames(run / "train.db") if a.info.get("source") == "explore"]

    got, expected = rows(out), rows(reference)
    assert len(got) == len(expected) == 4
    for a, b in zip(got, expected, strict=True):
        assert a.info == b.info
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.get_forces(), b.get_forces())
    curve = json.loads((out / "learning_curve.json").read_text())
    _assert_equal(curve, json.loads((reference / "learning_curve.json").read_text()))
    _assert_same_weights(reference / "model.pt", out / "model.pt")
