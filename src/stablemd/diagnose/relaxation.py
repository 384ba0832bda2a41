"""Does a geometry optimisation converge with these forces?

ASE's FIRE and L-BFGS are run to ``fmax`` (default 1e-4 eV/Å) within ``max_steps`` (default
1000), the paper's test (Bigi, Langer & Ceriotti 2025, §geometry optimisation; METHODS.md §3):
forces with a curl have no point where they vanish in general and the optimiser circles or
creeps instead of converging. The optimisers are ASE's; this module only runs them the same way
for each force kind and records the largest force after every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator as AseCalculator
from ase.optimize import FIRE, LBFGS

from stablemd.ase import Calculator, NonFiniteError
from stablemd.core.errors import InputError
from stablemd.diagnose.conservation import FORCE_KINDS
from stablemd.models.potential import Potential

#: The optimisers :func:`relaxation_convergence` knows, by name.
OPTIMIZERS = {"FIRE": FIRE, "LBFGS": LBFGS}


@dataclass
class Relaxation:
    """One optimisation: ``optimizer`` name, ``converged`` (fmax reached), ``steps`` taken,
    ``final_fmax_eV_per_A`` (largest force on an atom at the end, or at the last finite
    step), ``fmax_trace_eV_per_A`` [steps + 1] (from the start, after every step) and
    ``failure`` (None, or why it stopped early: non-finite forces)."""

    optimizer: str
    converged: bool
    steps: int
    final_fmax_eV_per_A: float
    fmax_trace_eV_per_A: np.ndarray
    failure: str | None = None


def _calculator(source: Potential | AseCalculator, forces: str) -> AseCalculator:
    if isinstance(source, AseCalculator):
        return source
    if forces not in FORCE_KINDS:
        raise InputError(f"unknown forces {forces!r}; choose from {list(FORCE_KINDS)}")
    if forces == "direct" and not source.supports_direct_forces:
        raise InputError(f"a {source.kind} model has no direct-force head")
    return Calculator(source, direct_forces=forces == "direct")


def relax(
    calculator: AseCalculator,
    atoms: Atoms,
    optimizer: str = "FIRE",
    fmax: float = 1e-4,
    max_steps: int = 1000,
) -> Relaxation:
    """Optimise a copy of ``atoms`` with ``calculator`` and the named ASE optimiser."""
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r}; choose from {list(OPTIMIZERS)}")
    if not fmax > 0 or max_steps < 1:
        raise InputError(f"need fmax > 0 and max_steps ≥ 1, got {fmax} and {max_steps}")
    work = atoms.copy()
    work.calc = calculator
    trace: list[float] = []

    def record() -> None:
        trace.append(float(np.sqrt((work.get_forces() ** 2).sum(axis=1).max())))

    opt = OPTIMIZERS[optimizer](work, logfile=None)
    opt.attach(record, interval=1)
    failure = None
    try:
        converged = bool(opt.run(fmax=fmax, steps=max_steps))
    except NonFiniteError as exc:
        converged, failure = False, f"non-finite at step {opt.nsteps}: {exc}"
    if not trace:  # forces not finite at the start: nothing was recorded
        raise InputError(f"{optimizer}: the forces at the start are not finite ({failure})")
    return Relaxation(
        optimizer=optimizer,
        converged=converged,
        steps=int(opt.nsteps),
        final_fmax_eV_per_A=trace[-1],
        fmax_trace_eV_per_A=np.array(trace),
        failure=failure,
    )


def relaxation_convergence(
    source: Potential | AseCalculator,
    atoms: Atoms,
    forces: str = "conservative",
    optimizers: Sequence[str] = ("FIRE", "LBFGS"),
    fmax: float = 1e-4,
    max_steps: int = 1000,
) -> dict[str, Relaxation]:
    """Each optimiser's :class:`Relaxation` of ``atoms`` with a saved model's forces
    (``conservative`` −∂E/∂r or ``direct``, through :class:`stablemd.ase.Calculator`) or any
    ASE calculator, by optimiser name."""
    calculator = _calculator(source, forces)
    return {name: relax(calculator, atoms, name, fmax, max_steps) for name in optimizers}
