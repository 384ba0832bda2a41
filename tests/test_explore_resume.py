"""The explore loop stopped after each of its stages, and in the middle of a step's labels,
then rerun: it ends with the labels of an uninterrupted run, each requested from the oracle
once and stored in the training database once.

The stops come from the loop's ``after`` seam, told each point where what came before is on
disk. One case is a real process ending there (``os._exit(9)``, as after SIGKILL); the chain
through every stage runs in this process with an exception that nothing catches (the same
point of the code, without a new interpreter per stop)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from explore_support import make_case, settings
from md_support import single_thread  # noqa: F401 (fixture)

import stablemd
from stablemd.data.database import read_frames
from stablemd.explore.active_learning.loop import ExploreRun
from stablemd.explore.active_learning.pool import Pool
from stablemd.explore.active_learning.record import STAGES
from stablemd.models.latent_domain import LatentDomain, latent_features
from stablemd.models.registry import load_potential
from stablemd.training.workflow import locate_training_frames

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
SRC = Path(stablemd.__file__).resolve().parents[1]
ORACLE = "dying_oracle:CountingEMT"
SCRIPT = """
import os
import sys
from pathlib import Path
import torch
from explore_support import settings
from stablemd.explore.active_learning.loop import ExploreRun
torch.set_num_threads(1)
model, data, out, log = map(Path, sys.argv[1:5])

def after(point):
    if point == sys.argv[5]:
        os._exit(9)

