"""Structural and dynamical observables of a trajectory written by ``stablemd simulate`` (H5MD,
:mod:`stablemd.monitors.trajectory`), pooled over its replicas: the library behind
``stablemd analyze``.

Every replica counts with the frames it has. A replica frozen as unstable ends early, and its
frames from the first non-finite one on (positions, velocities, energies) are left out. Pooling:

- distributions (h(r), element-resolved RDFs of periodic boxes, bond lengths and bond angles
  per bond and angle type) are averaged over every frame of every replica;
- φ and ψ of a system that names them (alanine dipeptide) are collected from every frame of
  every replica, with their Ramachandran coverage (:mod:`stablemd.analysis.ramachandran`);
- the VACF and the MSD are averaged over every (replica, time origin, atom) whose lag fits
  inside that replica's frames: each replica's origin-averaged curve is weighted by its
  F_k − m origins at lag m.

Distributions are plain histograms (no Gaussian smearing: they average many frames and need
no gradient), which keeps long trajectories affordable; ``stride`` thins their frames further.
Positions are taken as written: the integrators never wrap them, so they need no unwrapping
(a minimum-image unwrap would even fold the jumps of an exploding replica). The MSD of periodic
boxes is taken after subtracting each frame's centre of mass; the diffusivity of each element
is the slope / 6 of its pooled MSD over the second half of the lag window, as the stability
benchmark fits it (:func:`~stablemd.diagnose.stability.diffusion.fit_diffusivity`), so the two
compare. Frames are processed in chunks to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from stablemd.analysis.dynamics import mean_squared_displacement, vacf
from stablemd.analysis.geometry import angle_triplets, bond_angles, bond_lengths
from stablemd.analysis.ramachandran import (
    BACKBONE,
    COVERAGE_DEPTH,
    phi_psi,
    quadtree_coverage,
)
from stablemd.analysis.structure import (
    angular_distribution,
    bond_length_distribution,
    distance_histogram_h_r,
    radial_distribution,
    rdf_range,
)
from stablemd.core.errors import InputError
from stablemd.diagnose.stability.benchmark import H_R_MAX_A
from stablemd.diagnose.stability.diffusion import DIFFUSION_WINDOW_PS, fit_diffusivity
from stablemd.monitors.trajectory import frame_times, read_replica
from stablemd.systems.system import System, find_bonds

#: Range (Å) of the bond-length distributions.
BOND_R_MAX_A = 3.0
#: Pair distances (or bonds, angles) per chunk of frames: bounds the memory of the histograms.
VALUES_PER_CHUNK = 1 << 20
#: Frame spacing (fs) above which the VACF is noted as too coarse for molecular vibrations.
VACF_COARSE_FS = 4.0
#: Per-replica series plotted against time, as named in the trajectory.
SERIES = ("temperature", "potential_energy", "kinetic_energy", "conserved_energy")

_F64 = torch.float64


@dataclass
class ReplicaSeries:
    """Temperature (K) and energies (eV) of one replica against time (fs), every frame written."""

    replica: int
    time_fs: np.ndarray
    values: dict[str, np.ndarray]
    ended_early: bool


@dataclass
class TrajectoryAnalysis:
    """Pooled observables of one trajectory; curves as numpy arrays, labels of element pairs
    carbon first, then the heavier element ("C-H", "O-H"), of angle types with the centre atom in
    the middle ("H-O-H").

    Distributions over ``distribution_frames`` frames: ``h_r_per_A`` on ``r_A``; ``rdf``
    (periodic) on ``rdf_r_A``; bond-length densities (1/Å) on ``bond_r_A`` and bond-angle
    densities (1/degree) on ``angle_deg``, each integrating to the fraction of its values in
    range. Dynamics: ``vacf`` (1 at lag 0) per
    element and ``"all"`` on ``vacf_lag_fs``; ``msd_A2`` per element on ``msd_lag_fs``
    (periodic); ``diffusivity_cm2_per_s`` per element (None: no replica spans the window).
    Backbone (a system naming ``phi`` and ``psi``): ``phi_deg``, ``psi_deg`` of every analysed
    frame and their ``ramachandran_coverage`` (quadtree of depth ``COVERAGE_DEPTH``).
    """

    trajectory: str
    system: str | None
    periodic: bool
    elements: list[str]
    n_replicas: int
    frames_analysed: int
    distribution_frames: int
    frame_interval_fs: float | None
    window_fs: float
    r_A: np.ndarray
    h_r_per_A: np.ndarray
    rdf_r_A: np.ndarray | None = None
    rdf: dict[str, np.ndarray] | None = None
    bond_r_A: np.ndarray | None = None
    bond_length_density_per_A: dict[str, np.ndarray] | None = None
    bond_length_mean_A: dict[str, float] | None = None
    angle_deg: np.ndarray | None = None
    angle_density_per_deg: dict[str, np.ndarray] | None = None
    angle_mean_deg: dict[str, float] | None = None
    vacf_lag_fs: np.ndarray | None = None
    vacf: dict[str, np.ndarray] | None = None
    msd_lag_fs: np.ndarray | None = None
    msd_A2: dict[str, np.ndarray] | None = None
    diffusivity_cm2_per_s: dict[str, float | None] | None = None
    phi_deg: np.ndarray | None = None
    psi_deg: np.ndarray | None = None
    ramachandran_coverage: float | None = None
    replicas: list[dict] = field(default_factory=list)
    series: list[ReplicaSeries] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """Everything but the per-frame series (which the trajectory holds), JSON-ready."""

        def plain(value):
            if isinstance(value, np.ndarray):
                return value.tolist()
            if isinstance(value, dict):
                return {key: plain(v) for key, v in value.items()}
            return value

        curves = {
            "h_r": {"r_A": self.r_A, "h_per_A": self.h_r_per_A},
            "rdf": None if self.rdf is None else {"r_A": self.rdf_r_A, "g": self.rdf},
            "bond_lengths": None
            if self.bond_length_density_per_A is None
            else {
                "r_A": self.bond_r_A,
                "density_per_A": self.bond_length_density_per_A,
                "mean_A": self.bond_length_mean_A,
            },
            "bond_angles": None
            if self.angle_density_per_deg is None
            else {
                "theta_deg": self.angle_deg,
                "density_per_deg": self.angle_density_per_deg,
                "mean_deg": self.angle_mean_deg,
            },
            "vacf": None if self.vacf is None else {"lag_fs": self.vacf_lag_fs, "c": self.vacf},
            "msd": None if self.msd_A2 is None else {"lag_fs": self.msd_lag_fs, "A2": self.msd_A2},
        }
        return plain(
            {
                "trajectory": self.trajectory,
                "system": self.system,
                "periodic": self.periodic,
                "elements": self.elements,
                "replicas": self.n_replicas,
                "frames_analysed": self.frames_analysed,
                "distribution_frames": self.distribution_frames,
                "frame_interval_fs": self.frame_interval_fs,
                "window_fs": self.window_fs,
                **curves,
                "diffusivity_cm2_per_s": self.diffusivity_cm2_per_s,
                "ramachandran": None
                if self.phi_deg is None
                else {
                    "coverage": self.ramachandran_coverage,
                    "n": len(self.phi_deg),
                    "depth": COVERAGE_DEPTH,
                },
                "per_replica": self.replicas,
                "notes": self.notes,
            }
        )


def _label_order(z: int) -> tuple[bool, int]:
    """Carbon first, then heavier before lighter: C-H, C-O, O-H, H-H."""
    return (z != 6, -z)


def pair_label(a: int, b: int) -> str:
    """The label of an element pair: "O-H" for (8, 1) or (1, 8), "C-O" for (6, 8)."""
    return "-".join(chemical_symbols[z] for z in sorted((int(a), int(b)), key=_label_order))


def _bond_types(species: np.ndarray, bonds: np.ndarray) -> dict[str, np.ndarray]:
    """Bonds [n, 2] grouped by element pair, labels sorted."""
    labels = [pair_label(species[i], species[j]) for i, j in bonds]
    return {t: bonds[[x == t for x in labels]] for t in sorted(set(labels))}


def _angle_types(species: np.ndarray, triplets: np.ndarray) -> dict[str, np.ndarray]:
    """Angle triplets (i, j, k) [n, 3] grouped by "outer-centre-outer" ("H-O-H", "C-C-H")."""
    labels = []
    for i, j, k in triplets:
        first, last = sorted((int(species[i]), int(species[k])), key=_label_order)
        labels.append("-".join(chemical_symbols[z] for z in (first, int(species[j]), last)))
    return {t: triplets[[x == t for x in labels]] for t in sorted(set(labels))}


def _chunks(n_frames: int, values_per_frame: int):
    size = max(1, VALUES_PER_CHUNK // max(values_per_frame, 1))
    for start in range(0, n_frames, size):
        yield slice(start, start + size)


def _frame_interval(path: Path, times: list[np.ndarray]) -> float | None:
    """Time between frames (fs), the same for every replica; None with fewer than two frames."""
    longest = max(times, key=len)
    if len(longest) < 2:
        return None
    dt = float(longest[1] - longest[0])
    for k, t in enumerate(times):
        if len(t) > 1 and not np.allclose(np.diff(t), dt, rtol=1e-9, atol=1e-9):
            raise InputError(f"{path}: the frames of replica {k} are not evenly spaced in time")
    return dt


def _usable_frames(data: dict, with_velocities: bool) -> int:
    """Frames before the first one holding a non-finite position, energy or temperature (or
    velocity)."""
    finite = np.isfinite(data["positions"]).all(axis=(1, 2))
    if with_velocities:
        finite &= np.isfinite(data["velocities"]).all(axis=(1, 2))
    for name in SERIES:
        if name in data:
            finite &= np.isfinite(data[name])
    return len(finite) if finite.all() else int(np.argmin(finite))


def _check_system(path: Path, species: np.ndarray, system: System) -> None:
    expected = system.atoms.numbers
    if len(species) != len(expected) or not np.array_equal(species, expected):
        found = Atoms(species).get_chemical_formula()
        raise InputError(
            f"{path}: its {len(species)} atoms ({found}) are not the {system.name} system's "
            f"{len(expected)} ({system.atoms.get_chemical_formula()}) in the system's order"
        )


def _check_same_structure(path: Path, k: int, data: dict, first: dict) -> None:
    same = (
        np.array_equal(data["species"], first["species"])
        and np.array_equal(data["pbc"], first["pbc"])
        and np.allclose(data["cell"], first["cell"])
    )
    if not same:
        raise InputError(
            f"{path}: replica {k} differs from replica 0 in atoms or box; "
            "analyze pools replicas of one structure"
        )


def _summary(k: int, data: dict, n_used: int, longest: int) -> dict:
    """Per-replica numbers over its analysed frames (None where there are none)."""
    used = slice(0, n_used)

    def mean(name):
        values = data.get(name)
        return None if values is None or n_used == 0 else float(np.mean(values[used]))

    out = {
        "replica": k,
        "frames_written": len(data["time_fs"]),
        "frames_analysed": n_used,
        "end_ps": float(data["time_fs"][-1]) / 1000 if len(data["time_fs"]) else 0.0,
        "ended_early": len(data["time_fs"]) < longest,
        "temperature_mean_K": mean("temperature"),
        "temperature_std_K": None if n_used == 0 else float(np.std(data["temperature"][used])),
        "potential_energy_mean_eV": mean("potential_energy"),
        "kinetic_energy_mean_eV": mean("kinetic_energy"),
        "conserved_energy_drift_eV_per_ps": None,
    }
    if "conserved_energy" in data and n_used >= 2:
        time_ps = data["time_fs"][used] / 1000
        slope = np.polyfit(time_ps, data["conserved_energy"][used], 1)[0]
        out["conserved_energy_drift_eV_per_ps"] = float(slope)
    return out


class _Pool:
    """Running sums over replicas: distributions per frame, correlations per origin."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.frames = 0

    def add(self, key: str, values: torch.Tensor) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + values

    def lagged(self, key: str, per_lag: torch.Tensor, origins: torch.Tensor, n_lags: int):
        """Add an origin-averaged curve [L] weighted by its origins [L] into [n_lags] sums."""
        padded = per_lag.new_zeros(n_lags)
        padded[: len(per_lag)] = per_lag * origins
        self.add(key, padded)


