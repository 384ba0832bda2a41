"""Trajectories as H5MD 1.1 files (HDF5 via h5py), one particle group per replica.

Layout, for every replica ``replica_<k>``::

    h5md/                         version [1, 1]; author (name), creator (name, version)
    particles/replica_<k>/
        species [N], mass [N] amu            atomic numbers and masses (time-independent)
        box/  attrs dimension, boundary; edges [3, 3] Å (cell rows), or under a barostat
              edges/{value [T, 3, 3] Å, step, time} (hard links to position's)
        position/{value [T, N, 3] Å, step [T], time [T] fs}
        velocity/{value [T, N, 3] Å/fs, step, time}    (optional; step/time are hard links)
    observables/replica_<k>/<name>/{value [T], step, time}
        potential_energy, kinetic_energy (eV), temperature (K), conserved_energy (eV, when
        the writer knows the integrator), volume (Å³, under a barostat), and any per-replica
        number another monitor computes (:class:`ReplicaObservable`, e.g. the early warning's
        cumulative_latent_instability)

Only active replicas are written, so a frozen replica's series ends at the frame where it was
found unstable. Frames are queued and written in blocks of ``FRAMES_PER_CHUNK`` (and whenever
the runner checkpoints, and on close). On resume the file is opened for appending and cut back
to the frames the checkpoint knew about.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import h5py
import numpy as np
import torch

from stablemd.core.errors import InputError
from stablemd.md.integrators import Integrator
from stablemd.md.monitoring import Observer
from stablemd.md.state import MDState
from stablemd.md.velocities import temperature

#: Frames per HDF5 chunk (small, so short runs of many replicas make small files).
FRAMES_PER_CHUNK = 16
UNITS = {
    "position": "Angstrom",
    "velocity": "Angstrom fs-1",
    "potential_energy": "eV",
    "kinetic_energy": "eV",
    "temperature": "K",
    "conserved_energy": "eV",
    "edges": "Angstrom",
    "volume": "Angstrom^3",
}


def replica_name(k: int) -> str:
    return f"replica_{k}"


@dataclass(frozen=True)
class ReplicaObservable:
    """A number per replica that the writer records with every frame: ``read(state)`` gives it
    [n_systems] for the state being written (from a monitor called before the writer at the
    same step); ``unit`` is its H5MD unit (None: dimensionless)."""

    read: Callable[[MDState], torch.Tensor]
    unit: str | None = None


class TrajectoryWriter(Observer):
    """Writes positions (and optionally velocities) and energies to ``path`` every ``every``
    steps; the conserved energy of ``integrator`` unless ``conserved`` is False (forces that
    are not −∂E/∂r of the reported energy, as in biased MD, conserve no such quantity); and
    the ``observables`` (name → :class:`ReplicaObservable`)."""

    name = "trajectory"

    def __init__(
        self,
        path: str | Path,
        integrator: Integrator | None = None,
        velocities: bool = False,
        every: int = 1,
        conserved: bool = True,
        observables: Mapping[str, ReplicaObservable] | None = None,
    ):
        super().__init__(every)
        self.path = Path(path)
        self.observables = dict(observables or {})
        self.integrator = integrator
        self.conserved = conserved and integrator is not None
        self.velocities = velocities
        self.cell_changes = integrator is not None and integrator.barostat is not None
        self.file: h5py.File | None = None
        self.frames: torch.Tensor | None = None
        self.series: list[dict[str, h5py.Dataset]] = []
        self.atom_slices: list[slice] = []
        self.pending: list[dict] = []

    # -- observer interface -------------------------------------------------------------
    def __call__(self, state: MDState) -> None:
        """Queue a frame of every active replica; frames reach the file in blocks."""
        if self.file is None:
            self._create(state)
        per_atom = {"position/value": state.positions}
        if self.velocities:
            per_atom["velocity/value"] = state.velocities
        per_replica = {
            "potential_energy/value": state.potential_energy,
            "kinetic_energy/value": state.kinetic_energy(),
            "temperature/value": temperature(state),
        }
        if self.conserved:
            per_replica["conserved_energy/value"] = self.integrator.conserved_energy(state)
        if self.cell_changes:
            per_replica["box/edges/value"] = state.cell
            per_replica["volume/value"] = state.volume()
        for name, observable in self.observables.items():
            per_replica[f"{name}/value"] = observable.read(state)
        self.pending.append(
            {
                "active": state.active.numpy().copy(),
                "per_atom": {k: v.detach().numpy().copy() for k, v in per_atom.items()},
                "per_replica": {k: v.detach().numpy().copy() for k, v in per_replica.items()},
                "position/step": state.step,
                "position/time": state.time_fs,
            }
        )
        if len(self.pending) >= FRAMES_PER_CHUNK:
            self.flush()

    def flush(self) -> None:
        """Write the queued frames, one slab per dataset and replica."""
        if self.file is None or not self.pending:
            return
        for k, atoms in enumerate(self.atom_slices):
            frames = [frame for frame in self.pending if frame["active"][k]]
            if not frames:
                continue
            values = {
                key: [f["per_atom"][key][atoms] for f in frames] for key in frames[0]["per_atom"]
            }
            values |= {
                key: [f["per_replica"][key][k] for f in frames] for key in frames[0]["per_replica"]
            }
            values |= {key: [f[key] for f in frames] for key in ("position/step", "position/time")}
            start, end = int(self.frames[k]), int(self.frames[k]) + len(frames)
            for key, value in values.items():
                dataset = self.series[k][key]
                dataset.resize(end, axis=0)
                dataset[start:end] = np.stack(value)
            self.frames[k] = end
        self.pending.clear()
        self.file.flush()

    def state_dict(self) -> dict:
        """Frames written per replica (after writing the queue, so the file matches)."""
        self.flush()
        return {"frames": None if self.frames is None else self.frames.clone()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Reopen the file for appending, cut back to the frames of ``state_dict``."""
        frames = state_dict["frames"]
        if frames is None:
            return
        if not self.path.is_file():
            raise InputError(f"{self.path}: trajectory missing; cannot resume the run")
        self.close()
        try:
            self.file = h5py.File(self.path, "a")
            self.frames = frames.clone()
            self.atom_slices = self._atom_slices(len(frames))
            self.series = [self._find_series(k) for k in range(len(frames))]
        except (OSError, KeyError, ValueError):  # h5py's errors for foreign or damaged files
            self.close()
            raise InputError(
                f"{self.path}: not the trajectory of this run (not an H5MD file stablemd wrote, "
                "or damaged); cannot resume the run"
            ) from None
        for k, series in enumerate(self.series):
            for dataset in series.values():
                dataset.resize(int(frames[k]), axis=0)

    def close(self) -> None:
        if self.file is not None:
            self.flush()
            self.file.close()
            self.file = None

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- layout -------------------------------------------------------------------------
    def _find_series(self, k: int) -> dict[str, h5py.Dataset]:
        """The appendable datasets of replica ``k`` (hard-linked step/time listed once)."""
        particles = self.file["particles"][replica_name(k)]
        position = particles["position"]
        series = {f"position/{key}": position[key] for key in ("value", "step", "time")}
        if self.velocities:
            series["velocity/value"] = particles["velocity/value"]
        if self.cell_changes:
            series["box/edges/value"] = particles["box/edges/value"]
        observables = self.file["observables"][replica_name(k)]
        for name, group in observables.items():
            series[f"{name}/value"] = group["value"]
        missing = [name for name in self.observables if name not in observables]
        if missing:  # a trajectory written without it: not this run's
            raise KeyError(missing[0])
        return series

    def _atom_slices(self, n_replicas: int) -> list[slice]:
        """Where each replica's atoms sit in the state (from the stored atom counts)."""
        particles = self.file["particles"]
        counts = [len(particles[replica_name(k)]["species"]) for k in range(n_replicas)]
        ends = np.cumsum(counts).tolist()
        return [slice(end - count, end) for end, count in zip(ends, counts, strict=True)]

    def _create(self, state: MDState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.path, "w")
        h5md = self.file.create_group("h5md")
        h5md.attrs["version"] = np.array([1, 1])
        h5md.create_group("author").attrs["name"] = _user()
        creator = h5md.create_group("creator")
        creator.attrs["name"] = "stablemd"
        creator.attrs["version"] = version("stablemd")
        particles = self.file.create_group("particles")
        observables = self.file.create_group("observables")
        counts = state.atoms_per_system.tolist()
        starts = np.cumsum([0, *counts])
        names = ["potential_energy", "kinetic_energy", "temperature"]
        if self.conserved:
            names.append("conserved_energy")
        if self.cell_changes:
            names.append("volume")
        units = {name: UNITS[name] for name in names}
        units |= {name: observable.unit for name, observable in self.observables.items()}
        for k in range(state.n_systems):
            atoms = slice(int(starts[k]), int(starts[k + 1]))
            group = particles.create_group(replica_name(k))
            group["species"] = state.numbers[atoms].numpy().astype(np.int32)
            group["mass"] = state.masses[atoms].numpy()
            group["mass"].attrs["unit"] = "amu"
            box = group.create_group("box")
            box.attrs["dimension"] = 3
            box.attrs["boundary"] = np.array(
                ["periodic" if p else "none" for p in state.pbc[k].tolist()], dtype="S8"
            )
            position = _time_series(group, "position", (counts[k], 3), UNITS["position"])
            if self.cell_changes:
                _time_series(box, "edges", (3, 3), UNITS["edges"], position)
            else:
                box["edges"] = state.cell[k].numpy()
                box["edges"].attrs["unit"] = UNITS["position"]
            if self.velocities:
                _time_series(group, "velocity", (counts[k], 3), UNITS["velocity"], position)
            per_replica = observables.create_group(replica_name(k))
            for name, unit in units.items():
                _time_series(per_replica, name, (), unit, position)
        self.frames = torch.zeros(state.n_systems, dtype=torch.long)
        self.series = [self._find_series(k) for k in range(state.n_systems)]
        self.atom_slices = self._atom_slices(state.n_systems)


