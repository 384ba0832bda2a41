"""Facts about the machine a benchmark ran on, stored with every result."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

import torch


def machine_info() -> dict:
    versions = {}
    for package in ("torch", "ase", "tblite", "vesin", "mace-torch", "openmm", "stablemd"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": versions,
    }
