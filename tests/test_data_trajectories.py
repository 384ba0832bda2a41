"""Trajectory data for training on rollouts: NVE reference MD keeps consecutive states with
velocities in Å/fs; imports of AIMD keep their time; gaps, uneven steps, missing velocities
are refused, naming the file and the frame."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import units
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cluster import Icosahedron

from stablemd.core.errors import InputError
from stablemd.data.database import read_frames, write_frames
from stablemd.data.formats import import_file
from stablemd.data.generate import generate_reference_data
from stablemd.data.trajectories import consecutive_runs, read_trajectories
from stablemd.md.state import AMU_A2_PER_FS2_IN_EV
from stablemd.systems import System

DT_FS = 2.0


def argon_system() -> System:
    return System.from_atoms("argon", Icosahedron("Ar", noshells=2), "lj", DT_FS)


def lennard_jones() -> LennardJones:
    return LennardJones(sigma=3.4, epsilon=0.0104, rc=10.0, smooth=True)


@pytest.fixture(scope="module")
def nve_frames(tmp_path_factory):
    out = tmp_path_factory.mktemp("nve") / "argon.db"
    generate_reference_data(
        argon_system(), lennard_jones(), 60.0, 12, 1, out, n_trajectories=2,
        progress=False, friction_per_fs=0.0,
    )  # fmt: skip
    return out, read_frames(out)


def test_nve_frames_are_consecutive_velocity_verlet_states_in_fs_units(nve_frames):
    path, frames = nve_frames
    trajectories = read_trajectories(frames, str(path))
    assert [t.trajectory_id for t in trajectories] == [0, 1]
    for trajectory in trajectories:
        assert len(trajectory) == 12 and trajectory.every == 1
        assert trajectory.timestep_fs == DT_FS
        x, v, f = trajectory.positions, trajectory.velocities, trajectory.forces
        acceleration = f / (trajectory.masses[None, :, None] * AMU_A2_PER_FS2_IN_EV)
        # velocity Verlet with friction 0: x' = x + dt v + dt²/2 a, v' = v + dt (a + a')/2
        assert (
            np.abs(x[1:] - (x[:-1] + DT_FS * v[:-1] + 0.5 * DT_FS**2 * acceleration[:-1])).max()
            < 1e-10
        )
        assert (
            np.abs(v[1:] - (v[:-1] + 0.5 * DT_FS * (acceleration[:-1] + acceleration[1:]))).max()
            < 1e-12
        )
        assert np.abs(v).max() > 1e-4  # moving, in Å/fs (thermal argon: ~5e-3 Å/fs)


def test_consecutive_runs_split_at_frames_of_another_set(nve_frames):
    path, frames = nve_frames
    trajectory = read_trajectories(frames, str(path))[0]
    keep = set(trajectory.frame_indices) - {trajectory.frame_indices[4]}
    runs = consecutive_runs(trajectory, keep)
    assert [len(r) for r in runs] == [4, 7]
    assert np.array_equal(runs[1].positions[0], trajectory.positions[5])


def test_trajectory_refusals_name_the_file_and_frame(nve_frames):
    path, frames = nve_frames
    frames = [a.copy() for a in frames]
    for a, source in zip(frames, read_frames(path), strict=True):
        a.calc = SinglePointCalculator(a, **source.calc.results)
    gap = frames[:3] + frames[4:12]
    with pytest.raises(
        InputError, match=r"x.db: frame 3 \(trajectory 0, step 5\) is 2 steps after"
    ):
        read_trajectories(gap, "x.db")
    uneven = [a.copy() for a in frames[:5]]
    for a, b in zip(uneven, frames[:5], strict=True):
        a.calc = b.calc
    uneven[3].info["timestep_fs"] = 1.0
    with pytest.raises(InputError, match=r"x.db: frame 3 .* time step 1.0 fs.*uneven"):
        read_trajectories(uneven, "x.db")
    still = [a.copy() for a in frames[:3]]
    del still[2].arrays["momenta"]
    with pytest.raises(InputError, match="x.db: frame 2 has no velocities"):
        read_trajectories(still, "x.db")
    plain = [a.copy() for a in frames[:3]]
    del plain[1].info["step"]
    with pytest.raises(InputError, match="x.db: frame 1 has no step"):
        read_trajectories(plain, "x.db")


def _aimd_frames(n: int = 6, spacing_fs: float = 0.5, times: bool = True):
    atoms = Icosahedron("Ar", noshells=2)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        frame = atoms.copy()
        frame.positions += 0.01 * rng.normal(size=frame.positions.shape)
        frame.set_velocities(0.01 * rng.normal(size=frame.positions.shape))
        frame.calc = SinglePointCalculator(frame, energy=-float(i), forces=rng.normal(size=(13, 3)))
        if times:
            frame.info["time"] = spacing_fs * i
        out.append(frame)
    return out


@pytest.mark.parametrize("suffix", [".extxyz", ".traj"])
def test_import_aimd_keeps_velocities_and_time(tmp_path, suffix):
    source = tmp_path / f"aimd{suffix}"
    frames = _aimd_frames()
    ase.io.write(source, frames)
    out = tmp_path / "aimd.db"
    assert import_file(source, out, frame_spacing_fs=0.5, every=2) == 6
    (trajectory,) = read_trajectories(read_frames(out), str(out))
    assert trajectory.every == 2 and trajectory.timestep_fs == 0.25
    assert trajectory.frame_spacing_fs == 0.5
    expected = np.stack([a.get_velocities() for a in frames]) * units.fs  # ASE → Å/fs
    assert np.allclose(trajectory.velocities, expected, rtol=1e-6)


def test_import_refuses_missing_velocities_and_uneven_times(tmp_path):
    frames = _aimd_frames()
    frames[3].info["time"] = 1.6
    source = tmp_path / "uneven.extxyz"
    ase.io.write(source, frames)
    with pytest.raises(InputError, match=r"uneven.extxyz: frame 3 is 0.6 fs after frame 2"):
        import_file(source, tmp_path / "o.db", frame_spacing_fs=0.5)
    frames = _aimd_frames(times=False)
    for frame in frames:
        frame.info.pop("time", None)
    del frames[2].arrays["momenta"]
    still = tmp_path / "still.extxyz"
    ase.io.write(still, frames)
    with pytest.raises(InputError, match="still.extxyz: frame 2 has no velocities"):
        import_file(still, tmp_path / "o.db", frame_spacing_fs=0.5)
    assert not (tmp_path / "o.db").exists()


def test_frames_without_trajectory_keys_are_refused(tmp_path):
    frames = _aimd_frames(times=False)
    write_frames(tmp_path / "plain.db", frames)
    with pytest.raises(InputError, match="plain.db: frame 0 has no timestep_fs"):
        read_trajectories(read_frames(tmp_path / "plain.db"), str(tmp_path / "plain.db"))
