"""Labels through the executor seam: in process, and on a real Dask LocalCluster of two worker
processes, one of them killed in the middle of a label."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ase import Atoms

from stablemd.core.errors import InputError
from stablemd.explore.active_learning.labelling import (
    DaskLabeller,
    LabelRequest,
    OracleSpec,
    dask_client,
    label_here,
    request_id,
)
from stablemd.oracles import get_oracle

TESTS = Path(__file__).resolve().parent
ORACLE = "dying_oracle:DyingLennardJones"


def dimers(n: int) -> list[Atoms]:
    """Argon dimers at separations 3.4 … Å, the first atom at x = k (which the test oracle
    reads to decide whom to kill)."""
    return [Atoms("Ar2", positions=[[k, 0, 0], [k + 3.4 + 0.1 * k, 0, 0]]) for k in range(n)]


def test_request_ids_tell_structures_and_steps_apart():
    a, b = dimers(2)
    assert request_id(a, 1) == request_id(a.copy(), 1)
    assert request_id(a, 1) != request_id(a, 2)
    assert request_id(a, 1) != request_id(b, 1)
    moved = a.copy()
    moved.positions[1, 0] += 1e-12
    assert request_id(moved, 1) != request_id(a, 1)


def test_a_spec_pickles_and_builds_its_oracle():
    spec = OracleSpec("xtb", (("accuracy", 0.5),))
    copy = pickle.loads(pickle.dumps(spec))
    assert copy == spec
    assert copy.build().parameters["accuracy"] == 0.5


def test_labels_in_process_agree_with_the_calculator_and_flag_failures(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    spec = OracleSpec(ORACLE, (("fail_at", 1.0),))
    requests = [LabelRequest.of(atoms, 0) for atoms in dimers(3)]
    results = dict((r.request_id, out) for r, out in label_here(spec, requests))
    assert not results[requests[1].request_id].ok
    assert "SCF not converged" in results[requests[1].request_id].error
    for k in (0, 2):
        atoms = dimers(3)[k]
        atoms.calc = get_oracle("ase.calculators.lj:LennardJones")
        assert results[requests[k].request_id].energy == pytest.approx(atoms.get_potential_energy())


@pytest.mark.slow
def test_dask_labels_survive_a_worker_killed_mid_task(tmp_path, monkeypatch):
    """Two single-threaded worker processes; the label of structure 2 kills its worker the
    first time. The scheduler reruns it on a fresh worker: every label arrives, once, equal to
    the in-process ones. Structure 3 raises (a failed label, flagged); structure 4 kills every
    worker that tries it and comes back flagged once Dask gives up."""
    import dask
    import distributed  # noqa: F401  before config.set: imported first inside the block, its
    # defaults would be registered there and removed with the block, breaking later clients

    monkeypatch.setenv("PYTHONPATH", f"{TESTS}:{Path(dask.__file__).parents[1]}")
    monkeypatch.syspath_prepend(str(TESTS))
    marker = tmp_path / "died-once"
    spec = OracleSpec(ORACLE, (("die_at", 2.0), ("fail_at", 3.0), ("marker", str(marker))))
    requests = [LabelRequest.of(atoms, 0) for atoms in dimers(6)]
    reference = dict(label_here(OracleSpec("ase.calculators.lj:LennardJones"), requests))
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        client = dask_client(workers=2, scheduler=None)
        try:
            got = list(DaskLabeller(client)(spec, requests[:4]))
            always = OracleSpec(ORACLE, (("die_at", 4.0),))
            dead = list(DaskLabeller(client)(always, requests[4:5]))
            # --scheduler: a client of the running cluster, by its address
            joined = dask_client(workers=0, scheduler=client.scheduler.address)
            try:
                remote = list(DaskLabeller(joined)(spec, requests[5:6]))
            finally:
                joined.close()
        finally:
            client.close()
            client.cluster.close()
    assert marker.exists()  # a worker did die
    ids = [r.request_id for r, _ in got]
    assert sorted(ids) == sorted(r.request_id for r in requests[:4])  # each once
    for request, result in got:
        if request is requests[3]:
            assert not result.ok and "SCF not converged" in result.error
            continue
        assert result.ok
        np.testing.assert_allclose(result.forces, reference[request].forces, rtol=1e-12)
        assert result.energy == pytest.approx(reference[request].energy, rel=1e-12)
    assert not dead[0][1].ok and "KilledWorker" in dead[0][1].error
    assert remote[0][1].energy == pytest.approx(reference[requests[5]].energy, rel=1e-12)


class _Future:
    def __init__(self, error):
        self.error = error

    def result(self):
        raise self.error

    def release(self):
        pass


class _Client:
    """Futures that raise the given errors, one per request."""

    def __init__(self, errors):
        self.errors = iter(errors)

    def submit(self, *args, **kwargs):
        return _Future(next(self.errors))


def test_only_a_structure_that_kills_its_workers_is_a_failed_label(monkeypatch):
    """KilledWorker speaks of one structure: a failed label, recorded and skipped. A lost
    scheduler or a cancelled task says nothing of the structure: raised, so that no label is
    spent on it and a rerun requests it again."""
    import distributed
    from distributed import KilledWorker
    from distributed.comm import CommClosedError

    monkeypatch.setattr(distributed, "as_completed", iter)
    spec = OracleSpec("ase.calculators.lj:LennardJones")
    requests = [LabelRequest.of(atoms, 0) for atoms in dimers(1)]
    killed = KilledWorker("label-x", SimpleNamespace(address="tcp://worker"), 3)
    [(_, result)] = DaskLabeller(_Client([killed]))(spec, requests)
    assert not result.ok and "KilledWorker" in result.error
    for error in (
        CommClosedError("scheduler gone"),
        distributed.client.FutureCancelledError("label-x", "lost"),
    ):
        with pytest.raises(type(error)):
            list(DaskLabeller(_Client([error]))(spec, requests))


def test_an_oracle_that_cannot_be_built_is_an_input_error(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    spec = OracleSpec("dying_oracle:MissingEnvironment")
    requests = [LabelRequest.of(atoms, 0) for atoms in dimers(1)]
    with pytest.raises(InputError, match="^--oracle dying_oracle:MissingEnvironment: cannot be"):
        list(label_here(spec, requests))
