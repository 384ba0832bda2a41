"""A catalogue of bad or careless inputs, as a new user types them, across every command.

Each entry runs ``stablemd ...`` in a fresh copy of one small workspace and must end with exit
code 2, one line on stderr without a traceback, a message naming the file, option, frame or atom
at fault, and every file of the workspace as it was (no file changed, none left behind).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import sqlite3
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from stablemd.cli.main import main
from stablemd.core.errors import InputError
from stablemd.data.database import write_frames
from stablemd.models.painn import PaiNN
from stablemd.models.registry import save_potential
from stablemd.systems import get_system

TINY_CONFIG = "model_options: {n_features: 8, n_interactions: 1}\nbatch_size: 8\n"
#: Options that keep an accidental MD run short (they never should run: every entry is refused).
SHORT_MD = ["--replicas", "2", "--time-ps", "0.005", "--no-progress"]
#: ... and an accidental StABlE run.
SHORT_STABLE = ["--replicas", "2", "--steps-per-epoch", "40", "--max-epochs", "1", "--no-progress"]


def run(argv: list[str], capsys) -> tuple[int | None, str, str]:
    """``stablemd argv`` in-process: (exit code, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _write_workspace(root: Path, frames) -> None:
    """Every file the catalogue needs, good and bad."""
    write_frames(root / "data.db", frames)
    foreign = [a.copy() for a in frames[:3]]
    for atoms, source in zip(foreign, frames, strict=False):
        atoms.positions += 0.1  # other structures, the same labels
        atoms.calc = SinglePointCalculator(atoms, **source.calc.results)
    write_frames(root / "foreign.db", foreign)
    ase.io.write(root / "frames.extxyz", frames, format="extxyz")
    of_pbe = ase.io.read(root / "frames.extxyz", ":")
    for atoms in of_pbe:
        atoms.info["level_of_theory"] = "PBE"
    ase.io.write(root / "pbe.extxyz", of_pbe, format="extxyz")
    (root / "tiny.yaml").write_text(TINY_CONFIG)
    code = main_exit(
        ["train", "--data", str(root / "data.db"), "--n-train", "6", "--n-val", "3",
         "--out", str(root / "model.pt"), "--config", str(root / "tiny.yaml"),
         "--max-epochs", "1", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    torch.manual_seed(0)
    save_potential(PaiNN([1, 6], n_features=8, n_interactions=1), root / "hc.pt")
    # starts in the built-in system's atom order, and the same molecule reversed
    ethanol = get_system("ethanol").atoms
    ase.io.write(root / "starts.xyz", [ethanol, ethanol])
    ase.io.write(root / "reversed.xyz", [ethanol, ethanol[::-1]])
    ase.io.write(root / "water.xyz", molecule("H2O"))
    ase.io.write(root / "ether.xyz", molecule("CH3OCH3"))  # C2H6O bonded otherwise
    clash = ethanol.copy()
    clash.positions[5] = clash.positions[6] + [0.1, 0.0, 0.0]
    ase.io.write(root / "clash.xyz", [ethanol, clash])
    ase.io.write(root / "clash-only.xyz", clash)
    ase.io.write(root / "clash-reversed.xyz", [ethanol[::-1], clash[::-1]])
    moved = ethanol.copy()  # the hydroxyl hydrogen handed to the methyl carbon
    moved.positions[8] = moved.positions[0] + [0.0, 0.0, 1.09]
    ase.io.write(root / "rebonded.xyz", [ethanol, moved])
    unlabelled = [a.copy() for a in frames[:3]]
    unlabelled[0].calc = frames[0].calc
    ase.io.write(root / "one-labelled.extxyz", unlabelled, format="extxyz")
    bad_z = {"R": np.zeros((2, 3, 3)), "E": np.zeros(2), "F": np.zeros((2, 3, 3)), "z": [1, 1, 200]}
    np.savez(root / "bad-z.npz", **bad_z)
    np.savez(root / "no-reference.npz", x=np.zeros(3))
    torch.save(torch.zeros(3), root / "tensor.pt")
    with open(root / "pickle.pt", "wb") as handle:
        pickle.dump({"format": {1, 2}}, handle)
    (root / "notes.txt").write_text("hello\n")
    (root / "junk.npz").write_bytes(b"nonsense" * 8)
    (root / "junk.xyz").write_text("3\ncomment\nXx 0 0 0\n")
    (root / "junk.db").write_bytes(b"not sqlite at all" * 8)
    with sqlite3.connect(root / "other.db") as con:
        con.execute("create table t(x)")
    (root / "adir").mkdir()
    (root / "adir" / "keep.txt").write_text("x")
    (root / "metrics.json").write_text("{}\n")
    configs = {
        "batch0.yaml": "batch_size: 0\n",
        "cutoff.yaml": "model_options: {cutoff: -1}\n",
        "unknown-option.yaml": "model_options: {n_features: 8, widht: 3}\n",
        "features0.yaml": "model_options: {n_features: 0}\n",
        "list.yaml": "- 1\n- 2\n",
        "broken.yaml": "a: [\n",
        "stable-unknown.yaml": "replica: 4\n",
        "stable-replicas.yaml": "replicas: 1\n",
    }
    for name, text in configs.items():
        (root / name).write_text(text)
    # output directories that hold something else than a run of the command
    (root / "foreign-run").mkdir()
    (root / "foreign-run" / "trajectory.h5").write_text("not hdf5")
    (root / "broken-run").mkdir()
    (root / "broken-run" / "run.json").write_text("{not json")
    (root / "broken-stability" / "tiny").mkdir(parents=True)
    (root / "broken-stability" / "tiny" / "result.json").write_text("[1, 2]")
    (root / "broken-stability" / "tiny" / "settings.json").write_text("{}")
    save_potential(PaiNN([1, 6, 8], n_features=8, n_interactions=1), root / "tiny.pt")


def main_exit(argv: list[str]) -> int | None:
    try:
        main(argv)
    except SystemExit as exc:
        return exc.code
    return 0


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, ethanol_frames) -> Path:
    """The files every entry starts from, made once (one 1-epoch training run of a tiny model)."""
    root = tmp_path_factory.mktemp("workspace")
    frames = [a.copy() for a in ethanol_frames[:12]]
    for atoms, source in zip(frames, ethanol_frames, strict=False):
        atoms.calc = SinglePointCalculator(atoms, **source.calc.results)
    _write_workspace(root, frames)
    return root


@pytest.fixture()
def case_dir(workspace, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the workspace as the working directory, with its links."""
    work = tmp_path / "work"
    shutil.copytree(workspace, work)
    os.link(work / "data.db", work / "hardlink.db")
    os.symlink("data.db", work / "symlink.db")
    os.symlink("data.db", work / "data-link.xyz")
    monkeypatch.chdir(work)
    return work


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (directories as entries too)."""
    out = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            out[key] = "link:" + os.readlink(path)
        elif path.is_file():
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[key] = "dir"
    return out


def c(*args: str) -> list[str]:
    return list(args)


TRAIN = c("train", "--data", "data.db", "--n-train", "6", "--n-val", "3", "--no-progress")
SIMULATE = c("simulate", "--model", "model.pt", "--system", "ethanol", *SHORT_MD)
STABILITY = c("stability", "--model", "model.pt", "--system", "ethanol", *SHORT_MD)
EXPLORE = c(
    "explore", "--model", "model.pt", "--data", "data.db", "--workers", "0", "--no-progress"
)
UFIT = c("uncertainty", "fit", "--model", "model.pt", "--data", "data.db")
STABLE = c("stable-train", "--model", "model.pt", "--data", "data.db", *SHORT_STABLE)
EW_FIT = c("early-warning", "fit", "--model", "model.pt", "--data", "data.db")

#: (id, argv, fragments the one-line message must contain)
CATALOGUE = [
    # -- data import: the output rule ------------------------------------------------------
    ("import-onto-itself", c("data", "import", "data.db", "--out", "data.db", "--overwrite"),
     ["--out data.db", "also an input"]),
    ("import-onto-hardlink", c("data", "import", "data.db", "--out", "hardlink.db", "--overwrite"),
     ["--out hardlink.db", "also an input"]),
    ("import-onto-symlink", c("data", "import", "data.db", "--out", "symlink.db", "--overwrite"),
     ["--out symlink.db", "also an input"]),
    ("import-existing", c("data", "import", "frames.extxyz", "--out", "data.db"),
     ["--out data.db", "already exists", "--overwrite"]),
    ("import-xyz-extension", c("data", "import", "frames.extxyz", "--out", "frames.xyz"),
     ["--out frames.xyz", ".db"]),
    ("import-partial-extension", c("data", "import", "frames.extxyz", "--out", "o.db.partial"),
     ["--out o.db.partial", ".db"]),
    ("import-parent-is-file", c("data", "import", "frames.extxyz", "--out", "notes.txt/o.db"),
     ["notes.txt is a file, not a directory"]),
    ("import-unwritable", c("data", "import", "frames.extxyz", "--out", "/proc/stablemd.db"),
     ["--out /proc/stablemd.db", "cannot write"]),
    ("import-into-directory", c("data", "import", "frames.extxyz", "--out", "adir", "--overwrite"),
     ["--out adir"]),
    ("import-other-level", c("data", "import", "pbe.extxyz", "--out", "o.db", "--level-of-theory",
     "GFN2-xTB"), ["pbe.extxyz", "frame 0", "'PBE'", "--level-of-theory 'GFN2-xTB'"]),
    ("import-blank-level", c("data", "import", "frames.extxyz", "--out", "o.db",
     "--level-of-theory", " "), ["--level-of-theory", "blank"]),
    ("import-missing", c("data", "import", "missing.npz", "--out", "o.db"),
     ["missing.npz", "no such file"]),
    ("import-unknown-type", c("data", "import", "notes.txt", "--out", "o.db"),
     ["notes.txt", "unknown file type"]),
    ("import-junk-npz", c("data", "import", "junk.npz", "--out", "o.db"),
     ["junk.npz", "not a readable npz file"]),
    ("import-npz-bad-element", c("data", "import", "bad-z.npz", "--out", "o.db"),
     ["bad-z.npz", "z[2] = 200"]),
    ("import-junk-xyz", c("data", "import", "junk.xyz", "--out", "o.db"),
     ["junk.xyz", "not a readable extended XYZ"]),
    ("import-unlabelled-frame", c("data", "import", "one-labelled.extxyz", "--out", "o.db"),
     ["one-labelled.extxyz", "frame 1 has no energy"]),
    ("import-junk-db", c("data", "import", "junk.db", "--out", "o.db"),
     ["junk.db", "not an ASE database"]),
    ("import-foreign-sqlite", c("data", "import", "other.db", "--out", "o.db"),
     ["other.db", "not an ASE database"]),
    ("import-unit-for-xyz",
     c("data", "import", "frames.extxyz", "--out", "o.db", "--energy-unit", "eV"),
     ["frames.extxyz", "energy unit"]),
    ("train-dynamic-without-velocities", c(*TRAIN, "--out", "m.pt", "--dynamic"),
     ["data.db", "frame 0 has no velocities"]),
    ("train-window-without-dynamic", c(*TRAIN, "--out", "m.pt", "--window-max", "3"),
     ["--window-max", "add --dynamic"]),
    ("train-dynamic-window-0", c(*TRAIN, "--out", "m.pt", "--dynamic", "--window-max", "0"),
     ["--window-max 0"]),
    ("import-trajectory-without-velocities",
     c("data", "import", "frames.extxyz", "--out", "o.db", "--timestep", "0.5"),
     ["frames.extxyz", "frame 0 has no velocities"]),
    ("import-trajectory-timestep-0",
     c("data", "import", "frames.extxyz", "--out", "o.db", "--timestep", "0"),
     ["--timestep 0", "positive"]),
    ("import-every-without-timestep",
     c("data", "import", "frames.extxyz", "--out", "o.db", "--every", "2"),
     ["--every 2", "--timestep"]),
    ("generate-negative-friction",
     c("data", "generate", "ethanol", "--out", "g.db", "--friction", "-1"),
     ["--friction -1", "negative"]),
    # -- data export ---------------------------------------------------------------------------
    ("export-onto-itself", c("data", "export", "data.db", "--out", "data.db", "--overwrite"),
     ["--out data.db"]),
    ("export-onto-link-to-input",
     c("data", "export", "data.db", "--out", "data-link.xyz", "--overwrite"),
     ["--out data-link.xyz", "also an input"]),
    ("export-db-extension", c("data", "export", "data.db", "--out", "copy.db"),
     ["--out copy.db", ".xyz"]),
    ("export-txt-extension", c("data", "export", "data.db", "--out", "frames.txt"),
     ["--out frames.txt", ".xyz"]),
    ("export-existing", c("data", "export", "data.db", "--out", "frames.extxyz"),
     ["--out frames.extxyz", "already exists"]),
    ("export-parent-is-file", c("data", "export", "data.db", "--out", "data.db/frames.xyz"),
     ["data.db is a file, not a directory"]),
    ("export-unwritable", c("data", "export", "data.db", "--out", "/proc/frames.xyz"),
     ["--out /proc/frames.xyz", "cannot write"]),
    ("export-from-xyz", c("data", "export", "frames.extxyz", "--out", "x.xyz"),
     ["frames.extxyz", "not an ASE database"]),
    ("export-from-model", c("data", "export", "model.pt", "--out", "x.xyz"),
     ["model.pt", "not an ASE database"]),
    # -- data info -----------------------------------------------------------------------------
    ("info-missing", c("data", "info", "missing.db"), ["missing.db", "no such database"]),
    ("info-directory", c("data", "info", "adir"), ["adir", "directory"]),
    ("info-junk", c("data", "info", "junk.db"), ["junk.db", "not an ASE database"]),
    # -- data generate: refused before any reference calculation -------------------------------
    ("generate-unknown-system", c("data", "generate", "benzene", "--out", "g.db"), ["benzene"]),
    ("generate-zero-kelvin",
     c("data", "generate", "ethanol", "--out", "g.db", "--temperature", "0"), ["temperature"]),
    ("generate-huge-timestep",
     c("data", "generate", "ethanol", "--out", "g.db", "--timestep", "100"),
     ["--timestep 100", "10 fs"]),
    ("generate-every-zero", c("data", "generate", "ethanol", "--out", "g.db", "--every", "0"),
     ["every"]),
    ("generate-unknown-oracle-new-dir",
     c("data", "generate", "ethanol", "--out", "new/dir/g.db", "--oracle", "dft"), ["dft"]),
    ("generate-negative-seed", c("data", "generate", "ethanol", "--out", "g.db", "--seed", "-1"),
     ["seed"]),
    ("generate-xyz-out", c("data", "generate", "ethanol", "--out", "g.xyz"),
     ["--out g.xyz", ".db"]),
    ("generate-into-directory", c("data", "generate", "ethanol", "--out", "adir"), ["--out adir"]),
    ("generate-parent-is-file", c("data", "generate", "ethanol", "--out", "notes.txt/g.db"),
     ["notes.txt is a file"]),
    ("generate-unwritable", c("data", "generate", "ethanol", "--out", "/proc/g.db"),
     ["--out /proc/g.db", "cannot write"]),
    ("generate-over-foreign-db", c("data", "generate", "ethanol", "--out", "data.db"),
     ["data.db", "not made by data generate"]),
    ("generate-unknown-param",
     c("data", "generate", "water", "--out", "g.db", "--param", "n_molecule=8"),
     ["n_molecule"]),
    ("generate-no-water",
     c("data", "generate", "water", "--out", "g.db", "--param", "n_molecules=0"),
     ["n_molecules"]),
    # -- train -----------------------------------------------------------------------------
    ("train-over-model", c(*TRAIN, "--out", "model.pt"), ["--out model.pt", "already exists"]),
    ("train-onto-data", c(*TRAIN, "--out", "data.db", "--overwrite"), ["--out data.db"]),
    ("train-db-extension", c(*TRAIN, "--out", "m.db"), ["--out m.db", ".pt"]),
    ("train-out-directory", c(*TRAIN, "--out", "adir"), ["--out adir"]),
    ("train-parent-is-file", c(*TRAIN, "--out", "notes.txt/m.pt"), ["notes.txt is a file"]),
    ("train-unwritable", c(*TRAIN, "--out", "/proc/m.pt"), ["--out /proc/m.pt", "cannot write"]),
    ("train-run-dir-is-file", c(*TRAIN, "--out", "m.pt", "--run-dir", "notes.txt"),
     ["--run-dir notes.txt", "not a directory"]),
    ("train-unknown-forces", c(*TRAIN, "--out", "m.pt", "--forces", "sideways"),
     ["--forces", "sideways"]),
    ("train-init-missing", c(*TRAIN, "--out", "m.pt", "--init", "missing.pt"), ["missing.pt"]),
    ("train-init-not-a-model", c(*TRAIN, "--out", "m.pt", "--init", "data.db"),
     ["data.db", "not a stablemd model file"]),
    ("train-n-train-zero", c(*TRAIN[:4], "0", "--n-val", "3", "--out", "m.pt"), ["--n-train 0"]),
    ("train-too-many-frames", c(*TRAIN[:4], "50", "--n-val", "3", "--out", "m.pt"),
     ["data.db", "12 frames", "--n-train 50"]),
    ("train-batch-size-zero", c(*TRAIN, "--out", "m.pt", "--config", "batch0.yaml"),
     ["batch0.yaml", "batch_size"]),
    ("train-negative-cutoff", c(*TRAIN, "--out", "m.pt", "--config", "cutoff.yaml"),
     ["cutoff.yaml", "model_options.cutoff"]),
    ("train-unknown-model-option", c(*TRAIN, "--out", "m.pt", "--config", "unknown-option.yaml"),
     ["unknown-option.yaml", "widht"]),
    ("train-zero-features", c(*TRAIN, "--out", "m.pt", "--config", "features0.yaml"),
     ["features0.yaml", "n_features"]),
    ("train-config-list", c(*TRAIN, "--out", "m.pt", "--config", "list.yaml"), ["list.yaml"]),
    ("train-config-broken", c(*TRAIN, "--out", "m.pt", "--config", "broken.yaml"),
     ["broken.yaml", "not valid YAML"]),
    ("train-config-binary", c(*TRAIN, "--out", "m.pt", "--config", "data.db"),
     ["data.db", "not a YAML"]),
    ("train-config-missing", c(*TRAIN, "--out", "m.pt", "--config", "missing.yaml"),
     ["missing.yaml"]),
    ("train-unknown-dtype", c(*TRAIN, "--out", "m.pt", "--dtype", "float16"), ["--dtype"]),
    ("train-max-time-negative", c(*TRAIN, "--out", "m.pt", "--max-time", "-1"), ["--max-time"]),
    ("train-data-not-db", c("train", "--data", "frames.extxyz", "--n-train", "6", "--n-val", "3",
                            "--out", "m.pt"), ["frames.extxyz", "not an ASE database"]),
    # -- evaluate ------------------------------------------------------------------------------
    ("evaluate-model-is-db", c("evaluate", "--model", "data.db", "--data", "data.db"),
     ["data.db: not a stablemd model file"]),
    ("evaluate-model-tensor", c("evaluate", "--model", "tensor.pt", "--data", "data.db"),
     ["tensor.pt: not a stablemd model file"]),
    ("evaluate-model-pickle", c("evaluate", "--model", "pickle.pt", "--data", "data.db"),
     ["pickle.pt: not a stablemd model file"]),
    ("evaluate-model-directory", c("evaluate", "--model", "adir", "--data", "data.db"),
     ["adir", "directory"]),
    ("evaluate-json-existing",
     c("evaluate", "--model", "model.pt", "--data", "data.db", "--json", "metrics.json"),
     ["--json metrics.json", "already exists"]),
    ("evaluate-json-onto-data",
     c("evaluate", "--model", "model.pt", "--data", "data.db", "--json", "data.db", "--overwrite"),
     ["--json data.db"]),
    ("evaluate-json-parent-is-file",
     c("evaluate", "--model", "model.pt", "--data", "data.db", "--json", "notes.txt/m.json"),
     ["notes.txt is a file"]),
    ("evaluate-json-unwritable",
     c("evaluate", "--model", "model.pt", "--data", "data.db", "--json", "/proc/m.json"),
     ["--json /proc/m.json", "cannot write"]),
    ("evaluate-json-directory",
     c("evaluate", "--model", "model.pt", "--data", "data.db", "--json", "adir", "--overwrite"),
     ["--json adir"]),
    ("evaluate-batch-size-zero",
     c("evaluate", "--model", "model.pt", "--data", "data.db", "--batch-size", "0"),
     ["--batch-size 0"]),
    ("evaluate-unknown-element", c("evaluate", "--model", "hc.pt", "--data", "data.db"),
     ["data.db: frame 0, atom", "is O", "hc.pt"]),
    # -- explore -------------------------------------------------------------------------------
    ("explore-no-uncertainty", c(*EXPLORE, "--out", "run"), ["model.pt carries no uncertainty"]),
    ("explore-unknown-selection", c(*EXPLORE, "--out", "run", "--selection", "lcmd"),
     ["--selection 'lcmd'"]),
    ("explore-zero-budget", c(*EXPLORE, "--out", "run", "--budget", "0"), ["--budget 0"]),
    ("explore-negative-workers", c(*EXPLORE, "--out", "run", "--workers", "-1"),
     ["--workers -1"]),
    ("explore-out-is-data", c(*EXPLORE, "--out", "data.db"), ["--out data.db", "input"]),
    ("explore-out-holds-model", c(*EXPLORE, "--out", "."),
     ["--model model.pt", "writes this file"]),
    ("explore-scheduler-not-an-address", c(*EXPLORE, "--out", "run", "--scheduler", "node1"),
     ["--scheduler node1", "cannot connect", "port"]),
    ("explore-scheduler-file-missing", c(*EXPLORE, "--out", "run", "--scheduler", "dask.json"),
     ["--scheduler dask.json", "no such scheduler file"]),
    ("explore-unknown-oracle", c(*EXPLORE, "--out", "run", "--oracle", "dft"),
     ["unknown oracle 'dft'"]),
    ("explore-bad-oracle-option", c(*EXPLORE, "--out", "run", "--oracle-option", "accuracy"),
     ["--oracle-option 'accuracy'", "KEY=VALUE"]),
    # -- simulate ------------------------------------------------------------------------------
    ("simulate-mts-untrained-head", c(*SIMULATE, "--out", "run", "--mts", "2"),
     ["model.pt", "conservative forces only"]),
    ("simulate-mts-zero", c(*SIMULATE, "--out", "run", "--mts", "0"), ["mts"]),
    ("simulate-pressure-molecule", c(*SIMULATE, "--out", "run", "--pressure", "1"),
     ["--pressure 1", "--system ethanol", "not periodic"]),
    ("simulate-pressure-mts", c(*SIMULATE, "--out", "run", "--pressure", "1", "--mts", "2"),
     ["--pressure 1", "--mts 2"]),
    ("simulate-pressure-direct",
     c(*SIMULATE, "--out", "run", "--pressure", "1", "--forces", "direct"),
     ["--pressure 1", "--forces direct"]),
    ("simulate-barostat-time-zero",
     c(*SIMULATE, "--out", "run", "--pressure", "1", "--barostat-time", "0"),
     ["--barostat-time 0"]),
    ("simulate-pressure-nan", c(*SIMULATE, "--out", "run", "--pressure", "nan"),
     ["--pressure nan"]),
    ("diagnose-short-conservation",
     c("diagnose", "--model", "model.pt", "--system", "ethanol", "--out", "rep",
       "--conservation-time-ps", "0.01"), ["conservation"]),
    ("diagnose-mts-untrained-head",
     c("diagnose", "--model", "model.pt", "--system", "ethanol", "--out", "rep", "--mts", "4"),
     ["model.pt", "conservative forces only"]),
    ("simulate-zero-kelvin", c(*SIMULATE, "--out", "run", "--temperature", "0"),
     ["--temperature 0"]),
    ("simulate-huge-timestep", c(*SIMULATE, "--out", "run", "--timestep", "100"),
     ["--timestep 100"]),
    ("simulate-unknown-thermostat", c(*SIMULATE, "--out", "run", "--thermostat", "berendsen"),
     ["--thermostat 'berendsen'"]),
    ("simulate-negative-replicas", c(*SIMULATE, "--out", "run", "--replicas", "-4"),
     ["--replicas -4"]),
    ("simulate-negative-time", c(*SIMULATE, "--out", "run", "--time-ps", "-1"), ["--time-ps -1"]),
    ("simulate-infinite-time", c(*SIMULATE, "--out", "run", "--time-ps", "inf"),
     ["--time-ps inf"]),
    ("simulate-missing-model",
     c("simulate", "--model", "missing.pt", "--system", "ethanol", "--out", "run"),
     ["missing.pt: no such stablemd model file"]),
    ("simulate-starts-reversed", c(*SIMULATE, "--out", "run", "--starts", "reversed.xyz"),
     ["reversed.xyz: frame 1, atom 0"]),
    ("simulate-starts-other-system", c(*SIMULATE, "--out", "run", "--starts", "water.xyz"),
     ["water.xyz: frame 0"]),
    ("simulate-starts-other-molecule", c(*SIMULATE, "--out", "run", "--starts", "ether.xyz"),
     ["ether.xyz: frame 0", "bond graph", "not the same molecules"]),
    ("simulate-starts-clash", c(*SIMULATE, "--out", "run", "--starts", "clash-reversed.xyz"),
     ["clash-reversed.xyz: frame 1: atoms 2 (H) and 3 (H)", "no bond topology"]),
    ("simulate-no-system-recorded",
     c("simulate", "--model", "hc.pt", "--out", "run", *SHORT_MD), ["--system", "hc.pt"]),
    ("simulate-starts-unknown-type", c(*SIMULATE, "--out", "run", "--starts", "notes.txt"),
     ["notes.txt", "unknown file type"]),
    ("simulate-model-lacks-element",
     c("simulate", "--model", "hc.pt", "--system", "ethanol", "--out", "run", *SHORT_MD),
     ["atom 7 is O", "hc.pt"]),
    ("simulate-out-is-file", c(*SIMULATE, "--out", "data.db"), ["--out data.db", "is a file"]),
    ("simulate-parent-is-file", c(*SIMULATE, "--out", "notes.txt/run"), ["notes.txt is a file"]),
    ("simulate-unwritable", c(*SIMULATE, "--out", "/proc/run"), ["--out /proc/run"]),
    ("simulate-foreign-trajectory", c(*SIMULATE, "--out", "foreign-run"),
     ["foreign-run", "trajectory.h5"]),
    ("simulate-broken-run-record", c(*SIMULATE, "--out", "broken-run"),
     ["broken-run/run.json", "not a stablemd run record"]),
    ("simulate-bias-without-uncertainty", c(*SIMULATE, "--out", "run", "--bias-uncertainty", "1"),
     ["model.pt", "carries no uncertainty"]),
    ("simulate-bias-negative", c(*SIMULATE, "--out", "run", "--bias-uncertainty", "-1"),
     ["--bias-uncertainty"]),
    ("simulate-stop-zero", c(*SIMULATE, "--out", "run", "--stop-uncertainty", "0"),
     ["--stop-uncertainty"]),
    ("simulate-early-warning-without-domain",
     c(*SIMULATE[:2], "tiny.pt", *SIMULATE[3:], "--out", "run", "--early-warning"),
     ["--early-warning: tiny.pt carries no latent domain", "early-warning fit"]),
    ("simulate-early-warning-with-uncertainty",
     c(*SIMULATE, "--out", "run", "--early-warning", "--stop-uncertainty", "1"),
     ["--early-warning: uncertainty-biased MD", "latent features"]),
    ("simulate-freeze-without-level", c(*SIMULATE, "--out", "run", "--freeze-on-warning"),
     ["--freeze-on-warning: model.pt has no critical level"]),
    ("simulate-unknown-indicator",
     c(*SIMULATE, "--out", "run", "--early-warning-indicator", "best"),
     ["--early-warning-indicator 'best'"]),
    # -- uncertainty fit -----------------------------------------------------------------------
    ("uncertainty-fit-onto-model", c(*UFIT, "--out", "model.pt", "--overwrite"),
     ["--out model.pt", "also an input"]),
    ("uncertainty-fit-existing-out", c(*UFIT, "--out", "tiny.pt"), ["--out tiny.pt", "exists"]),
    ("uncertainty-fit-unknown-calibration", c(*UFIT, "--out", "u.pt", "--calibration", "bayes"),
     ["--calibration", "bayes"]),
    ("uncertainty-fit-unknown-features", c(*UFIT, "--out", "u.pt", "--features", "full"),
     ["--features", "full"]),
    ("uncertainty-fit-alpha", c(*UFIT, "--out", "u.pt", "--alpha", "1.5"), ["--alpha"]),
    ("uncertainty-fit-zero-projections", c(*UFIT, "--out", "u.pt", "--projections", "0"),
     ["--projections 0"]),
    ("uncertainty-fit-too-few-validation-frames", c(*UFIT, "--out", "u.pt"),
     ["alpha 0.05", "needs at least 19 validation frames, got 3"]),
    ("uncertainty-fit-not-its-data",
     c("uncertainty", "fit", "--model", "tiny.pt", "--data", "data.db", "--out", "u.pt"),
     ["data.db", "none of the training frames of tiny.pt"]),
    ("evaluate-plot-without-uncertainty",
     c("evaluate", "--model", "model.pt", "--data", "data.db", "--plot", "cal.png"),
     ["--plot", "carries no uncertainty"]),
    # -- stability -----------------------------------------------------------------------------
    ("stability-second-model-missing",
     c(*STABILITY, "--model", "missing.pt", "--out", "st"), ["missing.pt"]),
    ("stability-second-model-is-data",
     c(*STABILITY, "--model", "data.db", "--out", "st"), ["data.db: not a stablemd model file"]),
    ("stability-zero-kelvin", c(*STABILITY, "--out", "st", "--temperature", "0"),
     ["--temperature 0"]),
    ("stability-negative-threshold", c(*STABILITY, "--out", "st", "--max-bond-deviation", "-1"),
     ["--max-bond-deviation -1"]),
    ("stability-negative-contact", c(*STABILITY, "--out", "st", "--min-distance", "-0.5"),
     ["--min-distance -0.5"]),
    ("stability-huge-timestep", c(*STABILITY, "--out", "st", "--timestep", "11"),
     ["--timestep 11"]),
    ("stability-unknown-thermostat", c(*STABILITY, "--out", "st", "--thermostat", "nosehoover"),
     ["--thermostat 'nosehoover'"]),
    ("stability-reference-missing", c(*STABILITY, "--out", "st", "--reference", "missing.db"),
     ["missing.db"]),
    ("stability-reference-other-system", c(*STABILITY, "--out", "st", "--reference", "water.xyz"),
     ["water.xyz: frame 0"]),
    ("stability-out-is-file", c(*STABILITY, "--out", "model.pt"), ["--out model.pt"]),
    ("stability-derived-clash",
     c("stability", "--model", "hc.pt", "--starts", "clash.xyz", "--out", "st", *SHORT_MD),
     ["clash.xyz: frame 1: atoms 5 (H) and 6 (H) are 0.10 Å apart"]),
    ("stability-parent-is-file", c(*STABILITY, "--out", "notes.txt/st"), ["notes.txt is a file"]),
    ("stability-broken-result", c(*STABILITY, "--model", "tiny.pt", "--out", "broken-stability"),
     ["broken-stability/tiny/", "not a stablemd"]),
    # -- stable-train --------------------------------------------------------------------------
    ("stable-train-out-is-model", c(*STABLE, "--out", "model.pt", "--overwrite"),
     ["--out model.pt", "also an input"]),
    ("stable-train-over-model", c(*STABLE, "--out", "hc.pt"), ["--out hc.pt", "already exists"]),
    ("stable-train-onto-data", c(*STABLE, "--out", "data.db", "--overwrite"), ["--out data.db"]),
    ("stable-train-unwritable", c(*STABLE, "--out", "/proc/s.pt"), ["--out /proc/s.pt"]),
    ("stable-train-run-dir-is-file", c(*STABLE, "--out", "s.pt", "--run-dir", "notes.txt"),
     ["--run-dir notes.txt"]),
    ("stable-train-reference-missing", c(*STABLE, "--out", "s.pt", "--reference", "missing.db"),
     ["missing.db"]),
    ("stable-train-reference-no-array",
     c(*STABLE, "--out", "s.pt", "--reference", "no-reference.npz"),
     ["no-reference.npz", "'reference'"]),
    ("stable-train-reference-junk", c(*STABLE, "--out", "s.pt", "--reference", "junk.npz"),
     ["junk.npz", "not a readable"]),
    ("stable-train-reference-other-system",
     c(*STABLE, "--out", "s.pt", "--reference", "water.xyz"), ["water.xyz: frame 0"]),
    ("stable-train-zero-kelvin", c(*STABLE, "--out", "s.pt", "--temperature", "0"),
     ["--temperature 0"]),
    ("stable-train-f-min-above-f-max",
     c(*STABLE, "--out", "s.pt", "--f-min", "0.9", "--f-max", "0.5"), ["f_min", "f_max"]),
    ("stable-train-unknown-estimator", c(*STABLE, "--out", "s.pt", "--estimator", "best"),
     ["--estimator 'best'"]),
    ("stable-train-max-grade-one",
     c(*STABLE, "--out", "s.pt", "--latent-grade-criterion", "--max-grade", "1"),
     ["--max-grade 1.0", "greater than 1"]),
    ("stable-train-max-grade-inf",
     c(*STABLE, "--out", "s.pt", "--latent-grade-criterion", "--max-grade", "inf"),
     ["--max-grade inf", "finite"]),
    ("stable-train-max-grade-nan",
     c(*STABLE, "--out", "s.pt", "--latent-grade-criterion", "--max-grade", "nan"),
     ["--max-grade nan", "finite"]),
    ("stable-train-max-grade-without-criterion", c(*STABLE, "--out", "s.pt", "--max-grade", "10"),
     ["max_grade 10", "latent_grade_criterion", "--latent-grade-criterion"]),
    ("stable-train-unknown-yaml-field",
     c(*STABLE, "--out", "s.pt", "--config", "stable-unknown.yaml"),
     ["stable-unknown.yaml", "replica"]),
    ("stable-train-yaml-one-replica",
     c(*STABLE[:5], "--out", "s.pt", "--config", "stable-replicas.yaml"),
     ["stable-replicas.yaml", "replicas"]),
    ("stable-train-frames-not-of-system", c(*STABLE, "--out", "s.pt", "--system", "aspirin"),
     ["data.db", "frame 0 has 9 atoms"]),
    # -- systems: stored by name, derived from frames ------------------------------------------
    ("systems-add-built-in-name", c("systems", "add", "ethanol", "--smiles", "CCO"),
     ["'ethanol'", "built-in"]),
    ("systems-add-bad-name", c("systems", "add", "my/mol", "--smiles", "CCO"), ["'my/mol'"]),
    ("systems-add-bad-smiles", c("systems", "add", "m", "--smiles", "C1CC"), ["--smiles 'C1CC'"]),
    ("systems-add-both-sources", c("systems", "add", "m", "--smiles", "C", "--from", "starts.xyz"),
     ["--smiles or --from"]),
    ("systems-add-clash", c("systems", "add", "m", "--from", "clash-only.xyz"),
     ["clash-only.xyz", "atoms 5 (H) and 6 (H)", "no bond topology"]),
    ("diagnose-no-system", c("diagnose", "--model", "hc.pt", "--out", "rep"),
     ["--system", "hc.pt"]),
    ("diagnose-data-rebonded", c("diagnose", "--model", "hc.pt", "--out", "rep", "--data",
     "rebonded.xyz"), ["rebonded.xyz: frame 1", "bond differently"]),
    ("systems-add-unknown-oracle",
     c("systems", "add", "m", "--from", "starts.xyz", "--oracle", "dft"), ["'dft'"]),
    ("systems-remove-built-in", c("systems", "remove", "water"), ["'water'", "built-in"]),
    ("stability-derived-rebonded",
     c("stability", "--model", "hc.pt", "--starts", "rebonded.xyz", "--out", "st", *SHORT_MD),
     ["rebonded.xyz: frame 1: atoms", "bond differently between frames"]),
    # -- quickstart: every option before the first stage --------------------------------------
    ("quickstart-zero-replicas", c("quickstart", "--out", "qs", "--replicas", "0"),
     ["--replicas 0"]),
    ("quickstart-zero-stability-time", c("quickstart", "--out", "qs", "--stability-ps", "0"),
     ["--stability-ps 0"]),
    ("quickstart-zero-epochs", c("quickstart", "--out", "qs", "--stable-epochs", "0"),
     ["--stable-epochs 0"]),
    ("quickstart-out-is-file", c("quickstart", "--out", "notes.txt"), ["--out notes.txt"]),
    # -- stability --early-warning: a model without a domain, or without a critical level ------
    ("stability-early-warning-without-domain",
     c(*STABILITY[:2], "tiny.pt", *STABILITY[3:], "--out", "st", "--early-warning"),
     ["--early-warning: tiny.pt carries no latent domain", "early-warning fit"]),
    ("stability-freeze-without-level", c(*STABILITY, "--out", "st", "--freeze-on-warning"),
     ["--freeze-on-warning: model.pt has no critical level"]),
    ("stability-freeze-without-warning",
     c(*STABILITY, "--out", "st", "--freeze-on-warning", "--no-early-warning"),
     ["--freeze-on-warning needs the early warning"]),
    ("stability-unknown-indicator",
     c(*STABILITY, "--out", "st", "--early-warning-indicator", "best"),
     ["--early-warning-indicator 'best'"]),
    # -- early-warning fit: the output rule and the model's own training frames ---------------
    ("ew-fit-onto-model", c(*EW_FIT, "--out", "model.pt", "--overwrite"),
     ["--out model.pt", "also an input"]),
    ("ew-fit-existing", c(*EW_FIT, "--out", "hc.pt"), ["--out hc.pt", "already exists"]),
    ("ew-fit-extension", c(*EW_FIT, "--out", "m.db"), ["--out m.db", ".pt"]),
    ("ew-fit-not-a-model", c("early-warning", "fit", "--model", "data.db", "--data", "data.db",
                             "--out", "m.pt"), ["data.db", "not a stablemd model file"]),
    ("ew-fit-junk-data", c("early-warning", "fit", "--model", "model.pt", "--data", "junk.db",
                           "--out", "m.pt"), ["junk.db", "not an ASE database"]),
    ("ew-fit-other-data", c("early-warning", "fit", "--model", "model.pt", "--data", "foreign.db",
                            "--out", "m.pt"), ["--data foreign.db", "none of the 6 training"]),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "fragments"), [pytest.param(a, f, id=i) for i, a, f in CATALOGUE])
def test_bad_input_is_refused_and_changes_nothing(case_dir, capsys, argv, fragments):
    before = snapshot(case_dir)
    code, out, err = run(argv, capsys)
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1, err
    message = err.strip()
    for fragment in fragments:
        assert fragment in message, message
    assert snapshot(case_dir) == before  # nothing changed, nothing left behind


def test_a_trained_model_records_the_system_of_its_training_frames(workspace, ethanol_frames):
    from stablemd.models.registry import read_model_file

    record = read_model_file(workspace / "model.pt")["metadata"]["system"]
    assert record["numbers"] == ethanol_frames[0].numbers.tolist()
    assert len(record["bonds"]) == 8 and record["pbc"] == [False] * 3


def test_catalogue_size():
    assert len(CATALOGUE) >= 60
    assert len({entry[0] for entry in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("name", ["data.db", "tensor.pt", "pickle.pt", "notes.txt", "missing.pt"])
def test_ase_calculator_refuses_a_non_model_file(case_dir, name, recwarn):
    from stablemd.ase import Calculator

    with pytest.raises(InputError, match=f"^{name}: (not a|no such) stablemd model file"):
        Calculator.from_file(name)
    assert not [w for w in recwarn if "torch" in str(w.filename)]  # no PyTorch paragraph


def test_outputs_in_missing_directories_are_created(case_dir, capsys):
    assert run(["data", "import", "frames.extxyz", "--out", "new/d.db"], capsys)[0] == 0
    assert run(["data", "export", "data.db", "--out", "new/e/f.xyz"], capsys)[0] == 0
    argv = ["evaluate", "--model", "model.pt", "--data", "data.db", "--json", "new/m/m.json"]
    assert run(argv, capsys)[0] == 0
    assert all((case_dir / p).is_file() for p in ("new/d.db", "new/e/f.xyz", "new/m/m.json"))
    # --overwrite replaces an output that is not an input
    argv = ["evaluate", "--model", "model.pt", "--data", "data.db", "--json", "metrics.json"]
    assert run([*argv, "--overwrite"], capsys)[0] == 0
    assert "energy_per_atom_eV" in (case_dir / "metrics.json").read_text()


def test_a_resumed_training_run_is_not_an_overwrite(case_dir, capsys):
    """The model file is written last: while it does not exist, a rerun continues the run in
    its run directory; once it exists, the same command is refused."""
    argv = [*TRAIN, "--out", "model.pt", "--config", "tiny.yaml", "--max-epochs", "1"]
    checkpoint = case_dir / "model_run" / "checkpoint.pt"
    assert checkpoint.is_file()
    (case_dir / "model.pt").unlink()
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert (case_dir / "model.pt").is_file()
    code, _, err = run(argv, capsys)
    assert code == 2 and "--out model.pt: already exists" in err


def test_stability_loads_every_model_before_any_run(case_dir, capsys, monkeypatch):
    """A bad second model is refused before the first model's MD starts."""
    import stablemd.cli.stability as stability_cli

    def no_run(*args, **kwargs):
        raise AssertionError("MD started before every model was loaded")

    monkeypatch.setattr(stability_cli, "compare_models", no_run)
    code, _, err = run([*STABILITY, "--model", "tensor.pt", "--out", "st"], capsys)
    assert code == 2 and "tensor.pt: not a stablemd model file" in err
    assert not (case_dir / "st").exists()


@pytest.mark.parametrize("kind", ["painn", "mace"])
def test_model_options_check_accepts_the_defaults(kind):
    """The check refuses bad model_options, never a model's own defaults (MACE warns while it
    is built: that is no reason to refuse it)."""
    from stablemd.models.registry import check_hyperparameters

    if kind == "mace":
        pytest.importorskip("mace")
    check_hyperparameters(kind, {"cutoff": 4.0})
    with pytest.raises(InputError, match="model_options.cutoff: 0"):
        check_hyperparameters(kind, {"cutoff": 0})


def test_explore_never_writes_over_an_input_or_files_of_no_explore_run(tmp_path):
    """The run writes train.db and model.pt in --out and files in its step directories: an
    input there is refused, and so is a directory holding such files without a run.json."""
    from stablemd.explore.active_learning.loop import ExploreRun, ExploreSettings

    out = tmp_path / "run"
    (out / "step-001").mkdir(parents=True)
    (out / "train.db").write_text("the user's")
    model, data, settings = tmp_path / "m.pt", tmp_path / "d.db", ExploreSettings()
    with pytest.raises(InputError, match=r"^--data \S*train.db: the explore run in \S*run writ"):
        ExploreRun(model, out / "train.db", out, settings)
    with pytest.raises(InputError, match=r"^--model \S*model.pt: the explore run"):
        ExploreRun(out / "model.pt", data, out, settings)
    with pytest.raises(InputError, match=r"^--test \S*step-001/t.db: the explore run"):
        ExploreRun(model, data, out, settings, tests=(out / "step-001" / "t.db",))
    with pytest.raises(InputError, match=r"^--out \S*run: holds train.db but no explore run"):
        ExploreRun(model, data, out, settings)
    assert (out / "train.db").read_text() == "the user's"


def test_explore_refuses_two_test_sets_of_one_name(tmp_path):
    """The learning curve names test sets by file name: a second of the same name would
    silently take the first one's place."""
    from stablemd.explore.active_learning.loop import ExploreRun, ExploreSettings

    tests = (tmp_path / "a" / "hot.db", tmp_path / "b" / "hot.db")
    with pytest.raises(InputError, match=r"^--test \S*b/hot.db: a test set named hot.db"):
        ExploreRun(tmp_path / "m.pt", tmp_path / "d.db", tmp_path / "run", ExploreSettings(),
                   tests=tests)  # fmt: skip
