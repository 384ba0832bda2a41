"""Labels from an oracle, computed where the executor puts them: in this process, or on the
workers of a Dask cluster (a ``LocalCluster`` by default, an existing scheduler by address, a
SLURM cluster through dask-jobqueue; docs/explore.md).

What travels to a worker is an :class:`OracleSpec` (the oracle's name and keyword arguments)
and plain arrays, never a calculator: tblite's is not picklable, and a DFT calculator is best
built where it runs. Each worker process builds each oracle once and keeps it. A failed label
(SCF not converged, an exception in the calculator, non-finite numbers) comes back flagged,
and so does a structure whose worker died more often than the scheduler allows (Dask retries a
task whose worker died on another worker first): the loop records and skips both. An oracle
that cannot be built on a worker is an :class:`InputError`, and a lost scheduler stops the
labelling with its own error: neither says anything of a structure, so neither may spend the
budget on failed labels; a rerun requests the missing labels again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from stablemd.core.errors import InputError
from stablemd.oracles.label import LabelResult, label
from stablemd.oracles.registry import get_oracle


@dataclass(frozen=True)
class OracleSpec:
    """An oracle by ``name`` (:func:`~stablemd.oracles.registry.get_oracle`) and its keyword
    arguments: what is sent to the workers, who build the calculator themselves."""

    name: str
    options: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    def build(self):
        """The calculator; one that cannot be built (here or on a worker) is an InputError."""
        try:
            return get_oracle(self.name, **dict(self.options))
        except InputError:
            raise
        except Exception as exc:  # e.g. a DFT code's environment missing on a worker
            message = f"{type(exc).__name__}: {exc}".strip()
            raise InputError(f"--oracle {self.describe()}: cannot be built ({message})") from None

    def describe(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options)
        return f"{self.name}({options})" if options else self.name


@dataclass(frozen=True, eq=False)  # compared and hashed by identity
class LabelRequest:
    """One structure to label: its ``request_id`` (:func:`request_id`), atomic numbers,
    positions (Å), cell and pbc."""

    request_id: str
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray

    @classmethod
    def of(cls, atoms: Atoms, step: int) -> LabelRequest:
        return cls(
            request_id(atoms, step), atoms.numbers.copy(), atoms.positions.copy(),
            np.asarray(atoms.cell).copy(), atoms.pbc.copy(),
        )  # fmt: skip

    def atoms(self) -> Atoms:
        return Atoms(self.numbers, self.positions, cell=self.cell, pbc=self.pbc)


def request_id(atoms: Atoms, step: int) -> str:
    """The identity of a label request: SHA-256 (16 hex digits) of the explore step, the atomic
    numbers and the exact positions. A label stored under this id is never requested again."""
    digest = hashlib.sha256(str(int(step)).encode())
    digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


#: Oracles built in this process (a worker's), by spec.
_BUILT: dict[OracleSpec, object] = {}


def label_request(spec: OracleSpec, request: LabelRequest) -> LabelResult:
    """Label one request with the oracle of ``spec`` (built once per process): the function
    the workers run."""
    if spec not in _BUILT:
        _BUILT[spec] = spec.build()
    calculator = _BUILT[spec]
    if hasattr(calculator, "forget_guess"):  # a label depends on its positions only
        calculator.forget_guess()
    return label(request.atoms(), calculator)


#: (request, result) pairs as they finish, in any order.
Labelled = Iterator[tuple[LabelRequest, LabelResult]]
#: What the loop is given: labels of requests with an oracle.
Labeller = Callable[[OracleSpec, Sequence[LabelRequest]], Labelled]


def label_here(spec: OracleSpec, requests: Sequence[LabelRequest]) -> Labelled:
    """Label in this process, one after the other (``--workers 0``)."""
    for request in requests:
        yield request, label_request(spec, request)


class DaskLabeller:
    """Labels on the workers of a ``dask.distributed`` client, yielded as they finish. A task
    whose workers kept dying (``KilledWorker``) comes back as a failed label; any other error
    of the cluster (a lost scheduler, a cancelled task) is raised."""

    def __init__(self, client):
        self.client = client

    def __call__(self, spec: OracleSpec, requests: Sequence[LabelRequest]) -> Labelled:
        from distributed import KilledWorker, as_completed

        futures = {
            self.client.submit(label_request, spec, r, key=f"label-{r.request_id}", pure=False): r
            for r in requests
        }
        for future in as_completed(futures):
            request = futures[future]
            try:
                result = future.result()
            except KilledWorker as exc:  # this structure's label kept killing its workers
                result = LabelResult(error=f"{type(exc).__name__}: {exc}".strip())
            future.release()
            yield request, result


def dask_client(workers: int, scheduler: str | None):
    """A client of the cluster at ``scheduler`` (an address, or a scheduler file ending in
    .json), else of a new ``LocalCluster`` of ``workers`` single-threaded processes. The
    caller closes it (and its cluster)."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if scheduler.endswith(".json") and not Path(scheduler).is_file():
            # Dask would wait for it to appear, without end
            raise InputError(f"--scheduler {scheduler}: no such scheduler file")
        try:
            if scheduler.endswith(".json"):
                return Client(scheduler_file=scheduler, timeout="30s")
            return Client(scheduler, timeout="30s")
        except (OSError, ValueError) as exc:  # unreachable, or not an address
            raise InputError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    return Client(cluster)
