"""Reference data generation: metadata, independent trajectories, resume, failure handling."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.calculator import CalculationFailed
from ase.calculators.emt import EMT

from stablemd.core.errors import InputError
from stablemd.data import generate
from stablemd.data.database import open_database, read_frames
from stablemd.data.generate import generate_reference_data
from stablemd.oracles.xtb import XTBCalculator

KEYS = {"system", "level_of_theory", "temperature_K", "timestep_fs", "trajectory", "step", "seed"}


def run(out, **kwargs):
    options = dict(n_trajectories=2, seed=7, progress=False) | kwargs
    return generate_reference_data("ethanol", "xtb", 400.0, 12, 4, out, **options)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "ethanol.db"
    return run(out), read_frames(out)


def test_frames_carry_labels_metadata_and_momenta(uninterrupted):
    summary, frames = uninterrupted
    assert summary["frames"] == summary["new_frames"] == len(frames) == 6
    assert summary["md_steps"] == 24 and summary["frames_per_s"] > 0
    assert [(a.info["trajectory"], a.info["step"]) for a in frames] == [
        (t, s) for t in (0, 1) for s in (4, 8, 12)
    ]
    for atoms in frames:
        assert KEYS <= set(atoms.info)
        assert atoms.info["level_of_theory"] == "GFN2-xTB" and atoms.info["timestep_fs"] == 0.5
        assert np.isfinite(atoms.get_potential_energy()) and atoms.get_forces().shape == (9, 3)
        assert np.abs(atoms.get_momenta()).max() > 0
        assert np.abs(atoms.get_momenta().sum(axis=0)).max() < 1e-10  # centre of mass at rest
    # independent trajectories from the same start: different states after the same steps
    assert not np.allclose(frames[0].positions, frames[3].positions, atol=1e-3)


@pytest.mark.parametrize("stop_at_label", [4, 5])  # trajectory 1 at its start, at step 4
def test_resume_after_interruption_reproduces_the_uninterrupted_run(
    uninterrupted, tmp_path, monkeypatch, stop_at_label
):
    out = tmp_path / "ethanol.db"
    calls = {"n": 0}
    real_label = generate.label

    def interrupt(atoms, calculator):
        calls["n"] += 1
        if calls["n"] == stop_at_label:
            raise KeyboardInterrupt
        return real_label(atoms, calculator)

    monkeypatch.setattr(generate, "label", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(out)
    assert not out.exists() and (tmp_path / "ethanol.db.partial").exists()
    assert len(read_frames(tmp_path / "ethanol.db.partial")) == stop_at_label - 1
    # what ASE's lock file would look like after a kill inside a write: it must not block
    (tmp_path / "ethanol.db.partial.lock").touch()
    monkeypatch.setattr(generate, "label", real_label)
    summary = run(out)
    assert summary["new_frames"] == 7 - stop_at_label and summary["frames"] == 6
    assert not (tmp_path / "ethanol.db.partial").exists()
    for resumed, expected in zip(read_frames(out), uninterrupted[1], strict=True):
        assert resumed.info == expected.info  # and to the last bit: xTB starts afresh there
        np.testing.assert_array_equal(resumed.positions, expected.positions)
        np.testing.assert_array_equal(resumed.get_forces(), expected.get_forces())
    # a finished run is left alone; different options are refused
    assert run(out)["new_frames"] == 0
    with pytest.raises(InputError, match="temperature_K"):
        generate_reference_data("ethanol", "xtb", 300.0, 12, 4, out, n_trajectories=2, seed=7)


def test_a_slow_block_commits_its_state_inside_and_resumes_the_same_trajectory(
    uninterrupted, tmp_path, monkeypatch
):
    """With checkpoint_seconds=0 every step inside a block is committed; a run interrupted in
    the middle of a block continues from that step with the noise generator where it was."""
    out = tmp_path / "ethanol.db"
    calls = {"n": 0}
    real_calculate = XTBCalculator.calculate

    def interrupt_on_seventh(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real_calculate(self, *args, **kwargs)

    monkeypatch.setattr(XTBCalculator, "calculate", interrupt_on_seventh)
    with pytest.raises(KeyboardInterrupt):
        run(out, checkpoint_seconds=0.0)
    states = open_database(tmp_path / "ethanol.db.partial").metadata["trajectories"]
    assert states["0"]["step"] % 4 != 0 and "rng" in states["0"]  # inside a block
    monkeypatch.setattr(XTBCalculator, "calculate", real_calculate)
    summary = run(out, checkpoint_seconds=0.0)
    assert summary["frames"] == 6
    for resumed, expected in zip(read_frames(out), uninterrupted[1], strict=True):
        assert resumed.info == expected.info
        np.testing.assert_allclose(resumed.positions, expected.positions, atol=1e-7)
        np.testing.assert_allclose(resumed.get_forces(), expected.get_forces(), atol=1e-4)


class FailingEMT(EMT):
    """EMT that fails (raises or returns NaN) on its n-th evaluation."""

    def __init__(self, fail_at, mode):
        super().__init__()
        self.count, self.fail_at, self.mode = 0, fail_at, mode

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.count += 1
        if self.count == self.fail_at:
            if self.mode == "raise":
                raise CalculationFailed("SCF did not converge")
            self.results["forces"] = self.results["forces"] * np.nan


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_a_failing_oracle_stops_one_trajectory_not_the_run(tmp_path, mode, caplog):
    out = tmp_path / "emt.db"
    oracle = FailingEMT(fail_at=6, mode=mode)
    summary = generate_reference_data(
        "ethanol", oracle, 300.0, 12, 2, out, n_trajectories=2, progress=False
    )
    assert list(summary["failed_trajectories"]) == ["0"]
    frames = read_frames(out)
    assert {a.info["trajectory"] for a in frames} == {0, 1}
    assert sum(a.info["trajectory"] == 1 for a in frames) == 6
    assert "trajectory 0 stopped" in caplog.text


def test_periodic_water_frames_have_stress(tmp_path):
    from stablemd.systems import get_system

    system = get_system("water", n_molecules=8)
    summary = generate_reference_data(system, None, 300.0, 4, 2, tmp_path / "w.db", progress=False)
    frames = read_frames(summary["out_path"])
    assert len(frames) == 2 and frames[0].info["level_of_theory"] == "SPC/Fw (OpenMM)"
    assert frames[0].get_stress().shape == (6,) and frames[0].info["timestep_fs"] == 1.0
    # the same system name and atom count at another density is another run
    denser = get_system("water", n_molecules=8, density_g_cm3=1.1)
    with pytest.raises(InputError, match="this run used structure="):
        generate_reference_data(denser, None, 300.0, 4, 2, tmp_path / "w.db", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 20}, "every = 20 must be between 1 and steps"),
        ({"temperature_K": -5.0}, "temperature = -5.0"),
        ({"n_trajectories": 0}, "trajectories = 0"),
        ({"timestep_fs": 0.0}, "timestep = 0.0"),
        ({"oracle": "dft"}, "unknown oracle 'dft'"),
    ],
)
def test_bad_options_are_input_errors(tmp_path, kwargs, message):
    options = dict(oracle="xtb", temperature_K=300.0, n_steps=10, every=2) | kwargs
    with pytest.raises(InputError, match=message):
        generate_reference_data("ethanol", out_path=tmp_path / "x.db", progress=False, **options)
    assert not (tmp_path / "x.db.partial").exists()
