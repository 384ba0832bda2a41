"""Test oracles for the Dask labelling tests, importable by worker processes (the tests put
this directory on their PYTHONPATH): Lennard-Jones that kills its worker process, or raises,
on chosen structures."""

from __future__ import annotations

import os
from pathlib import Path

from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones


class DyingLennardJones(LennardJones):
    """Lennard-Jones that ends its process (``os._exit``, as a crash or an OOM kill would) on a
    structure whose first x coordinate is ``die_at``: the first time only when ``marker`` (a
    file it creates before dying) is given, every time otherwise; raises on ``fail_at``."""

    def __init__(self, die_at=None, fail_at=None, marker=None, **kwargs):
        self.die_at, self.fail_at, self.marker = die_at, fail_at, marker
        super().__init__(**kwargs)

    def calculate(self, atoms=None, properties=None, system_changes=None):
        x = round(float(atoms.positions[0, 0]), 6)
        if x == self.fail_at:
            raise RuntimeError("SCF not converged")
        if x == self.die_at and (self.marker is None or not Path(self.marker).exists()):
            if self.marker is not None:
                Path(self.marker).touch()
            os._exit(1)
        super().calculate(atoms, properties, system_changes)


class CountingEMT(EMT):
    """ASE's EMT that appends one line per calculation (the first atom's position) to
    ``log``: how the tests count oracle calls across processes; the ``fail_on``-th call (as
    counted in the log) raises. Its labels are EMT's, and say so."""

    level_of_theory = "ase.calculators.emt:EMT"

    def __init__(self, log=None, fail_on=None, **kwargs):
        self.log, self.fail_on = log, fail_on
        super().__init__(**kwargs)

    def calculate(self, atoms=None, properties=None, system_changes=None):
        with open(self.log, "a") as file:
            file.write(f"{atoms.positions[0].tolist()}\n")
        if (
            self.fail_on is not None
            and len(Path(self.log).read_text().splitlines()) == self.fail_on
        ):
            raise RuntimeError("SCF not converged")
        super().calculate(atoms, properties, system_changes)


class MissingEnvironment(EMT):
    """A calculator that cannot be built where its environment is missing (as a DFT code
    without its pseudopotential path on a worker)."""

    def __init__(self, **kwargs):
        raise OSError("DFT_PSEUDOPOTENTIALS is not set")
