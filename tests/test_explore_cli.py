"""``stablemd explore`` end to end on the tiny EMT case, and the loop's per-step seam."""

from __future__ import annotations

import json

import pytest
from explore_support import ORACLE, make_case, settings
from md_support import single_thread  # noqa: F401 (fixture)
from test_cli import run

from stablemd.core.errors import InputError
from stablemd.data.database import read_frames, write_frames
from stablemd.data.fingerprints import frame_fingerprint
from stablemd.explore.active_learning.loop import ExploreRun
from stablemd.explore.uncertainty.estimator import model_uncertainty
from stablemd.models.registry import load_potential
from stablemd.training.workflow import locate_training_frames

pytestmark = pytest.mark.slow

SMALL = [
    "--oracle", ORACLE, "--per-step", "2", "--replicas", "2", "--pool-steps", "40",
    "--every", "10", "--epochs", "1", "--stop-uncertainty", "100", "--selection", "max-dist",
    "--workers", "0",
    "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return make_case(tmp_path_factory.mktemp("case"))
    finally:
        torch.set_num_threads(threads)


def test_explore_command_runs_resumes_extends_and_refuses_other_options(
    case,
    tmp_path,
    capsys,
    single_thread,  # noqa: F811
):
    model, data = case
    out = tmp_path / "run"
    argv = ["explore", "--model", str(model), "--data", str(data), "--out", str(out), *SMALL]
    code, stdout, err = run([*argv, "--budget", "2"], capsys)
    assert code == 0, err
    assert "oracle calls: 2 of 2" in stdout
    for name in ("model.pt", "learning_curve.json", "learning_curve.png", "summary.md"):
        assert (out / name).is_file(), name
    final = load_potential(out / "model.pt")
    assert model_uncertainty(final) is not None
    explored = [a for a in read_frames(out / "train.db") if a.info.get("source") == "explore"]
    assert len(explored) == 2 and {a.info["explore_step"] for a in explored} == {1}
    assert all(a.info["level_of_theory"] == ORACLE for a in explored)
    # the data file is an input: never written
    assert len(read_frames(data)) == 30
    # every explored label trains; the starting model's validation frames validate every step
    start = load_potential(model).metadata["training"]
    retrained = load_potential(out / "step-001" / "model.pt").metadata["training"]
    assert sorted(retrained["val_frame_fingerprints"]) == sorted(start["val_frame_fingerprints"])
    explored_prints = {frame_fingerprint(a) for a in explored}
    assert set(retrained["train_frame_fingerprints"]) == (
        set(start["train_frame_fingerprints"]) | explored_prints
    )
    # a larger budget continues the same run by one step; other options are refused
    code, stdout, err = run([*argv, "--budget", "4"], capsys)
    assert code == 0, err
    curve = json.loads((out / "learning_curve.json").read_text())["steps"]
    assert [row["step"] for row in curve] == [0, 1, 2]
    assert [row["labels"] for row in curve] == [20, 22, 24]
    code, _, err = run([*argv, "--budget", "4", "--tau", "0.5"], capsys)
    assert code == 2 and "tau" in err and len(err.strip().splitlines()) == 1
    code, _, err = run([*argv, "--budget", "3"], capsys)  # 4 oracle calls made already
    assert code == 2 and "--budget 3" in err and "made or selected 4 oracle calls" in err
    # --overwrite starts anew
    code, stdout, err = run([*argv, "--budget", "2", "--tau", "0.5", "--overwrite"], capsys)
    assert code == 0, err
    curve = json.loads((out / "learning_curve.json").read_text())["steps"]
    assert [row["step"] for row in curve] == [0, 1]


def test_failed_labels_are_recorded_and_skipped_and_the_step_hook_sees_each_step(
    case,
    tmp_path,
    single_thread,  # noqa: F811
):
    model, data = case
    seen = []

    def hook(context):
        seen.append(context.step)
        return {"pool_frames": len(context.pool.candidates) if context.pool else 0}

    options = {"log": str(tmp_path / "calls.log"), "fail_on": 1}
    explore = ExploreRun(
        model, data, tmp_path / "run", settings(oracle="dying_oracle:CountingEMT",
        selection="random"), options, step_metrics=hook,
    )  # fmt: skip
    result = explore.run()
    assert seen == [0, 1, 2]
    assert [row["step_metrics"]["pool_frames"] for row in result.curve] == [0, 8, 8]
    assert len(result.record.failures) == 1
    assert "SCF not converged" in result.record.failures[0]["error"]
    assert result.record.labels_used == 4  # the failed call counts against the budget
    explored = [a for a in read_frames(tmp_path / "run" / "train.db") if "label_id" in a.info]
    assert len(explored) == 3
    assert result.record.failures[0]["request_id"] not in {a.info["label_id"] for a in explored}
    assert all("score" not in a.info for a in explored)  # random selection has no score


def test_data_of_another_or_no_level_of_theory_or_without_test_frames_is_refused(case, tmp_path):
    model, data = case
    frames = read_frames(data)
    for atoms in frames:
        atoms.info["level_of_theory"] = "GFN2-xTB"
    write_frames(tmp_path / "xtb.db", frames)
    with pytest.raises(InputError, match=r"labels with ase.calculators.emt:EMT, but frame 0 of"):
        ExploreRun(model, tmp_path / "xtb.db", tmp_path / "run", settings())
    # one frame of another level among frames of the oracle's, or of none, is refused by index
    frames = read_frames(data)
    frames[7].info["level_of_theory"] = "PBE"
    write_frames(tmp_path / "mixed.db", frames)
    with pytest.raises(InputError, match=r"but frame 7 of \S+mixed.db was labelled with PBE$"):
        ExploreRun(model, tmp_path / "mixed.db", tmp_path / "run", settings())
    frames[7].info.pop("level_of_theory")
    write_frames(tmp_path / "unknown.db", frames)
    with pytest.raises(InputError, match=r"unknown.db: frame 7 records no level of theory"):
        ExploreRun(model, tmp_path / "unknown.db", tmp_path / "run", settings())
    # a test set is measured against the oracle's labels: the same level, or refused
    with pytest.raises(InputError, match=r"but frame 0 of \S+xtb.db was labelled with GFN2-xTB"):
        ExploreRun(model, data, tmp_path / "run", settings(), tests=(tmp_path / "xtb.db",))
    frames = read_frames(data)
    located = locate_training_frames(load_potential(model).metadata, data, frames)
    write_frames(tmp_path / "used.db", [frames[i] for i in located.train + located.val])
    with pytest.raises(InputError, match="no test frames; give --test"):
        ExploreRun(model, tmp_path / "used.db", tmp_path / "run", settings())
    assert not (tmp_path / "run").exists()


def test_a_budget_below_the_calls_made_or_selected_is_refused_before_any_write(
    case,
    tmp_path,
    single_thread,  # noqa: F811
):
    model, data = case

    class Stop(BaseException):
        pass

    def stop_after_selection(point):
        if point == "selected":
            raise Stop

    out = tmp_path / "run"
    with pytest.raises(Stop):
        ExploreRun(model, data, out, settings(budget=4), after=stop_after_selection).run()
    recorded = (out / "run.json").read_bytes()
    with pytest.raises(InputError, match=r"^--budget 1: the run in \S+ has made or selected 2 "):
        ExploreRun(model, data, out, settings(budget=1))
    assert (out / "run.json").read_bytes() == recorded
