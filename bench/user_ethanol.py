"""A user's own ethanol data end to end: import, train, evaluate, stability from the user's frames.

The run a new user tried (issue: "any molecule or box a user brings"): an sGDML/MD17-format
npz (atoms C C O H H H H H H, energies and forces in kcal/mol) through ``stablemd data
import``, ``train`` (100 frames), ``evaluate`` (the frames not trained on) and ``stability
--system ethanol --starts`` the user's own frames at 500 K (64 replicas), which the built-in
ethanol's atom order (C H H H C H H O H) used to refuse. No CCSD(T) set can be had on this
machine (no download), so the npz is written here from GFN2-xTB ethanol at 500 K
(STABLEMD_BENCH_DATA, default made with ``stablemd data generate ethanol --oracle xtb
--temperature 500 --steps 6000 --every 10 --trajectories 4``), in MD17's atom order, hydrogens
shuffled, units converted: the file a user brings, with another level of theory.

Every stage is a ``stablemd`` command on one thread; wall times are kept. ``python
bench/user_ethanol.py`` writes ``user_ethanol.json``; working directory STABLEMD_BENCH_WORK
(default ``bench/data/user-ethanol``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import numpy as np  # noqa: E402
import stages  # noqa: E402
from ase import units  # noqa: E402
from machine import machine_info  # noqa: E402

from stablemd.data.database import read_frames  # noqa: E402
from stablemd.data.generate import generate_reference_data  # noqa: E402

#: Built-in ethanol (C H H H C H H O H) → MD17's element order C C O H…, hydrogens shuffled.
MD17_ORDER = [0, 4, 7, 8, 5, 2, 6, 1, 3]
KCAL_PER_MOL = units.kcal / units.mol  # eV
PAINN = stages.painn_config(n_interactions=3, cutoff=5.0, batch_size=8)


def write_sgdml(frames: list, path: Path) -> None:
    """``frames`` as an sGDML npz in ``MD17_ORDER``, kcal/mol and kcal/mol/Å."""
    if path.is_file():
        return
    np.savez(
        path, z=frames[0].numbers[MD17_ORDER],
        R=np.stack([a.positions[MD17_ORDER] for a in frames]),
        E=np.array([[a.get_potential_energy() / KCAL_PER_MOL] for a in frames]),
        F=np.stack([a.get_forces()[MD17_ORDER] / KCAL_PER_MOL for a in frames]),
        e_unit="kcal/mol", r_unit="Ang", theory="GFN2-xTB (stand-in for a user's CCSD(T) set)",
    )  # fmt: skip


def main(out_dir: Path, quick: bool = False) -> dict:
    if quick:
        return {"skipped": "about half an hour; run it without --quick"}
    work, data = stages.workspace(
        "user-ethanol", "ethanol-xtb-500K.db",
        lambda path: generate_reference_data("ethanol", "xtb", 500.0, 6000, 10, path, 4, 0),
    )  # fmt: skip
    started = time.perf_counter()
    frames = read_frames(data)
    chosen = np.random.default_rng(0).choice(len(frames), size=1000, replace=False)
    npz = work / "ethanol_user.npz"
    write_sgdml([frames[int(i)] for i in sorted(chosen)], npz)
    (work / "painn-small.yaml").write_text(PAINN)
    db, model, errors = work / "ethanol_user.db", work / "ethanol_user.pt", work / "evaluate.json"
    stages.timed(work, "import", db, "data", "import", str(npz), "--out", str(db))
    stages.timed(work, "train", model, "train", "--data", str(db), "--n-train", "100",
                 "--n-val", "50", "--config", str(work / "painn-small.yaml"),
                 "--max-time", "12", "--seed", "0", "--out", str(model))  # fmt: skip
    stages.timed(work, "evaluate", errors, "evaluate", "--model", str(model), "--data", str(db),
                 "--json", str(errors))  # fmt: skip
    out = work / "stability-500K"
    stages.timed(work, "stability", out / "summary.json", "stability", "--model", str(model),
                 "--system", "ethanol", "--starts", str(db), "--replicas", "64",
                 "--temperature", "500", "--time-ps", "10", "--out", str(out))  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    evaluation = json.loads(errors.read_text())
    result = {
        "machine": machine_info(),
        "npz": {"frames": len(chosen), "atom_order": "C C O H H H H H H", "units": "kcal/mol"},
        "stage_wall_time_s": json.loads((work / "timings.json").read_text()),
        "test_force_mae_meV_per_A": 1000 * evaluation["forces_eV_per_A"]["mae"],
        "test_frames": evaluation["n_frames"],
        "stability_500K_10ps": {k: summary["ethanol_user"][k] for k in stages.KEPT
                                if k in summary["ethanol_user"]},
        "matching": [ln.replace(f"{work}/", "") for ln in
                     (work / "stability.log").read_text().splitlines() if "matched by" in ln],
    }  # fmt: skip
    return stages.finish(out_dir, "user_ethanol", result, started)


if __name__ == "__main__":
    main(HERE / "results")
