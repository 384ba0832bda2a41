"""The MD loop: resume equals an uninterrupted run, criteria freeze replicas with their reason,
monitors keep their own intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from md_support import ClusterLJ, argon_state, single_thread  # noqa: F401

from stablemd.core.errors import InputError
from stablemd.md.integrators import BAOAB, VelocityVerlet
from stablemd.md.monitoring import Criterion, Observer
from stablemd.md.runner import run
from stablemd.md.state import take_replicas
from stablemd.md.thermostats import LangevinNoise
from stablemd.md.velocities import maxwell_boltzmann
from stablemd.monitors.trajectory import TrajectoryWriter, read_replica

pytestmark = pytest.mark.usefixtures("single_thread")

DT_FS = 10.0


def start(n_replicas: int = 4):
    return maxwell_boltzmann(argon_state(n_replicas), 20.0, 0)


def langevin(seed: int = 7, friction: float = 1 / 200):
    return BAOAB(DT_FS, LangevinNoise(20.0, friction, seed=seed))


class Interrupt(Observer):
    """Stops the run (like a kill) when it reaches ``step``."""

    name = "interrupt"

    def __init__(self, step: int | None, every: int = 10):
        super().__init__(every)
        self.step = step

    def __call__(self, state):
        if state.step == self.step:
            raise KeyboardInterrupt


class FlagAfter(Criterion):
    """Replicas in ``replicas`` are unstable from ``step`` on."""

    name = "flag_after"

    def __init__(self, step: int, replicas: list[int], every: int = 10, name: str = "flag_after"):
        super().__init__(every)
        self.step, self.replicas, self.name = step, replicas, name

    def __call__(self, state):
        flags = torch.zeros(state.n_systems, dtype=torch.bool)
        if state.step >= self.step:
            flags[self.replicas] = True
        return flags


class Calls(Observer):
    """Records the steps at which it is called."""

    name = "calls"

    def __init__(self, every: int):
        super().__init__(every)
        self.steps: list[int] = []

    def __call__(self, state):
        self.steps.append(state.step)


def langevin_run(tmp_path, name: str, interrupt_at: int | None):
    """A Langevin run with a trajectory and a checkpoint every 40 steps."""
    integrator = langevin()
    path = tmp_path / f"{name}.h5"
    with TrajectoryWriter(path, integrator, velocities=True, every=10) as writer:
        return run(
            start(), integrator, ClusterLJ(), 200,
            [writer, FlagAfter(150, [1]), Interrupt(interrupt_at)],
            checkpoint=tmp_path / f"{name}.pt", checkpoint_every=40, progress=False,
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
    assert resumed.unstable_reason == reference.unstable_reason == [None, "flag_after", None, None]
    with pytest.raises(InputError, match="resumed.pt: this run used monitors="):
        run(start(), langevin(), ClusterLJ(), 10, [FlagAfter(150, [1])],
            checkpoint=tmp_path / "resumed.pt", progress=False)  # fmt: skip
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
    with TrajectoryWriter(tmp_path / "t.h5", every=10) as writer:
        result = run(
            start(), integrator, ClusterLJ(), 60, [FlagAfter(25, [2]), writer], progress=False
        )
    assert result.unstable_time_fs[2] == 30 * DT_FS
    assert all(math.isnan(t) for t in result.unstable_time_fs[[0, 1, 3]].tolist())
    assert result.unstable_reason == [None, None, "flag_after", None]
    assert result.state.active.tolist() == [True, True, False, True]
    frozen = read_replica(tmp_path / "t.h5", 2)
    assert frozen["step"].tolist() == [0, 10, 20, 30]  # the unstable frame is still written
    assert read_replica(tmp_path / "t.h5", 0)["step"].tolist() == [0, 10, 20, 30, 40, 50, 60]
    atoms = result.state.system_index == 2
    np.testing.assert_array_equal(result.state.positions[atoms].numpy(), frozen["positions"][-1])


def test_run_stops_when_every_replica_is_frozen():
    result = run(
        start(), VelocityVerlet(DT_FS), ClusterLJ(), 100, [FlagAfter(20, [0, 1, 2, 3])],
        progress=False,
    )  # fmt: skip
    assert result.steps == 20 and not result.state.active.any()


def test_each_monitor_keeps_its_own_interval_and_the_first_criterion_names_the_reason():
    often, seldom = Calls(every=3), Calls(every=7)
    result = run(
        start(), VelocityVerlet(DT_FS), ClusterLJ(), 21,
        [FlagAfter(0, [1], 7, "first"), FlagAfter(0, [0, 1], 5, "second"), often, seldom],
        progress=False,
    )  # fmt: skip
    assert often.steps == [0, 3, 6, 9, 12, 15, 18, 21]
    assert seldom.steps == [0, 7, 14, 21]
    # both criteria fire at step 0 on replica 1: the first one listed is its reason
    assert result.unstable_reason == ["second", "first", None, None]
    assert result.unstable_time_fs[:2].tolist() == [0.0, 0.0]


def test_a_monitor_needs_a_positive_interval():
    with pytest.raises(InputError, match="every must be at least 1"):
        Calls(every=0)


def test_take_replicas_from_a_state_not_yet_evaluated():
    """A fresh state (no forces, no thermostat variables yet) mixed into a running one: the
    chosen replicas take the fresh state's thermostat variables, zero before the first step,
    and forces are left for the integrator to recompute."""
    fresh = start()
    running = run(start(), langevin(seed=0, friction=0.01), ClusterLJ(), 10, progress=False)
    chosen = torch.tensor([True, False, False, True])
    mixed = take_replicas(running.state, fresh, chosen)
    atoms = chosen[fresh.system_index]
    assert torch.equal(mixed.positions[atoms], fresh.positions[atoms])
    assert torch.equal(mixed.positions[~atoms], running.state.positions[~atoms])
    assert mixed.forces is None and mixed.potential_energy is None
    heat = running.state.thermostat["heat"]
    assert torch.equal(mixed.thermostat["heat"][~chosen], heat[~chosen])
    assert torch.all(mixed.thermostat["heat"][chosen] == 0) and torch.all(heat[chosen] != 0)


def test_a_checkpoint_of_another_integrator_is_refused(tmp_path):
    run(start(), langevin(), ClusterLJ(), 10, checkpoint=tmp_path / "c.pt", progress=False)
    with pytest.raises(InputError, match="c.pt: this run used integrator='BAOAB'"):
        run(start(), VelocityVerlet(DT_FS), ClusterLJ(), 20, checkpoint=tmp_path / "c.pt",
            progress=False)  # fmt: skip
    with pytest.raises(InputError, match="c.pt: this run used thermostat="):
        run(start(), langevin(friction=0.02), ClusterLJ(), 20, checkpoint=tmp_path / "c.pt",
            progress=False)  # fmt: skip
