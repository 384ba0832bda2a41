"""Reference data from Langevin MD driven by an oracle, resumable after any interruption.

With friction 0 the MD is NVE (ASE's Langevin integrator then is velocity Verlet): the
reference trajectories that training on rollouts compares with (``train --dynamic``). Every
frame keeps its velocities (momenta), ``step`` and ``timestep_fs``.

Trajectory ``t`` starts from the system's relaxed structure with Maxwell–Boltzmann velocities
drawn from ``seed`` and ``t`` (centre-of-mass momentum removed, and kept fixed by ASE's
``FixCom``). Every ``every`` steps the state is labelled and written, together with the MD
state (positions, momenta, step) in the database metadata, in one SQLite transaction to
``<out>.partial``. The Langevin noise of each block of ``every`` steps is drawn from a
generator seeded by (seed, trajectory, step), so a resumed run continues the same trajectory.
A block that takes longer than ``checkpoint_seconds`` (a slow oracle) also commits its MD state
and the state of that generator after the step at which the time ran out, so an interruption
loses at most that much work and the resumed run is still the same trajectory.

An oracle that starts its SCF from the previous solution (xTB) gives forces that depend on the
calculations before, within its convergence tolerance, and MD amplifies such differences. So
an oracle with a ``forget_guess()`` method is told to start afresh at the start of every
trajectory and before the step that ends each block: the forces at every committed state are
then a function of its positions alone, and a run resumed from a committed frame continues the
uninterrupted trajectory to the last bit. Resumed inside a block (after a ``checkpoint_seconds``
commit) it differs from it by that tolerance.
On completion ``<out>.partial`` is renamed to ``<out>``. A failed oracle call inside the MD
stops that trajectory (logged, the run goes on); a frame whose labels fail is skipped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from rich.progress import Progress

from stablemd.core.errors import InputError
from stablemd.core.files import check_same_options, partial_path
from stablemd.core.units import FS_IN_ASE_TIME
from stablemd.data.database import connect, open_database
from stablemd.data.fingerprints import labelled_frames_fingerprint
from stablemd.oracles import get_oracle, label, level_of_theory
from stablemd.systems import System, get_system

log = logging.getLogger(__name__)

#: Langevin friction in 1/fs (a 100 fs relaxation time).
FRICTION_PER_FS = 0.01
#: Wall time (s) after which a block of MD steps commits its state before it is labelled.
CHECKPOINT_SECONDS = 120.0


@dataclass
class _Run:
    system: System
    calculator: Calculator
    settings: dict  # what a resumed run must share with the interrupted one
    frame_info: dict  # key-value pairs of every frame (plus trajectory and step)
    checkpoint_seconds: float = CHECKPOINT_SECONDS


def _check_options(
    temperature_K, n_steps, every, n_trajectories, seed, timestep_fs, friction_per_fs
) -> None:
    checks = [
        ("temperature", temperature_K, temperature_K > 0, "must be positive"),
        ("steps", n_steps, n_steps >= 1, "must be positive"),
        ("every", every, 1 <= every <= n_steps, f"must be between 1 and steps ({n_steps})"),
        ("trajectories", n_trajectories, n_trajectories >= 1, "must be positive"),
        ("seed", seed, seed >= 0, "must not be negative"),
        ("timestep", timestep_fs, timestep_fs > 0, "must be positive"),
        ("friction", friction_per_fs, friction_per_fs >= 0, "must not be negative"),
    ]
    for name, value, ok, requirement in checks:
        if not ok:
            raise InputError(f"option {name} = {value} {requirement}")


def _open_run(out: Path, settings: dict):
    """The partial database of this run (new, or an interrupted one with the same settings)."""
    tmp = partial_path(out)
    if not tmp.exists():
        db = connect(tmp)
        db.count()  # creates the tables first: ASE would forget metadata set before that
        db.metadata = {"run": settings, "trajectories": {}}
        return db
    db = open_database(tmp)
    _check_same_settings(tmp, db.metadata.get("run"), settings)
    tmp.with_name(tmp.name + ".lock").unlink(missing_ok=True)  # ASE's, left by older versions
    return db


def _check_same_settings(path: Path, old: dict | None, new: dict) -> None:
    if old is None:
        raise InputError(f"{path} exists and was not made by data generate; use another --out")
    check_same_options(path, old, new)


def _start(system: System, state: dict | None, temperature_K: float, seed: int, trajectory: int):
    atoms = system.atoms.copy()
    if state is None:
        rng = np.random.default_rng([seed, trajectory])
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        Stationary(atoms)
    else:
        atoms.positions = np.asarray(state["positions"])
        atoms.set_momenta(np.asarray(state["momenta"]))
    atoms.set_constraint(FixCom())
    return atoms, 0 if state is None else state["step"]


def _run_trajectory(db, run: _Run, t: int, state: dict | None, advance) -> dict:
    """Continue trajectory ``t`` to the end (or its failure); returns the counts of this call."""
    system, calculator, settings = run.system, run.calculator, run.settings
    seed, every, n_steps = settings["seed"], settings["every"], settings["n_steps"]
    temperature_K = settings["temperature_K"]
    atoms, step = _start(system, state, temperature_K, seed, t)
    atoms.calc = calculator
    dyn = Langevin(
        atoms,
        settings["timestep_fs"] * FS_IN_ASE_TIME,
        temperature_K=temperature_K,
        friction=settings["friction_per_fs"] / FS_IN_ASE_TIME,
        fixcm=False,
    )
    counts = {"new_frames": 0, "skipped_frames": 0, "md_steps": 0}
    states = db.metadata["trajectories"]
    status = "running"
    saved_at = time.perf_counter()
    block = {"start": step, "nsteps": dyn.nsteps}

    def commit_mid_block() -> None:
        """After a step inside a block: commit the MD state once ``checkpoint_seconds`` passed."""
        nonlocal saved_at
        now_step = block["start"] + dyn.nsteps - block["nsteps"]
        if now_step % every == 0 or time.perf_counter() - saved_at < run.checkpoint_seconds:
            return
        if not (np.isfinite(atoms.positions).all() and np.isfinite(atoms.get_momenta()).all()):
            return  # the block ends in a failure that the loop records
        states[str(t)] = {
            "status": "running",
            "step": now_step,
            "positions": atoms.positions.tolist(),
            "momenta": atoms.get_momenta().tolist(),
            "rng": json.dumps(dyn.rng.bit_generator.state),
        }
        with db:
            db.metadata = {"run": settings, "trajectories": states}
        saved_at = time.perf_counter()

    forget_guess = getattr(calculator, "forget_guess", lambda: None)

    def fresh_forces_at_block_ends() -> None:
        """Before the step that ends a block: its forces from the positions alone."""
        if (block["start"] + dyn.nsteps - block["nsteps"]) % every == every - 1:
            forget_guess()

    forget_guess()
    dyn.attach(fresh_forces_at_block_ends, interval=1)
    dyn.attach(commit_mid_block, interval=1)
    rng_state = None if state is None else state.get("rng")
    while status == "running":
        dyn.rng = np.random.default_rng([seed, t, step - step % every])
        if rng_state is not None:  # resumed inside a block: its generator as it was
            dyn.rng.bit_generator.state = json.loads(rng_state)
            rng_state = None
        block.update(start=step, nsteps=dyn.nsteps)
        n_block = every - step % every
        try:
            dyn.run(n_block)
        except InputError:
            raise
        except Exception as exc:  # a failed force call ends this trajectory only
            status = f"failed after step {step}: {type(exc).__name__}: {exc}"
            log.warning("trajectory %d stopped: %s", t, status)
            states[str(t)] = {"status": status, "step": step}
            db.metadata = {"run": settings, "trajectories": states}
            break
        step += n_block
        counts["md_steps"] += n_block
        result = label(atoms, calculator)
        if not result.ok:
            counts["skipped_frames"] += 1
            log.warning("trajectory %d step %d: frame skipped (%s)", t, step, result.error)
        if not (np.isfinite(atoms.positions).all() and np.isfinite(atoms.get_momenta()).all()):
            status = f"failed at step {step}: the MD state is no longer finite"
            log.warning("trajectory %d stopped: %s", t, status)
        elif step + every > n_steps:
            status = "done"
        states[str(t)] = {
            "status": status,
            "step": step,
            "positions": atoms.positions.tolist(),
            "momenta": atoms.get_momenta().tolist(),
        }
        with db:  # the frame and the state to resume from are committed together
            if result.ok:
                frame = result.attach(atoms)
                frame.info = {**run.frame_info, "trajectory": t, "step": step}
                db.write(frame, key_value_pairs=frame.info)
                counts["new_frames"] += 1
            db.metadata = {"run": settings, "trajectories": states}
        saved_at = time.perf_counter()
        advance()
    return counts


def generate_reference_data(
    system: str | System,
    oracle: str | Calculator | None,
    temperature_K: float,
    n_steps: int,
    every: int,
    out_path: str | Path,
    n_trajectories: int = 1,
    seed: int = 0,
    timestep_fs: float | None = None,
    progress: bool = True,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
    friction_per_fs: float = FRICTION_PER_FS,
) -> dict:
    """Run ``n_trajectories`` Langevin trajectories of ``n_steps`` steps at ``temperature_K`` (K)
    with time step ``timestep_fs`` (default: the system's) and friction ``friction_per_fs``
    (1/fs; 0: NVE), labelling every ``every``-th state with ``oracle`` (default: the
    system's) into the ASE database ``out_path``.

    Rerunning the same call continues an interrupted run; a finished one is left as it is. The
    state is committed after every labelled frame and, inside a block of ``every`` steps, at
    least every ``checkpoint_seconds`` of wall time.
    Returns a summary: frames in the file, frames written and skipped by this call, failed
    trajectories, frames/s and MD steps/s (one oracle force call per MD step).
    """
    system = get_system(system) if isinstance(system, str) else system
    oracle = oracle or system.default_oracle
    calculator = get_oracle(oracle) if isinstance(oracle, str) else oracle
    timestep_fs = system.timestep_fs if timestep_fs is None else timestep_fs
    _check_options(
        temperature_K, n_steps, every, n_trajectories, seed, timestep_fs, friction_per_fs
    )
    out = Path(out_path)
    frame_info = {
        "system": system.name,
        "level_of_theory": level_of_theory(calculator),
        "temperature_K": float(temperature_K),
        "timestep_fs": float(timestep_fs),
        "seed": int(seed),
    }
    settings = {
        **frame_info,
        "oracle": oracle if isinstance(oracle, str) else frame_info["level_of_theory"],
        "n_atoms": len(system.atoms),
        # the start structure and cell: a system's parameters (e.g. water's density) change them
        "structure": labelled_frames_fingerprint([system.atoms]),
        "n_steps": int(n_steps),
        "every": int(every),
        "n_trajectories": int(n_trajectories),
        "friction_per_fs": float(friction_per_fs),
    }
    counts = {"new_frames": 0, "skipped_frames": 0, "md_steps": 0}
    started = time.perf_counter()
    if out.exists():
        db = open_database(out)
        _check_same_settings(out, db.metadata.get("run"), settings)
    else:
        db = _open_run(out, settings)
        run = _Run(system, calculator, settings, frame_info, checkpoint_seconds)
        n_frames = n_steps // every
        states = db.metadata["trajectories"]
        done = sum(
            s["step"] // every if s["status"] == "running" else n_frames for s in states.values()
        )
        with Progress(disable=not progress) as bar:
            task = bar.add_task(
                f"{system.name} {temperature_K:g} K", total=n_trajectories * n_frames
            )
            bar.update(task, completed=done)
            for t in range(n_trajectories):
                state = states.get(str(t))
                if state is None or state["status"] == "running":
                    new = _run_trajectory(db, run, t, state, lambda: bar.advance(task))
                    counts = {key: counts[key] + new[key] for key in counts}
        partial_path(out).replace(out)
        db = open_database(out)
    elapsed = time.perf_counter() - started
    states = db.metadata["trajectories"]
    return {
        "out_path": str(out),
        "frames": db.count(),
        **counts,
        "failed_trajectories": {t: s["status"] for t, s in states.items() if s["status"] != "done"},
        "wall_s": elapsed,
        "frames_per_s": counts["new_frames"] / elapsed,
        "md_steps_per_s": counts["md_steps"] / elapsed,
    }
