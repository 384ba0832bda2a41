"""The early warning in ``stablemd simulate``: the CLI index written into the trajectory equals
a recomputation from the written frames; a run interrupted and resumed writes the same index as
one that never stopped; a model without a domain, a refitted domain in the same --out and the
warning together with the uncertainty are refused; freezing on the warning stops a replica."""

from __future__ import annotations

import json
import re
import shutil

import ase.io
import numpy as np
import pytest
import torch
import typer
from early_warning_support import LEVEL, squeezed_ethanol, starts, warned_model
from md_support import single_thread  # noqa: F401
from typer.testing import CliRunner

from stablemd.cli.simulate import simulate as simulate_command
from stablemd.core.errors import InputError
from stablemd.diagnose.early_warning import cumulative_index, latent_features
from stablemd.diagnose.early_warning.model_file import (
    EarlyWarning,
    attach_early_warning,
    stored_early_warning,
)
from stablemd.diagnose.early_warning.monitor import LatentInstabilityMonitor
from stablemd.models.painn import PaiNN
from stablemd.models.registry import load_potential, save_potential
from stablemd.monitors.trajectory import read_observable, read_replica
from stablemd.simulation import SimulationSettings

pytestmark = pytest.mark.usefixtures("single_thread")

CLI = "cumulative_latent_instability"


APP = typer.Typer()
APP.command()(simulate_command)


class Killed(Exception):
    """Stands for a kill in the middle of a run."""


def simulate(workspace, out, *extra, model="warned.pt"):
    """``stablemd simulate`` of 4 ethanol replicas (the first squeezed out of the domain) at
    10 K for 30 fs, a frame every 5 steps of 0.5 fs, a checkpoint every 10 steps."""
    argv = ["--model", str(workspace / model), "--system", "ethanol",
            "--starts", str(workspace / "starts.xyz"), "--replicas", "4", "--temperature", "10",
            "--time-ps", "0.03", "--every", "5", "--checkpoint-every", "10", "--out",
            str(workspace / out), "--no-progress", *extra]  # fmt: skip
    return CliRunner().invoke(APP, argv)


