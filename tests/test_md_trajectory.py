"""The H5MD trajectory: layout, per-replica arrays, hard-linked clocks."""

from __future__ import annotations

import h5py
import numpy as np
import torch
from md_support import ClusterLJ, argon_state

from stablemd.md.integrators import VelocityVerlet
from stablemd.md.runner import run
from stablemd.md.velocities import maxwell_boltzmann
from stablemd.monitors.trajectory import TrajectoryWriter, read_replica


def test_h5md_file_has_per_replica_arrays(tmp_path):
    path = tmp_path / "traj.h5"
    state = maxwell_boltzmann(argon_state(3), 20.0, 0)
    state.cell[1] = 30.0 * torch.eye(3, dtype=torch.float64)
    state.pbc[1] = True
    integrator = VelocityVerlet(5.0)
    with TrajectoryWriter(path, integrator, velocities=True, every=5) as writer:
        result = run(state, integrator, ClusterLJ(), 20, [writer], progress=False)
    with h5py.File(path, "r") as f:
        assert f["h5md"].attrs["version"].tolist() == [1, 1]
        assert f["h5md/creator"].attrs["name"] == "stablemd"
        assert "name" in f["h5md/author"].attrs
        replica = f["particles/replica_1"]
        assert replica["position/value"].shape == (5, 13, 3)
        assert replica["position/value"].attrs["unit"] == "Angstrom"
        assert replica["velocity/step"] == replica["position/step"]  # one clock, hard-linked
        assert list(replica["box"].attrs["boundary"]) == [b"periodic"] * 3
        assert list(f["particles/replica_0/box"].attrs["boundary"]) == [b"none"] * 3
        assert f["observables/replica_2/temperature/value"].shape == (5,)
    data = read_replica(path, 1)
    assert data["step"].tolist() == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(data["time_fs"], [0, 25, 50, 75, 100])
    assert data["species"].tolist() == [18] * 13
    np.testing.assert_allclose(data["cell"], 30.0 * np.eye(3))
    assert data["pbc"].tolist() == [True] * 3
    final = result.state
    atoms = final.system_index == 1
    np.testing.assert_array_equal(data["positions"][-1], final.positions[atoms].numpy())
    np.testing.assert_array_equal(data["velocities"][-1], final.velocities[atoms].numpy())
    np.testing.assert_allclose(data["potential_energy"][-1], float(final.potential_energy[1]))
    np.testing.assert_allclose(
        data["conserved_energy"], data["potential_energy"] + data["kinetic_energy"]
    )
