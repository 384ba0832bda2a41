"""Oracles by name: reference calculators with the ASE interface.

``xtb`` is GFN2-xTB from tblite; ``openmm-spcfw`` is flexible SPC/Fw water in OpenMM; any
other ASE calculator is named ``module:Class`` (e.g. ``ase.calculators.emt:EMT``) and built with
the given keyword arguments.
"""

from __future__ import annotations

import importlib
from typing import Any

from ase.calculators.calculator import Calculator

from stablemd.core.errors import InputError
from stablemd.oracles.spcfw import SPCFwCalculator


def _xtb(accuracy: float = 0.1, threads: int | None = 1, **kwargs: Any) -> Calculator:
    """GFN2-xTB on ``threads`` OpenMP threads, ``accuracy`` 0.1 by default: SCF-converged forces
    to ~1e-5 eV/Å (tblite's default 1.0 leaves ~3e-4 eV/Å of noise that depends on the
    previous geometry, at nearly the same cost). Other keywords go to tblite's calculator."""
    from stablemd.oracles.xtb import XTBCalculator

    kwargs = {"method": "GFN2-xTB", "verbosity": 0, "accuracy": accuracy, **kwargs}
    return XTBCalculator(threads=threads, **kwargs)


ORACLES = {"xtb": _xtb, "openmm-spcfw": SPCFwCalculator}


def list_oracles() -> list[str]:
    """Names of the built-in oracles (any ``module:Class`` works too)."""
    return sorted(ORACLES)


def _import_calculator(name: str) -> type:
    module_name, _, class_name = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"oracle {name!r}: cannot import it ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Calculator)):
        raise InputError(f"oracle {name!r} is not an ASE Calculator class")
    return cls


def get_oracle(name: str, **kwargs: Any) -> Calculator:
    """A fresh calculator for the oracle ``name`` built with ``kwargs``."""
    if name in ORACLES:
        factory = ORACLES[name]
    elif ":" in name:
        factory = _import_calculator(name)
    else:
        raise InputError(
            f"unknown oracle {name!r}; choose from {list_oracles()} or give module:Class"
        )
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise InputError(f"oracle {name!r}: bad keyword arguments ({exc})") from None


def level_of_theory(calculator: Calculator) -> str:
    """A short label for the method behind ``calculator``, stored with every frame: its
    ``level_of_theory`` attribute where it names one (a user's wrapper of a DFT code can),
    else its method (xTB) or class."""
    from tblite.ase import TBLite

    named = getattr(calculator, "level_of_theory", None)
    if isinstance(named, str):
        return named
    if isinstance(calculator, SPCFwCalculator):
        return "SPC/Fw (OpenMM)"
    if isinstance(calculator, TBLite):
        return calculator.parameters["method"]
    cls = type(calculator)
    return f"{cls.__module__}:{cls.__name__}"