def refused(result, pattern: str) -> bool:
    """Whether ``result`` is an InputError whose message matches ``pattern``."""
    return isinstance(result.exception, InputError) and bool(
        re.search(pattern, str(result.exception))
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The model and start files, and one uninterrupted run of them (``whole``)."""
    root = tmp_path_factory.mktemp("simulate-ew")
    save_potential(warned_model(), root / "warned.pt")
    ase.io.write(root / "starts.xyz", starts())
    torch.manual_seed(0)
    save_potential(PaiNN([1, 6, 8], n_features=8, n_interactions=1), root / "plain.pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = simulate(root, "whole")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return root


def squeezed_replica(run) -> int:
    """The replica of ``run`` that started from the squeezed ethanol."""
    first = [read_replica(run / "trajectory.h5", k)["positions"][0] for k in range(4)]
    (k,) = [k for k in range(4) if np.allclose(first[k], squeezed_ethanol().positions)]
    return k


def test_the_written_index_is_the_index_of_the_written_frames(workspace):
    run = workspace / "whole"
    potential = load_potential(workspace / "warned.pt")
    domain = stored_early_warning(potential).domain
    written = read_observable(run / "trajectory.h5", CLI)
    grades = read_observable(run / "trajectory.h5", "max_extrapolation_grade")
    fractions, max_grade, times = [], [], None
    for k in range(4):
        replica = read_replica(run / "trajectory.h5", k)
        frames = [ase.Atoms(numbers=replica["species"], positions=p) for p in replica["positions"]]
        features, numbers = latent_features(potential, frames)
        grade = domain.grade(features, numbers).view(len(frames), -1)
        fractions.append((grade > domain.grade_threshold).double().mean(dim=1))
        max_grade.append(grade.amax(dim=1))
        times = replica["time_fs"] / 1000
    expected = cumulative_index(torch.stack(fractions, dim=1), times)
    np.testing.assert_allclose(np.stack(written, axis=1), expected.numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.stack(grades, axis=1), torch.stack(max_grade, 1), rtol=1e-9)

    # the squeezed replica starts with its two squeezed atoms flagged, the others are never
    k = squeezed_replica(run)
    assert float(fractions[k][0]) == pytest.approx(2 / 9) and expected[-1, k] > LEVEL.level_ps
    others = [r for r in range(4) if r != k]
    assert expected[:, others].abs().max() == 0
    record = json.loads((run / "early_warning.json").read_text())
    assert record["final_cli_ps"] == pytest.approx(expected[-1].tolist(), rel=1e-12)
    assert record["crossing_ps"] == pytest.approx([0.01 if r == k else None for r in range(4)])
    assert record["critical_level_ps"] == LEVEL.level_ps
    assert record["lead_ps"] == [None] * 4  # nothing stopped a replica: no failure to lead
    assert (run / "early_warning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_says_which_replicas_crossed(workspace):
    shutil.copytree(workspace / "whole", workspace / "again")
    result = simulate(workspace, "again")  # a finished run: reported again, not rerun
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "1 of 4 replicas passed the critical level" in text
    assert f"replica {squeezed_replica(workspace / 'whole')} at 0.010 ps" in text


def test_an_interrupted_and_resumed_run_writes_the_same_index(workspace, monkeypatch):
    call = LatentInstabilityMonitor.__call__

    def killed_at_step_35(self, state):
        if state.step == 35:  # after the checkpoint of step 30; frames beyond it are written
            raise Killed
        call(self, state)

    monkeypatch.setattr(LatentInstabilityMonitor, "__call__", killed_at_step_35)
    assert isinstance(simulate(workspace, "resumed").exception, Killed)
    monkeypatch.setattr(LatentInstabilityMonitor, "__call__", call)
    assert len(read_observable(workspace / "resumed" / "trajectory.h5", CLI)[0]) < 13
    result = simulate(workspace, "resumed")
    assert result.exit_code == 0, result.output
    # The index, a sum of flags times the frame interval, is the same to the bit. The grade is a
    # float64 matrix product whose last bit MKL may choose by the memory alignment of its
    # operands (seen once in CI: 7e-16 relative), so it is equal to rounding.
    for name, rtol in ((CLI, 0.0), ("max_extrapolation_grade", 1e-12)):
        whole = read_observable(workspace / "whole" / "trajectory.h5", name)
        resumed = read_observable(workspace / "resumed" / "trajectory.h5", name)
        for k in range(4):
            np.testing.assert_allclose(resumed[k], whole[k], rtol=rtol, err_msg=f"{name} {k}")
    for name in ("early_warning.json", "trajectory.h5"):
        assert (workspace / "resumed" / name).exists()
    assert json.loads((workspace / "resumed" / "early_warning.json").read_text()) == json.loads(
        (workspace / "whole" / "early_warning.json").read_text()
    )


def test_refitted_domain_in_the_same_out_is_refused(workspace):
    shutil.copytree(workspace / "whole", workspace / "refit")
    model = warned_model()  # the same weights, another stored early warning
    domain = stored_early_warning(model).domain
    attach_early_warning(model, EarlyWarning(domain, {}))
    save_potential(model, workspace / "refitted.pt")
    other = simulate(workspace, "refit", "--time-ps", "0.04", model="refitted.pt")
    assert refused(other, "run.json: this run used early_warning_model='[0-9a-f]+', not '")
    off = simulate(workspace, "refit", "--time-ps", "0.04", "--no-early-warning")
    assert refused(off, "this run used early_warning_model='[0-9a-f]+', not None")
    plain = simulate(workspace, "unwarned", "--time-ps", "0.02", "--no-early-warning")
    assert plain.exit_code == 0, plain.output
    resumed = simulate(workspace, "unwarned", "--time-ps", "0.04")  # the warning on by default
    assert refused(resumed, "made without the early warning; continue it with --no-early-w")
    # --early-warning asks for what the run already used: it continues
    result = simulate(workspace, "refit", "--time-ps", "0.04", "--early-warning")
    assert result.exit_code == 0, result.output
    assert len(read_observable(workspace / "refit" / "trajectory.h5", CLI)[0]) == 17


def test_the_warning_is_refused_without_a_domain_or_with_the_uncertainty(workspace):
    asked = simulate(workspace, "plain", "--early-warning", model="plain.pt")
    assert refused(asked, "^--early-warning: .*plain.pt carries no latent domain; add one with "
                   "stablemd early-warning fit")  # fmt: skip
    assert not (workspace / "plain").exists()
    result = simulate(workspace, "plain", model="plain.pt")  # no domain: no warning
    assert result.exit_code == 0, result.output
    assert not (workspace / "plain" / "early_warning.json").exists()
    assert len(read_observable(workspace / "plain" / "trajectory.h5", "temperature")[0]) == 13
    with pytest.raises(InputError, match="records no cumulative_latent_instability"):
        read_observable(workspace / "plain" / "trajectory.h5", CLI)

    potential = load_potential(workspace / "warned.pt")
    for asked in ({"early_warning": True}, {"freeze_on_warning": True}):
        settings = SimulationSettings(bias_uncertainty=0.0, **asked)
        with pytest.raises(InputError, match="uncertainty-biased MD"):
            settings.run_early_warning(potential)
    # by default a run that uses the uncertainty runs without the warning
    assert SimulationSettings(stop_uncertainty=1.0).run_early_warning(potential) is None
    assert SimulationSettings().run_early_warning(potential) is not None


def test_freezing_on_the_warning_stops_the_replica_at_its_crossing(workspace):
    result = simulate(workspace, "frozen", "--freeze-on-warning")
    assert result.exit_code == 0, result.output
    run = workspace / "frozen"
    k = squeezed_replica(run)
    lengths = [len(read_replica(run / "trajectory.h5", r)["time_fs"]) for r in range(4)]
    assert lengths == [5 if r == k else 13 for r in range(4)]  # it ends at the crossing, 10 fs
    text = " ".join(result.output.split())
    assert f"replica {k} at 0.010 ps (cli_above_critical_level)" in text