ExploreRun(
    model, data, out, settings(oracle="dying_oracle:CountingEMT"), {"log": str(log)}, after=after
).run()
"""


class Killed(BaseException):
    """What ``os._exit`` raises in the in-process chain."""


def explore(model, data, out, log, after=None):
    options = {"log": str(log)}
    return ExploreRun(model, data, out, settings(oracle=ORACLE), options, after=after).run()


def explored_rows(out: Path) -> list:
    return [a for a in read_frames(out / "train.db") if a.info.get("source") == "explore"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The case and an uninterrupted run of it: (model, data, run directory, oracle log)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    directory = tmp_path_factory.mktemp("explore")
    model, data = make_case(directory)
    explore(model, data, directory / "reference", directory / "reference.log")
    torch.set_num_threads(threads)
    return model, data, directory / "reference", directory / "reference.log"


def check_same_as_reference(out: Path, log: Path, reference) -> None:
    _, _, reference_out, reference_log = reference
    calls = log.read_text().splitlines()
    assert len(calls) == 4 and len(set(calls)) == 4  # each label requested once
    assert Counter(calls) == Counter(reference_log.read_text().splitlines())
    rows = explored_rows(out)
    ids = [a.info["label_id"] for a in rows]
    assert len(ids) == len(set(ids)) == 4  # each stored once
    assert sorted(ids) == sorted(a.info["label_id"] for a in explored_rows(reference_out))
    for atoms in rows:
        assert {"explore_step", "replica", "time_fs", "score", "total_u"} <= set(atoms.info)
    curve = json.loads((out / "learning_curve.json").read_text())["steps"]
    assert [row["step"] for row in curve] == [0, 1, 2]
    assert curve == json.loads((reference_out / "learning_curve.json").read_text())["steps"]
    state = json.loads((out / "state.json").read_text())
    assert state["finished"] and state["labels_used"] == 4


def test_stopped_after_every_stage_ends_as_an_uninterrupted_run(
    reference,
    tmp_path,
    single_thread,  # noqa: F811
):
    given, data, _, _ = reference
    out, log = tmp_path / "stopped", tmp_path / "stopped.log"
    model = tmp_path / "given.pt"
    shutil.copyfile(given, model)

    def stop_at(point):
        def after(reached):
            if reached == point:
                raise Killed(point)

        return after

    # step 1 stopped after each stage, after its first label and after its rows are written
    # but not recorded; step 2 then runs through
    points = ["start", "pool", "selected", "label:1", "labelled", "rows", *STAGES[3:]]
    assert set(STAGES) <= set(points)
    for point in points:
        with pytest.raises(Killed):
            explore(model, data, out, log, after=stop_at(point))
        state = json.loads((out / "state.json").read_text())
        recorded = {"label:1": "selected", "rows": "labelled"}.get(point, point)
        assert state["stage"] == recorded
        if point == "start":  # the user moves the input model: the run goes on with it
            model = model.rename(tmp_path / "moved.pt")
    explore(model, data, out, log)
    check_same_as_reference(out, log, reference)
    # a finished run rerun does nothing more
    explore(model, data, out, log)
    assert len(log.read_text().splitlines()) == 4


def test_a_process_ended_between_two_labels_resumes(reference, tmp_path, single_thread):  # noqa: F811
    model, data, _, _ = reference
    out, log = tmp_path / "killed", tmp_path / "killed.log"
    env = {**os.environ, "PYTHONPATH": f"{SRC}:{TESTS}", "OMP_NUM_THREADS": "1"}
    process = subprocess.run(
        [sys.executable, "-c", SCRIPT, model, data, out, log, "label:1"], env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert process.returncode == 9, process.stderr
    assert len(log.read_text().splitlines()) == 1
    explore(model, data, out, log)
    check_same_as_reference(out, log, reference)


def max_grade_of_pool(out: Path, step: int, model: Path, training: list) -> tuple[float, int]:
    """The largest atomic grade among the pool of ``step`` and the atom (in its frame) that
    has it, against the latent domain of ``model`` fitted on ``training`` frames."""
    potential = load_potential(model)
    pool = Pool.from_dict(torch.load(out / f"step-{step:03d}" / "pool.pt", weights_only=True))
    domain = LatentDomain.fit(*latent_features(potential, training))
    grades = [domain.grade(*latent_features(potential, [c.atoms])) for c in pool.candidates]
    best = max(grades, key=lambda g: float(g.max()))
    return float(best.max()), int(best.argmax())


def test_max_grade_selection_runs_and_resumes_as_an_uninterrupted_run(
    reference,
    tmp_path,
    single_thread,  # noqa: F811
):
    """The loop with ``selection="max-grade"``, uninterrupted and stopped after the pool (the
    selection then made on resume), after the selection and after retraining: the same labels,
    each requested once, with the same scores. Each step's first pick has the largest grade
    of its pool against the domain of the current model fitted on the frames it trained on:
    the starting model's training frames in step 1, those and step 1's labels in step 2."""
    model, data, _, _ = reference

    def explore_max_grade(out, log, after=None):
        options = {"log": str(log)}
        chosen = settings(oracle=ORACLE, selection="max-grade")
        return ExploreRun(model, data, out, chosen, options, after=after).run()

    whole = tmp_path / "whole"
    explore_max_grade(whole, tmp_path / "whole.log")
    out, log = tmp_path / "stopped", tmp_path / "stopped.log"
    for point in ("pool", "selected", "retrained"):

        def after(reached, point=point):
            if reached == point:
                raise Killed(point)

        with pytest.raises(Killed):
            explore_max_grade(out, log, after=after)
    explore_max_grade(out, log)
    calls = log.read_text().splitlines()
    assert len(calls) == len(set(calls)) == 4
    assert Counter(calls) == Counter((tmp_path / "whole.log").read_text().splitlines())
    for step in (1, 2):
        selected = [json.loads((d / f"step-{step:03d}" / "selected.json").read_text())
                    for d in (whole, out)]  # fmt: skip
        assert selected[0] == selected[1]
    rows = explored_rows(out)
    assert len(rows) == 4 and all({"score", "score_atom"} <= set(a.info) for a in rows)
    frames = read_frames(out / "train.db")
    n_start = len(frames) - 4  # the starting model's training and validation frames
    located = locate_training_frames(load_potential(model).metadata, data, read_frames(data))
    starting_training = frames[: len(located.train)]
    assert n_start == len(located.train) + len(located.val)
    step_one = [a for a in rows if a.info["explore_step"] == 1]
    for step, current, training in (
        (1, model, starting_training),
        (2, out / "step-001" / "model_u.pt", starting_training + step_one),
    ):
        first = json.loads((out / f"step-{step:03d}" / "selected.json").read_text())["selected"]
        score, atom = max_grade_of_pool(out, step, current, training)
        assert first[0]["score"] == pytest.approx(score) and first[0]["score_atom"] == atom