def _time_series(
    parent: h5py.Group,
    name: str,
    shape: tuple,
    unit: str | None,
    clock: h5py.Group | None = None,
):
    """An H5MD time-dependent element in ``unit`` (None: dimensionless, no unit attribute);
    ``clock`` shares its step/time datasets (hard links)."""
    group = parent.create_group(name)
    value = group.create_dataset(
        "value", (0, *shape), maxshape=(None, *shape), dtype="f8", chunks=(FRAMES_PER_CHUNK, *shape)
    )
    if unit is not None:
        value.attrs["unit"] = unit
    if clock is None:
        clock = {"maxshape": (None,), "chunks": (FRAMES_PER_CHUNK,)}
        group.create_dataset("step", (0,), dtype="i8", **clock)
        time = group.create_dataset("time", (0,), dtype="f8", **clock)
        time.attrs["unit"] = "fs"
    else:
        group["step"] = clock["step"]
        group["time"] = clock["time"]
    return group


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@contextmanager
def _open_trajectory(path: str | Path) -> Iterator[h5py.File]:
    """The H5MD file at ``path`` opened for reading; InputError unless it is a trajectory of
    :class:`TrajectoryWriter`'s layout."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such trajectory file")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise InputError(f"{path}: not an HDF5 file (expected an H5MD trajectory)") from None
    with f:
        if "h5md" not in f or not isinstance(f.get("particles"), h5py.Group):
            raise InputError(f"{path}: an HDF5 file but not an H5MD trajectory (no h5md/particles)")
        if replica_name(0) not in f["particles"] or "observables" not in f:
            raise InputError(
                f"{path}: an H5MD file but not a stablemd trajectory (no particles/replica_0)"
            )
        yield f


def frame_times(path: str | Path) -> list[np.ndarray]:
    """Times (fs) of the frames of every replica [T_k] of the trajectory at ``path`` (InputError
    if it is not one); a replica frozen early has fewer frames."""
    with _open_trajectory(path) as f:
        replicas = f["particles"]
        n_replicas = sum(1 for name in replicas if name.startswith("replica_"))
        return [replicas[replica_name(k)]["position/time"][()] for k in range(n_replicas)]


def read_replica(path: str | Path, k: int) -> dict[str, np.ndarray]:
    """Arrays of replica ``k``: ``positions`` [T, N, 3] Å, ``step`` [T], ``time_fs`` [T],
    ``species`` [N], ``masses`` [N] amu, ``cell`` [3, 3] Å ([T, 3, 3] when a barostat changed
    it), ``pbc`` [3], ``velocities`` [T, N, 3] Å/fs when written, and every observable [T]
    under its own name."""
    with _open_trajectory(path) as f:
        name = replica_name(k)
        if name not in f["particles"]:
            raise InputError(f"{path}: no replica {k} (it has {len(f['particles'])})")
        group = f["particles"][name]
        out = {
            "positions": group["position/value"][()],
            "step": group["position/step"][()],
            "time_fs": group["position/time"][()],
            "species": group["species"][()],
            "masses": group["mass"][()],
            "cell": group["box/edges"][()]
            if isinstance(group["box/edges"], h5py.Dataset)
            else group["box/edges/value"][()],
            "pbc": np.array([b == b"periodic" for b in group["box"].attrs["boundary"]]),
        }
        if "velocity" in group:
            out["velocities"] = group["velocity/value"][()]
        for key, element in f["observables"][name].items():
            out[key] = element["value"][()]
    return out


def read_observable(path: str | Path, name: str) -> list[np.ndarray]:
    """The observable ``name`` (e.g. ``volume``) of every replica [T_k] of the trajectory at
    ``path``; InputError if it is not a trajectory or does not record ``name``."""
    with _open_trajectory(path) as f:
        observables = f["observables"]
        n_replicas = sum(1 for key in observables if key.startswith("replica_"))
        if name not in observables[replica_name(0)]:
            raise InputError(f"{path}: the trajectory records no {name}")
        return [observables[replica_name(k)][name]["value"][()] for k in range(n_replicas)]
