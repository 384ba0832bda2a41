"""The main job end to end on a tiny setting: every stage runs, resumes, and the story it tells
matches the numbers it wrote."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from stablemd.cli.main import app
from stablemd.quickstart import QuickstartSettings, run_quickstart

TINY = dict(
    steps=100, trajectories=2, n_train=8, train_epochs=3, replicas=4, stability_ps=0.05,
    stable_epochs=2, seed=1,
)  # fmt: skip


@pytest.mark.slow
def test_quickstart_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "qs"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()] + ["--split-by=random"]
    result = CliRunner().invoke(app, ["quickstart", "--out", str(out), "--no-progress", *args])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "stability" / "summary.json").read_text())
    assert set(summary) == {"settings", "baseline", "stable"}
    for name in ("survival.png", "h_r.png"):
        assert (out / "stability" / name).stat().st_size > 0
    assert (out / "model-stable_run" / "stable_training.png").is_file()
    kept = round(summary["stable"]["fraction_stable"] * 4)
    assert f"after StABlE the model kept {kept} of 4 replicas" in " ".join(result.output.split())
    assert "no new reference calculation" in result.output
    for label in ("baseline", "stable"):  # each report reads its model's stability run back
        report = json.loads((out / f"report-{label}" / "report.json").read_text())
        stability = next(s for s in report["sections"] if s["title"] == "Stability in MD")
        times = stability["data"]["summary"]["stable_times_ps"]
        assert times == summary[label]["stable_times_ps"]
        assert not (out / f"report-{label}" / "stability").exists()

    settings = QuickstartSettings(**TINY, split_by="random")
    again = run_quickstart(out, settings, progress=False)  # all stored
    stored = again.stability["stable"]["summary"].stable_times_ps
    assert list(stored) == summary["stable"]["stable_times_ps"]
    assert again.stage_seconds["StABlE fine-tuning, no new labels"] < 5


@pytest.mark.parametrize(
    "option",
    [
        ["--replicas", "1"],
        ["--split-by", "sideways"],
        ["--trajectories", "1"],
        ["--n-train", "301"],
        ["--stable-lr-warmup", "-1"],
    ],
)
def test_bad_quickstart_option_is_named(option):
    result = CliRunner().invoke(app, ["quickstart", *option])
    assert result.exit_code != 0
    assert option[0] in str(result.exception)


def test_expected_stage_times_follow_the_work_of_each_stage():
    from stablemd.quickstart import DEFAULT_STAGE_SECONDS, STAGES, expected_stage_seconds

    default = expected_stage_seconds(QuickstartSettings())
    assert default == list(DEFAULT_STAGE_SECONDS) and len(default) == len(STAGES)
    longer = expected_stage_seconds(QuickstartSettings(stable_epochs=80, replicas=32))
    assert longer[4] == pytest.approx(default[4] * 80 / QuickstartSettings().stable_epochs)
    assert longer[3::2] == pytest.approx([default[3] / 2, default[5] / 2])


@pytest.mark.slow
def test_split_by_trajectory_trains_on_consecutive_frames_and_takes_h_r_from_all(tmp_path):
    from stablemd.data.database import read_frames
    from stablemd.models.registry import read_model_file

    settings = QuickstartSettings(**{**TINY, "stable_epochs": 1})  # the default split
    assert settings.split_by == "trajectory"
    result = run_quickstart(tmp_path / "qs", settings, progress=False)
    frames = read_frames(result.data)
    train = read_model_file(result.models["baseline"])["metadata"]["training"]["train_indices"]
    (trajectory,) = {frames[i].info["trajectory"] for i in train}
    steps = sorted(a.info["step"] for a in frames if a.info["trajectory"] == trajectory)
    assert sorted(frames[i].info["step"] for i in train) == steps[: len(train)]  # the first
    assert result.n_reference == len(frames) != result.n_train
    reference = read_model_file(result.models["stable"])["metadata"]["stable"]["reference"]
    assert reference["n_eff"] == len(frames)  # StABlE's g_ref: every reference frame
