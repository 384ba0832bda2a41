"""``stablemd simulate``: a short run, its continuation, and refusing foreign options."""

from __future__ import annotations

import pytest
import torch
import typer
from md_support import single_thread  # noqa: F401
from typer.testing import CliRunner

from stablemd.cli.simulate import simulate
from stablemd.errors import InputError
from stablemd.md.trajectory import read_replica
from stablemd.models.painn import PaiNN
from stablemd.models.registry import save_potential

pytestmark = pytest.mark.usefixtures("single_thread")


def test_simulate_runs_resumes_and_extends(tmp_path):
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1)
    model.energy_scaling.scale.fill_(0.1)
    save_potential(model, tmp_path / "model.pt")
    app = typer.Typer()
    app.command()(simulate)
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
