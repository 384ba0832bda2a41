"""The MD loop: resume equals an uninterrupted run, criteria freeze replicas, rewinding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from md_support import ClusterLJ, argon_state, single_thread  # noqa: F401

from stablemd.errors import InputError
from stablemd.md.integrators import Langevin, VelocityVerlet
from stablemd.md.runner import run
from stablemd.md.snapshots import rewind, take_replicas
from stablemd.md.trajectory import TrajectoryWriter, read_replica
from stablemd.md.velocities import maxwell_boltzmann

pytestmark = pytest.mark.usefixtures("single_thread")

DT_FS = 10.0


def start(n_replicas: int = 4):
    return maxwell_boltzmann(argon_state(n_replicas), 20.0, 0)


class Interrupt:
    """An observer that stops the run (like a kill) when it reaches ``step``."""

    def __init__(self, step: int | None):
        self.step = step

    def __call__(self, state):
        if state.step == self.step:
            raise KeyboardInterrupt


class FlagAfter:
    """A criterion: replicas in ``replicas`` are unstable from ``step`` on."""

    def __init__(self, step: int, replicas: list[int]):
        self.step, self.replicas = step, replicas

    def __call__(self, state):
        flags = torch.zeros(state.n_systems, dtype=torch.bool)
        if state.step >= self.step:
            flags[self.replicas] = True
        return flags


def langevin_run(tmp_path, name: str, interrupt_at: int | None):
    """A Langevin run with a trajectory, snapshots and a checkpoint every 40 steps."""
    integrator = Langevin(DT_FS, 20.0, friction=1 / 200, seed=7)
    with TrajectoryWriter(tmp_path / f"{name}.h5", integrator, velocities=True) as writer:
        return run(
            start(), integrator, ClusterLJ(), 200,
            observers=[writer, FlagAfter(150, [1]), Interrupt(interrupt_at)], every=10,
            snapshot_every=50, n_snapshots=2, checkpoint=tmp_path / f"{name}.pt",
            checkpoint_every=40, progress=False,
        )  # fmt: skip


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    reference = langevin_run(tmp_path, "reference", None)
    with pytest.raises(KeyboardInterrupt):
        langevin_run(tmp_path, "resumed", 130)
    resumed = langevin_run(tmp_path, "resumed", None)
    assert resumed.steps == 200 - 120
    for field in ("positions", "velocities", "forces", "potential_energy", "active"):
        assert torch.equal(getattr(resumed.state, field), getattr(reference.state, field))
    assert torch.equal(resumed.state.thermostat["heat"], reference.state.thermostat["heat"])
    np.testing.assert_array_equal(resumed.unstable_time_fs, reference.unstable_time_fs)
    assert resumed.unstable_time_fs[1] == 150 * DT_FS
    assert resumed.snapshots.steps == reference.snapshots.steps == [150, 200]
    with pytest.raises(InputError, match="written with 3 observers, this run has 1"):
        run(start(), Langevin(DT_FS, 20.0, friction=1 / 200, seed=7), ClusterLJ(), 10,
            observers=[FlagAfter(150, [1])], checkpoint=tmp_path / "resumed.pt",
            progress=False)  # fmt: skip
    for k in range(4):
        ours, theirs = (
            read_replica(tmp_path / "resumed.h5", k),
            read_replica(tmp_path / "reference.h5", k),
        )
        assert ours.keys() == theirs.keys()
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key])


def test_criteria_freeze_replicas_and_record_their_time(tmp_path):
    integrator = VelocityVerlet(DT_FS)
    with TrajectoryWriter(tmp_path / "t.h5") as writer:
        result = run(
            start(), integrator, ClusterLJ(), 60, observers=[FlagAfter(25, [2]), writer],
            every=10, progress=False,
        )  # fmt: skip
    assert result.unstable_time_fs[2] == 30 * DT_FS
    assert all(math.isnan(t) for t in result.unstable_time_fs[[0, 1, 3]].tolist())
    assert result.state.active.tolist() == [True, True, False, True]
    frozen = read_replica(tmp_path / "t.h5", 2)
    assert frozen["step"].tolist() == [0, 10, 20, 30]  # the unstable frame is still written
    assert read_replica(tmp_path / "t.h5", 0)["step"].tolist() == [0, 10, 20, 30, 40, 50, 60]
    atoms = result.state.system_index == 2
    np.testing.assert_array_equal(result.state.positions[atoms].numpy(), frozen["positions"][-1])


def test_run_stops_when_every_replica_is_frozen():
    result = run(
        start(), VelocityVerlet(DT_FS), ClusterLJ(), 100,
        observers=[FlagAfter(20, [0, 1, 2, 3])], every=10, progress=False,
    )  # fmt: skip
    assert result.steps == 20 and not result.state.active.any()


def test_rewind_restores_snapshots():
    result = run(
        start(), Langevin(DT_FS, 20.0, 0.01, seed=0), ClusterLJ(), 100, snapshot_every=20,
        n_snapshots=3, progress=False,
    )  # fmt: skip
    state, snapshots = result.state, result.snapshots
    assert snapshots.steps == [60, 80, 100]
    back = rewind(state, snapshots, 40)
    assert back.step == 60 and back.time_fs == 60 * DT_FS
    assert not torch.equal(back.positions, state.positions)
    assert torch.equal(back.positions, snapshots.at_step(60).positions)
    assert torch.equal(back.thermostat["heat"], snapshots.at_step(60).thermostat["heat"])

    state.active = torch.tensor([True, False, True, True])
    chosen = torch.tensor([False, True, False, False])
    partial = rewind(state, snapshots, 20, replicas=chosen)
    atoms = chosen[state.system_index]
    assert partial.step == 100 and partial.active.all()
    assert torch.equal(partial.velocities[atoms], snapshots.at_step(80).velocities[atoms])
    assert torch.equal(partial.velocities[~atoms], state.velocities[~atoms])
    assert torch.equal(partial.thermostat["heat"][~chosen], state.thermostat["heat"][~chosen])
    with pytest.raises(ValueError, match="no snapshot at step 90"):
        rewind(state, snapshots, 10)


def test_take_replicas_from_a_state_not_yet_evaluated():
    """A fresh state (no forces, no thermostat variables) mixed into a running one: the
    running replicas keep their thermostat, forces are left for the integrator to recompute."""
    fresh = start()
    running = run(start(), Langevin(DT_FS, 20.0, 0.01, seed=0), ClusterLJ(), 10, progress=False)
    chosen = torch.tensor([True, False, False, True])
    mixed = take_replicas(running.state, fresh, chosen)
    atoms = chosen[fresh.system_index]
    assert torch.equal(mixed.positions[atoms], fresh.positions[atoms])
    assert torch.equal(mixed.positions[~atoms], running.state.positions[~atoms])
    assert mixed.forces is None and mixed.potential_energy is None
    assert torch.equal(mixed.thermostat["heat"], running.state.thermostat["heat"])
