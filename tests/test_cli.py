"""The command line end to end: train → evaluate, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import shutil

import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from stablemd.cli.main import main
from stablemd.data.database import read_frames, write_frames


def run(argv, capsys):
    """Run ``stablemd argv``; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture()
def ethanol_db(ethanol_frames, tmp_path):
    path = tmp_path / "ethanol.db"
    write_frames(path, ethanol_frames)
    return path


def test_train_then_evaluate_on_held_out_frames(ethanol_db, tmp_path, capsys):
    config = tmp_path / "small.yaml"
    config.write_text("model_options: {n_features: 16, n_interactions: 2}\nbatch_size: 8\n")
    model = tmp_path / "model.pt"
    code, out, _ = run(
        [
            "train",
            "--data",
            str(ethanol_db),
            "--n-train",
            "30",
            "--n-val",
            "10",
            "--out",
            str(model),
            "--config",
            str(config),
            "--max-epochs",
            "2",
            "--no-progress",
        ],
        capsys,
    )
    assert code in (0, None) and model.is_file()
    assert "validation errors" in out
    metrics_path = tmp_path / "metrics.json"
    code, _, _ = run(
        ["evaluate", "--model", str(model), "--data", str(ethanol_db), "--json", str(metrics_path)],
        capsys,
    )
    metrics = json.loads(metrics_path.read_text())
    assert metrics["n_frames"] == 60 - 30 - 10  # the held-out frames only
    # a copy of the data elsewhere, or its frames in another order, are recognised frame by
    # frame by content; other structures are not
    moved = tmp_path / "moved" / "ethanol.db"
    moved.parent.mkdir()
    shutil.copy(ethanol_db, moved)
    frames = read_frames(ethanol_db)
    write_frames(tmp_path / "reversed.db", frames[::-1])
    others = []
    for atoms in frames:
        other = atoms.copy()
        other.positions += 0.01
        other.calc = SinglePointCalculator(other, **atoms.calc.results)
        others.append(other)
    write_frames(tmp_path / "other.db", others)
    for data, expected, said in (
        (moved, 20, "40 frames of ethanol.db recognised by content"),
        (tmp_path / "reversed.db", 20, "40 frames of reversed.db recognised by content"),
        (tmp_path / "other.db", 60, "no frame of other.db was used to train"),
    ):
        _, out, _ = run(
            ["evaluate", "--model", str(model), "--data", str(data), "--json", str(metrics_path),
             "--overwrite"], capsys,
        )  # fmt: skip
        assert json.loads(metrics_path.read_text())["n_frames"] == expected, data
        assert said in " ".join(out.split()), out
    assert set(metrics["forces_per_element_eV_per_A"]) == {"C", "H", "O"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["evaluate", "--model", "missing.pt", "--data", "x.db"],
            "missing.pt: no such stablemd model file",
        ),
        (
            ["train", "--data", "nowhere.db", "--n-train", "1", "--n-val", "1", "--out", "m.pt"],
            "nowhere.db",
        ),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_config_field_is_named(ethanol_db, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("learning_rate: -1\n")
    code, _, err = run(
        [
            "train",
            "--data",
            str(ethanol_db),
            "--n-train",
            "5",
            "--n-val",
            "5",
            "--out",
            str(tmp_path / "m.pt"),
            "--config",
            str(config),
        ],
        capsys,
    )
    assert code == 2 and "bad.yaml" in err and "learning_rate" in err
    assert not (tmp_path / "m.pt").exists()


def test_too_many_training_frames_is_refused(ethanol_db, tmp_path, capsys):
    code, _, err = run(
        [
            "train",
            "--data",
            str(ethanol_db),
            "--n-train",
            "100",
            "--n-val",
            "10",
            "--out",
            str(tmp_path / "m.pt"),
        ],
        capsys,
    )
    assert code == 2 and "60" in err