def _add_distributions(pool, analysis, x, species, cell, pbc, bond_types, angle_types) -> None:
    """Add the h(r), RDFs, bond-length and angle densities of frames ``x`` [T, N, 3] summed over
    frames (bins into ``analysis``)."""
    n_used, n_atoms = x.shape[:2]
    for part in _chunks(n_used, n_atoms * (n_atoms - 1) // 2):
        r, h = distance_histogram_h_r(x[part], H_R_MAX_A, sigma=0.0, cell=cell, pbc=pbc)
        pool.add("h_r", h.sum(0))
        analysis.r_A = r.numpy()
        if analysis.periodic:
            rdf_r, rdfs = radial_distribution(
                x[part], species, cell, pbc, r_max=rdf_range(cell), sigma=0.0
            )
            analysis.rdf_r_A = rdf_r.numpy()
            for (a, b), g in rdfs.items():
                pool.add(f"rdf {pair_label(a, b)}", g.sum(0))
    for label, typed in bond_types.items():
        for part in _chunks(n_used, len(typed)):
            r, density = bond_length_distribution(
                x[part], typed, r_max=BOND_R_MAX_A, sigma=0.0, cell=cell, pbc=pbc
            )
            analysis.bond_r_A = r.numpy()
            pool.add(f"bond {label}", density.sum(0))
            lengths = bond_lengths(x[part], typed, cell, pbc)
            pool.add(f"bond mean {label}", lengths.mean(1).sum())
    for label, typed in angle_types.items():
        for part in _chunks(n_used, len(typed)):
            theta, density = angular_distribution(x[part], typed, sigma=0.0, cell=cell, pbc=pbc)
            analysis.angle_deg = theta.numpy()
            pool.add(f"angle {label}", density.sum(0))
            pool.add(f"angle mean {label}", bond_angles(x[part], typed, cell, pbc).mean(1).sum())


def analyze_trajectory(
    path: str | Path,
    system: System | None = None,
    window_ps: float = DIFFUSION_WINDOW_PS,
    with_vacf: bool | None = None,
    stride: int = 1,
) -> TrajectoryAnalysis:
    """Observables of the trajectory at ``path`` pooled over its replicas (see the module note).

    ``system``'s bonds (atoms in its order) give the bond-length and angle distributions; without
    it a molecule's bonds are found in its first frame, and a periodic box gets none.
    ``window_ps`` is the longest lag of the VACF and the MSD. ``with_vacf``: the VACF when
    velocities were written (None), always (True: an error without them) or never (False).
    The distributions use every ``stride``-th frame of each replica, the VACF and MSD all.
    """
    path = Path(path)
    if not window_ps > 0:
        raise InputError(f"the lag window must be positive, got {window_ps} ps")
    if stride < 1:
        raise InputError(f"the stride must be at least 1 frame, got {stride}")
    times = frame_times(path)
    first = read_replica(path, 0)
    species, masses = first["species"].astype(np.int64), first["masses"]
    periodic = bool(first["pbc"].any())
    if periodic and not bool(first["pbc"].all()):
        raise InputError(f"{path}: a box periodic in some directions only is not supported")
    if first["cell"].ndim == 3:
        raise InputError(
            f"{path}: its box changes from frame to frame (a constant-pressure run); analyze "
            "reads constant-volume trajectories only"
        )
    has_velocities = "velocities" in first
    if with_vacf and not has_velocities:
        raise InputError(
            f"{path}: the trajectory has no velocities, so no VACF; write them with "
            "stablemd simulate --velocities (or analyze with --no-vacf)"
        )
    do_vacf = has_velocities if with_vacf is None else with_vacf
    if system is not None:
        _check_system(path, species, system)

    bonds = None
    if system is not None:
        bonds = np.asarray(system.bonds, dtype=np.int64).reshape(-1, 2)
    elif not periodic and np.isfinite(first["positions"][:1]).all() and len(times[0]):
        bonds = find_bonds(Atoms(species, first["positions"][0]))
    bond_types = angle_types = {}
    if bonds is not None and len(bonds):
        bond_types = _bond_types(species, bonds)
        angle_types = _angle_types(species, angle_triplets(bonds).numpy())

    cell = torch.as_tensor(first["cell"], dtype=_F64) if periodic else None
    pbc = torch.as_tensor(first["pbc"]) if periodic else None
    elements = sorted(set(species.tolist()))
    masks = {z: torch.as_tensor(species == z) for z in elements}
    dt = _frame_interval(path, times)
    longest = max(len(t) for t in times)
    n_lags = 1 if dt is None else min(max(1, round(window_ps * 1000 / dt)) + 1, longest)
    weights = torch.as_tensor(masses, dtype=_F64)

    backbone = system is not None and all(name in system.dihedrals for name in BACKBONE)
    angles: list[tuple[np.ndarray, np.ndarray]] = []
    pool = _Pool()
    analysis = TrajectoryAnalysis(
        trajectory=str(path),
        system=None if system is None else system.name,
        periodic=periodic,
        elements=[chemical_symbols[z] for z in elements],
        n_replicas=len(times),
        frames_analysed=0,
        distribution_frames=0,
        frame_interval_fs=dt,
        window_fs=1000.0 * window_ps,
        r_A=np.zeros(0),
        h_r_per_A=np.zeros(0),
    )
    for k in range(len(times)):
        data = first if k == 0 else read_replica(path, k)
        _check_same_structure(path, k, data, first)
        n_used = _usable_frames(data, do_vacf)
        if n_used < len(data["time_fs"]):
            analysis.notes.append(
                f"replica {k}: frames from {data['time_fs'][n_used] / 1000:g} ps on hold "
                "non-finite numbers and are left out"
            )
        analysis.replicas.append(_summary(k, data, n_used, longest))
        analysis.series.append(
            ReplicaSeries(
                k,
                data["time_fs"],
                {name: data[name] for name in SERIES if name in data},
                len(data["time_fs"]) < longest,
            )
        )
        if n_used == 0:
            continue
        if backbone:  # positions are never wrapped, so the molecule is whole in every frame
            angles.append(phi_psi(data["positions"][:n_used], system))
        x = torch.as_tensor(data["positions"][:n_used], dtype=_F64)
        analysis.frames_analysed += n_used
        pool.frames += len(x[::stride])
        _add_distributions(pool, analysis, x[::stride], species, cell, pbc, bond_types, angle_types)
        lags = min(n_used, n_lags)
        origins = (n_used - torch.arange(lags)).to(_F64)
        pool.lagged("origins", torch.ones(lags, dtype=_F64), origins, n_lags)
        if periodic:
            centre = (weights[:, None] * x).sum(1) / weights.sum()  # [T, 3]
            centred = x - centre[:, None]
            for z, mask in masks.items():
                msd = mean_squared_displacement(centred[:, mask], remove_drift=False)[:lags]
                pool.lagged(f"msd {z}", msd, origins, n_lags)
        if do_vacf:
            v = torch.as_tensor(data["velocities"][:n_used], dtype=_F64)
            for z, mask in masks.items():
                correlation = vacf(v[:, mask], window=lags, normalize=False)
                pool.lagged(f"vacf {z}", correlation, origins, n_lags)

    analysis.distribution_frames = pool.frames
    if pool.frames == 0:
        raise InputError(f"{path}: no frame with finite positions to analyse")
    _finish(analysis, pool, bond_types, angle_types, masks, do_vacf, n_lags, dt)
    if backbone:
        analysis.phi_deg, analysis.psi_deg = (np.concatenate(a) for a in zip(*angles, strict=True))
        analysis.ramachandran_coverage = quadtree_coverage(analysis.phi_deg, analysis.psi_deg)
    return analysis


def _finish(analysis, pool, bond_types, angle_types, masks, do_vacf, n_lags, dt) -> None:
    """Turn the pooled sums into averages, the VACF, the MSD and D."""
    frames = pool.frames
    analysis.h_r_per_A = (pool.sums["h_r"] / frames).numpy()
    if analysis.periodic:
        keys = sorted(key for key in pool.sums if key.startswith("rdf "))
        analysis.rdf = {key[4:]: (pool.sums[key] / frames).numpy() for key in keys}
    if bond_types:
        analysis.bond_length_density_per_A = {
            t: (pool.sums[f"bond {t}"] / frames).numpy() for t in bond_types
        }
        analysis.bond_length_mean_A = {
            t: float(pool.sums[f"bond mean {t}"] / frames) for t in bond_types
        }
    if angle_types:
        analysis.angle_density_per_deg = {
            t: (pool.sums[f"angle {t}"] / frames).numpy() for t in angle_types
        }
        analysis.angle_mean_deg = {
            t: float(pool.sums[f"angle mean {t}"] / frames) for t in angle_types
        }
    n_lags = int((pool.sums["origins"] > 0).sum())  # lags inside some replica's usable frames
    origins = pool.sums["origins"][:n_lags]
    lag_fs = (0.0 if dt is None else dt) * np.arange(n_lags)
    symbols = {z: chemical_symbols[z] for z in masks}
    if do_vacf:
        correlation = {z: pool.sums[f"vacf {z}"][:n_lags] / origins for z in masks}
        counts = {z: int(mask.sum()) for z, mask in masks.items()}
        total = sum(counts[z] * correlation[z] for z in masks)
        curves = {"all": total, **{symbols[z]: correlation[z] for z in masks}}
        analysis.vacf_lag_fs = lag_fs
        analysis.vacf = {name: (c / c[0]).numpy() for name, c in curves.items() if float(c[0]) > 0}
        if dt is not None and dt > VACF_COARSE_FS:
            analysis.notes.append(
                f"frames are {dt:g} fs apart: the VACF misses motions with periods under "
                f"{2 * dt:g} fs (write frames more often with stablemd simulate --every)"
            )
    if analysis.periodic:
        analysis.msd_lag_fs = lag_fs
        analysis.msd_A2 = {
            symbols[z]: (pool.sums[f"msd {z}"][:n_lags] / origins).numpy() for z in masks
        }
        analysis.diffusivity_cm2_per_s = {symbols[z]: None for z in masks}
        window_lags = round(analysis.window_fs / dt) if dt is not None else 0
        if window_lags < 2:
            analysis.notes.append("no diffusivity: the lag window spans fewer than two frames")
        elif n_lags <= window_lags:
            analysis.notes.append(
                f"no diffusivity: no replica spans the {analysis.window_fs / 1000:g} ps window"
            )
        else:
            analysis.diffusivity_cm2_per_s = {
                name: fit_diffusivity(lag_fs[1:], msd[1:]) for name, msd in analysis.msd_A2.items()
            }
