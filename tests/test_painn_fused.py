"""The fused PaiNN message kernel (force-only inference) against the PyTorch autograd path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ase.build import bulk
from test_models import copper, ethanol, make_model, rattled

from stablemd.core.batch import Batch
from stablemd.models.potential import predict


def copper_primitive():
    """One atom in a 2.55 Å fcc cell: with a 4 Å cutoff every neighbour is its own image."""
    return bulk("Cu", "fcc", a=3.6)


def systems():
    return [ethanol(), rattled(ethanol(), 5), copper(), copper_primitive()]


def both_paths(model, batch, properties):
    """(fused, reference): ``create_graph=True`` keeps the autograd path."""
    return predict(model, batch, properties), predict(model, batch, properties, create_graph=True)


def parameter_gradients(model, batch, create_graph):
    model.zero_grad()
    predict(model, batch, ["energy"], create_graph=create_graph)["energy"].sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_fused_equals_autograd_path():
    model = make_model("painn")
    batch = Batch.from_atoms(systems(), dtype=torch.float64)
    fused, reference = both_paths(model, batch, ["forces", "stress", "direct_forces"])
    for key in ("energy", "forces", "stress", "direct_forces"):
        assert reference[key].abs().max() > 1e-4, key
        torch.testing.assert_close(fused[key], reference[key].detach(), rtol=1e-12, atol=1e-13)


def test_fused_parameter_gradients_equal_autograd_path():
    model = make_model("painn")
    batch = Batch.from_atoms(systems(), dtype=torch.float64)
    fused = parameter_gradients(model, batch, create_graph=False)
    reference = parameter_gradients(model, batch, create_graph=True)
    assert fused.keys() == reference.keys()
    assert "filters.weight" in fused and "messages.0.phi.0.weight" in fused
    for name, gradient in fused.items():
        torch.testing.assert_close(gradient, reference[name], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_result_does_not_depend_on_thread_count(threads):
    """Each thread scatters into its own buffers; the sum must not change with their number."""
    model = make_model("painn")
    batch = Batch.from_atoms(systems(), dtype=torch.float64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        out = predict(model, batch)
    finally:
        torch.set_num_threads(before)
    reference = predict(model, batch, create_graph=True)
    torch.testing.assert_close(out["forces"], reference["forces"].detach(), rtol=1e-12, atol=1e-13)


THREADS_SCRIPT = """
import torch
torch.set_num_threads(1)
import numba
from test_models import ethanol, make_model
from stablemd.core.batch import Batch
from stablemd.models.potential import predict
predict(make_model("painn"), Batch.from_atoms([ethanol()] * 4, dtype=torch.float64))
print(torch.get_num_threads(), numba.get_num_threads())
"""


def test_a_one_thread_process_stays_on_one_thread():
    """numba's OpenMP pool, launched by the fused kernel, must not raise torch's thread count
    (nor use more threads itself) in a process told to use one thread."""
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), *sys.path])}
    env.pop("NUMBA_NUM_THREADS", None)
    out = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["1", "1"]
