"""Alanine dipeptide with GFN2-xTB: the cost of a reference call and the Ramachandran coverage
of plain Langevin MD at 300 K (the baseline the uncertainty-biased exploration must beat).

``generate_reference_data`` (what ``stablemd data generate alanine-dipeptide --oracle xtb
--temperature 300`` runs): 2 trajectories × 10 000 steps of 0.5 fs, a frame every 10 steps,
one xTB force call per step; bare single points on one thread, beside aspirin's. φ/ψ of every
saved frame, their quadtree coverage (depth 5), and of every 10th saved frame (what
``--every 100`` would label); the Ramachandran plot of both into
docs/images/alanine_dipeptide_ramachandran.png; the GFN2-xTB minima of the other gas-phase
basins against the shipped (C5) structure.
Run ``python bench/alanine_dipeptide.py [--quick]``; writes
``bench/results/alanine_dipeptide.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data_throughput import single_points_per_s  # noqa: E402
from machine import machine_info  # noqa: E402
from run import run_as_script  # noqa: E402

from stablemd.analysis.ramachandran import (  # noqa: E402
    COVERAGE_DEPTH,
    occupied_cells,
    phi_psi,
    quadtree_coverage,
    ramachandran_plot,
)
from stablemd.data.database import read_frames  # noqa: E402
from stablemd.data.generate import generate_reference_data  # noqa: E402
from stablemd.systems import get_system  # noqa: E402
from stablemd.systems.molecules import relax  # noqa: E402

SYSTEM = "alanine-dipeptide"
TEMPERATURE_K = 300.0
EVERY = 10
#: Saved frames between the ones counted as labelled in the plot (--every 100 of the same MD).
LABEL_STRIDE = 10
#: (φ, ψ) starts (degrees) of the minimum searches: textbook gas-phase basins.
STARTS = {"C7eq": (-83.0, 73.0), "C7ax": (73.0, -60.0), "alphaR": (-70.0, -40.0)}
IMAGE = HERE.parent / "docs" / "images" / "alanine_dipeptide_ramachandran.png"


def basin(phi: np.ndarray, psi: np.ndarray) -> dict[str, float]:
    """Fractions of frames in coarse regions of the gas-phase map (degrees; φ ≥ 120 continues
    φ < 0 across the periodic edge): extended C5/β (ψ ≥ 100 or ψ < −150), C7eq (0 ≤ ψ < 100)
    and αR (−150 ≤ ψ < 0) at φ < 0; C7ax/αL at 0 ≤ φ < 120; the rest."""
    left = (phi < 0) | (phi >= 120)
    extended = left & ((psi >= 100) | (psi < -150))
    c7eq = (phi < 0) & (psi >= 0) & (psi < 100)
    alpha_r = (phi < 0) & (psi >= -150) & (psi < 0)
    positive = (phi >= 0) & (phi < 120)
    rest = ~(extended | c7eq | alpha_r | positive)
    masks = {"C5": extended, "C7eq": c7eq, "alphaR": alpha_r, "C7ax/alphaL": positive}
    return {name: float(mask.mean()) for name, mask in {**masks, "other": rest}.items()}


def gas_phase_minima(system) -> dict[str, dict]:
    """GFN2-xTB minima reached from the shipped C5 structure with φ/ψ turned to C7eq, C7ax and
    αR (each side of the bond rotated rigidly, then LBFGS to 0.01 eV/Å): φ, ψ and energy
    relative to the shipped structure (eV)."""
    reference = system.atoms.info["xtb_energy_eV"]
    phi_atoms, psi_atoms = system.dihedrals["phi"], system.dihedrals["psi"]
    out = {}
    for name, (phi, psi) in STARTS.items():
        atoms = system.atoms.copy()
        # atoms after Cα (after the carbonyl C for ψ) in this order sit on the turning side
        atoms.set_dihedral(*phi_atoms, phi % 360, mask=np.arange(len(atoms)) >= phi_atoms[2])
        atoms.set_dihedral(*psi_atoms, psi % 360, mask=np.arange(len(atoms)) >= psi_atoms[2])
        relaxed = relax(atoms, "xtb")
        (end_phi,), (end_psi,) = phi_psi([relaxed], system)
        out[name] = {
            "start_deg": [phi, psi],
            "relaxed_deg": [float(end_phi), float(end_psi)],
            "energy_eV": float(relaxed.info["xtb_energy_eV"] - reference),
        }
    return out


def main(out_dir: Path, quick: bool) -> dict:
    n_steps, n_trajectories = (400, 1) if quick else (10_000, 2)
    system = get_system(SYSTEM)
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_reference_data(
            SYSTEM, "xtb", TEMPERATURE_K, n_steps, EVERY, Path(tmp) / "data.db",
            n_trajectories=n_trajectories, progress=False,
        )  # fmt: skip
        frames = read_frames(Path(tmp) / "data.db")
    phi, psi = phi_psi(frames, system)
    labelled = (phi[::LABEL_STRIDE], psi[::LABEL_STRIDE])
    start_phi, start_psi = phi_psi([system.atoms], system)
    results = {
        "machine": machine_info(),
        "quick": quick,
        "system": SYSTEM,
        "atoms": len(system.atoms),
        "temperature_K": TEMPERATURE_K,
        "timestep_fs": system.timestep_fs,
        "n_steps": n_steps,
        "n_trajectories": n_trajectories,
        "every": EVERY,
        "md_wall_s": summary["wall_s"],
        "md_steps_per_s": summary["md_steps_per_s"],
        "ms_per_md_step": 1000 / summary["md_steps_per_s"],
        # aspirin (21 atoms, docs/benchmarks.md) side by side: the ratio survives a busy machine
        "xtb_single_points_per_s_1_thread": single_points_per_s(SYSTEM, 1, 50 if quick else 200),
        "aspirin_xtb_single_points_per_s_1_thread": single_points_per_s(
            "aspirin", 1, 50 if quick else 200
        ),
        "start_phi_psi_deg": [float(start_phi[0]), float(start_psi[0])],
        "frames": len(frames),
        "coverage_depth": COVERAGE_DEPTH,
        "coverage": quadtree_coverage(phi, psi),
        "occupied_cells": len(occupied_cells(phi, psi)),
        "labelled_every_n_frames": LABEL_STRIDE,
        "labelled_frames": len(labelled[0]),
        "labelled_coverage": quadtree_coverage(*labelled),
        "coverage_by_depth": {d: quadtree_coverage(phi, psi, d) for d in range(1, 7)},
        "basin_fractions": basin(phi, psi),
        "minima_vs_shipped": gas_phase_minima(system),
    }
    (out_dir / "alanine_dipeptide.json").write_text(json.dumps(results, indent=1) + "\n")
    if not quick:
        title = (
            f"alanine dipeptide, GFN2-xTB Langevin MD {TEMPERATURE_K:g} K, "
            f"{n_trajectories} × {n_steps * system.timestep_fs / 1000:g} ps"
        )
        marks = {f"{k} {1000 * v['energy_eV']:+.0f} meV": v["relaxed_deg"]
                 for k, v in results["minima_vs_shipped"].items() if k != "alphaR"}  # fmt: skip
        marks["C5 (start)"] = results["start_phi_psi_deg"]
        ramachandran_plot((phi, psi), labelled, IMAGE, title, dpi=100, landmarks=marks)
    return results


if __name__ == "__main__":
    run_as_script(main)
