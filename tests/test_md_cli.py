"""``stablemd simulate``: a short run, its continuation, and refusing foreign options."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch
import typer
from md_support import single_thread  # noqa: F401
from typer.testing import CliRunner

from stablemd.cli.simulate import simulate
from stablemd.core.errors import InputError
from stablemd.md.starts import choose_starts
from stablemd.models.painn import PaiNN
from stablemd.models.registry import save_potential
from stablemd.monitors.trajectory import read_replica
from stablemd.systems import get_system

pytestmark = pytest.mark.usefixtures("single_thread")


def _model_and_app(tmp_path) -> typer.Typer:
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1)
    model.energy_scaling.scale.fill_(0.1)
    save_potential(model, tmp_path / "model.pt")
    app = typer.Typer()
    app.command()(simulate)
    return app


def test_simulate_runs_resumes_and_extends(tmp_path):
    app = _model_and_app(tmp_path)
    out = tmp_path / "run"
    args = ["--model", str(tmp_path / "model.pt"), "--system", "ethanol", "--out", str(out),
            "--replicas", "3", "--every", "5", "--thermostat", "csvr", "--no-progress"]  # fmt: skip
    first = CliRunner().invoke(app, [*args, "--time-ps", "0.01"])
    assert first.exit_code == 0, first.output
    assert read_replica(out / "trajectory.h5", 2)["step"].tolist() == [0, 5, 10, 15, 20]

    longer = CliRunner().invoke(app, [*args, "--time-ps", "0.02"])
    assert longer.exit_code == 0, longer.output
    data = read_replica(out / "trajectory.h5", 2)
    assert data["step"].tolist() == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    assert data["positions"].shape == (9, 9, 3)

    other = CliRunner().invoke(app, [*args, "--time-ps", "0.02", "--temperature", "500"])
    assert isinstance(other.exception, InputError)
    assert "temperature_K" in str(other.exception)


def test_simulate_starts_from_unlabelled_frames_of_the_system_in_one_order(tmp_path):
    app = _model_and_app(tmp_path)
    ethanol = get_system("ethanol").atoms  # C H H H C H H O H
    starts = [ethanol.copy(), ethanol.copy()]
    starts[1].positions += 0.05
    ase.io.write(tmp_path / "starts.extxyz", starts)
    args = ["--model", str(tmp_path / "model.pt"), "--system", "ethanol", "--replicas", "2",
            "--time-ps", "0.005", "--every", "5", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "run"), "--starts", str(tmp_path / "starts.extxyz")]
    )
    assert result.exit_code == 0, result.output
    drawn = choose_starts(starts, 2, seed=0)  # the stability benchmark's draw
    assert {id(a) for a in drawn} == {id(a) for a in starts}  # without replacement
    for replica, start in enumerate(drawn):
        first = read_replica(tmp_path / "run" / "trajectory.h5", replica)["positions"][0]
        np.testing.assert_allclose(first, start.positions, atol=1e-12)

    # another atom order is matched to the system's and run in it; two orders in one file are not
    ase.io.write(tmp_path / "reversed.extxyz", [ethanol[::-1]])
    reversed_run = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "rev"), "--starts", str(tmp_path / "reversed.extxyz")]
    )
    assert reversed_run.exit_code == 0, reversed_run.output
    first = read_replica(tmp_path / "rev" / "trajectory.h5", 0)["positions"][0]
    np.testing.assert_allclose(first, ethanol.positions, atol=1e-12)
    ase.io.write(tmp_path / "mixed.extxyz", [ethanol[::-1], ethanol])
    refused = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "no"), "--starts", str(tmp_path / "mixed.extxyz")]
    )
    assert isinstance(refused.exception, InputError)
    assert "mixed.extxyz: frame 1, atom 0 is C where frame 0 has H" in str(refused.exception)
    assert not (tmp_path / "no").exists()


def test_simulate_writes_velocities_on_request_and_resumes_runs_recorded_before_the_option(
    tmp_path,
):
    app = _model_and_app(tmp_path)

    def args(out):
        model = str(tmp_path / "model.pt")
        return ["--model", model, "--system", "ethanol", "--out", str(tmp_path / out),
                "--replicas", "2", "--every", "5", "--no-progress"]  # fmt: skip

    for out, extra in (("with", ["--velocities"]), ("without", [])):
        result = CliRunner().invoke(app, [*args(out), "--time-ps", "0.005", *extra])
        assert result.exit_code == 0, result.output
    data = read_replica(tmp_path / "with" / "trajectory.h5", 1)
    assert data["velocities"].shape == data["positions"].shape == (3, 9, 3)
    assert "velocities" not in read_replica(tmp_path / "without" / "trajectory.h5", 1)

    # a run recorded before --velocities existed continues under its default (no velocities)
    run_json = tmp_path / "without" / "run.json"
    options = json.loads(run_json.read_text())
    del options["velocities"]
    run_json.write_text(json.dumps(options))
    longer = CliRunner().invoke(app, [*args("without"), "--time-ps", "0.01"])
    assert longer.exit_code == 0, longer.output
    steps = read_replica(tmp_path / "without" / "trajectory.h5", 1)["step"]
    assert steps.tolist() == [0, 5, 10, 15, 20]


def test_simulate_at_constant_pressure_records_volumes_resumes_and_refuses_another_pressure(
    tmp_path,
):
    app = _model_and_app(tmp_path)
    out = tmp_path / "npt"
    args = ["--model", str(tmp_path / "model.pt"), "--system", "water", "--out", str(out),
            "--replicas", "2", "--every", "5", "--no-progress",
            "--barostat-time", "100"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--time-ps", "0.005", "--pressure", "1"])
    assert result.exit_code == 0, result.output
    assert "g/cm³" in result.output
    data = read_replica(out / "trajectory.h5", 1)
    frames = len(data["step"])
    assert frames >= 2 and data["cell"].shape == (frames, 3, 3)
    np.testing.assert_allclose(data["volume"], np.abs(np.linalg.det(data["cell"])))
    assert len(np.unique(data["volume"])) == frames  # the box breathes

    longer = CliRunner().invoke(app, [*args, "--time-ps", "0.01", "--pressure", "1"])
    assert longer.exit_code == 0, longer.output
    continued = read_replica(out / "trajectory.h5", 1)
    assert len(continued["step"]) > frames
    np.testing.assert_array_equal(continued["cell"][:frames], data["cell"])

    other = CliRunner().invoke(app, [*args, "--time-ps", "0.01", "--pressure", "1000"])
    assert isinstance(other.exception, InputError)
    assert "pressure_bar" in str(other.exception)
