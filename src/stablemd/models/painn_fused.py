"""PaiNN's message block (Eqs. 7–8) as one fused CPU kernel, for force-only inference.

Written edge by edge in PyTorch, a message materialises about a dozen [n_pairs, 3, F] tensors
(gathers, products, their saved copies for backward); for 64 aspirin replicas each is 20 MB,
more than the cache holds, and the batched force call became memory-bandwidth bound
(docs/benchmarks.md). This kernel walks the pair list once forward and once backward, keeping a
pair's F-channel row in registers and scattering straight into per-atom sums, so the only
pair-sized arrays it touches are the filters W and their gradient.

No library ships such a kernel for PaiNN on the CPU (``torch.compile`` fused too little:
1.1× on the same call). The backward is first-order only (``once_differentiable``): force
matching during training, which differentiates the forces again, keeps the PyTorch path.
Both paths are tested equal (energies, forces, stress, direct forces, parameter gradients).

The kernel takes each unordered pair once (``NeighborList.one_direction``) and sends its
message both ways, i ← j along r̂_ij and j ← i along −r̂_ij: the filters W(r_ij) are symmetric,
so the radial basis, the filter matmul and their gradients cost half of the full list's.

Shapes: ``phi`` [n, 3F] = φ(s) split as (s, vv, vs) channel blocks, ``v`` [n, 3, F] (or [0, 3, F]
before the first message, when every vector feature is zero), ``filters`` [n_pairs, 3F],
``directions`` [n_pairs, 3] unit vectors r̂_ij from ``first`` (i) to ``second`` (j).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch.autograd.function import once_differentiable


@numba.njit(cache=True, fastmath=True, inline="always")
def _message(ds, dv, phi, v, filters, p, d, sign, center, other):  # pragma: no cover
    """Add the message from ``other`` to ``center`` over pair p (direction sign·d)."""
    n_f = ds.shape[1]
    for f in range(n_f):
        ds[center, f] += phi[other, f] * filters[p, f]
    for f in range(n_f):
        c = 2 * n_f + f
        x = sign * phi[other, c] * filters[p, c]
        for a in range(3):
            dv[center, a, f] += x * d[a]
    if v.shape[0] > 0:
        for f in range(n_f):
            c = n_f + f
            x = phi[other, c] * filters[p, c]
            for a in range(3):
                dv[center, a, f] += x * v[other, a, f]


@numba.njit(cache=True, fastmath=True, inline="always")
def _message_grad(
    grad_s, grad_v, phi, v, filters, p, d, sign, center, other,
    grad_phi, grad_v_in, grad_filters, grad_directions,
):  # pragma: no cover  # fmt: skip
    """Backward of :func:`_message`: accumulate into the gradients of phi, v, W and d."""
    n_f = grad_s.shape[1]
    for f in range(n_f):
        g = grad_s[center, f]
        grad_filters[p, f] += g * phi[other, f]
        grad_phi[other, f] += g * filters[p, f]
    g_d0 = 0.0
    g_d1 = 0.0
    g_d2 = 0.0
    for f in range(n_f):
        c = 2 * n_f + f
        x = sign * phi[other, c] * filters[p, c]
        g0, g1, g2 = grad_v[center, 0, f], grad_v[center, 1, f], grad_v[center, 2, f]
        g = sign * (g0 * d[0] + g1 * d[1] + g2 * d[2])
        grad_filters[p, c] += g * phi[other, c]
        grad_phi[other, c] += g * filters[p, c]
        g_d0 += g0 * x
        g_d1 += g1 * x
        g_d2 += g2 * x
    grad_directions[p, 0] += g_d0
    grad_directions[p, 1] += g_d1
    grad_directions[p, 2] += g_d2
    if v.shape[0] > 0:
        for f in range(n_f):
            c = n_f + f
            x = phi[other, c] * filters[p, c]
            g0, g1, g2 = grad_v[center, 0, f], grad_v[center, 1, f], grad_v[center, 2, f]
            g = g0 * v[other, 0, f] + g1 * v[other, 1, f] + g2 * v[other, 2, f]
            grad_filters[p, c] += g * phi[other, c]
            grad_phi[other, c] += g * filters[p, c]
            grad_v_in[other, 0, f] += g0 * x
            grad_v_in[other, 1, f] += g1 * x
            grad_v_in[other, 2, f] += g2 * x


@numba.njit(parallel=True, cache=True)
def _sum_blocks(x):  # pragma: no cover
    """x [n_blocks, n, ...] → its sum over blocks [n, ...], in parallel over rows."""
    rows = x.shape[0] * x.shape[1]
    flat = x.reshape(x.shape[0], x.shape[1], x.size // rows if rows else 0)
    for row in numba.prange(flat.shape[1]):
        for b in range(1, flat.shape[0]):
            for c in range(flat.shape[2]):
                flat[0, row, c] += flat[b, row, c]
    return x[0]


@numba.njit(parallel=True, cache=True, fastmath=True)
def _forward(phi, v, filters, directions, first, second, n_blocks):  # pragma: no cover
    n_atoms, n_channels = phi.shape
    n_pairs = first.shape[0]
    ds = np.zeros((n_blocks, n_atoms, n_channels // 3), phi.dtype)
    dv = np.zeros((n_blocks, n_atoms, 3, n_channels // 3), phi.dtype)
    for b in numba.prange(n_blocks):
        for p in range(b * n_pairs // n_blocks, (b + 1) * n_pairs // n_blocks):
            i, j, d = first[p], second[p], directions[p]
            _message(ds[b], dv[b], phi, v, filters, p, d, 1.0, i, j)
            _message(ds[b], dv[b], phi, v, filters, p, d, -1.0, j, i)
    return _sum_blocks(ds), _sum_blocks(dv)


@numba.njit(parallel=True, cache=True, fastmath=True)
def _backward(
    grad_s, grad_v, phi, v, filters, directions, first, second, n_blocks
):  # pragma: no cover
    n_atoms, n_channels = phi.shape
    n_pairs = first.shape[0]
    grad_phi = np.zeros((n_blocks, n_atoms, n_channels), phi.dtype)
    grad_v_in = np.zeros((n_blocks, v.shape[0], 3, n_channels // 3), phi.dtype)
    grad_filters = np.zeros((n_pairs, n_channels), phi.dtype)
    grad_directions = np.zeros((n_pairs, 3), phi.dtype)
    for b in numba.prange(n_blocks):
        for p in range(b * n_pairs // n_blocks, (b + 1) * n_pairs // n_blocks):
            i, j, d = first[p], second[p], directions[p]
            g_phi, g_v = grad_phi[b], grad_v_in[b]
            for sign, center, other in ((1.0, i, j), (-1.0, j, i)):
                _message_grad(
                    grad_s, grad_v, phi, v, filters, p, d, sign, center, other,
                    g_phi, g_v, grad_filters, grad_directions,
                )  # fmt: skip
    return _sum_blocks(grad_phi), _sum_blocks(grad_v_in), grad_filters, grad_directions


def _n_blocks(n_pairs: int) -> int:
    """One block of pairs per torch thread of the calling thread (each block owns its scatter
    buffers)."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS, n_pairs))


def _use_threads(n_blocks: int) -> int:
    """Give numba's parallel regions ``n_blocks`` threads; returns it. Without it a region
    wakes numba's whole pool, whose spare threads fight other processes for the cores."""
    numba.set_num_threads(n_blocks)
    return n_blocks


def _launch_numba_pool() -> None:
    """Start numba's thread pool now, keeping torch's thread count.

    Launching numba's OpenMP pool resets OpenMP's thread count, which torch reads, to
    ``NUMBA_NUM_THREADS`` (all cores), even under ``OMP_NUM_THREADS=1``: a process limited to one
    torch thread silently ran on two after its first PaiNN call, and on a loaded machine a call
    on 8 aspirin replicas took 530–900 ms instead of 70–100 ms.
    """
    threads = torch.get_num_threads()
    numba.get_num_threads()
    torch.set_num_threads(threads)


_launch_numba_pool()


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class FusedMessage(torch.autograd.Function):
    """(Δs [n, F], Δv [n, 3, F]) summed over each atom's pairs; first derivatives only."""

    @staticmethod
    def forward(ctx, phi, v, filters, directions, first, second):
        inputs = (phi, v, filters, directions, first, second)
        ctx.n_blocks = _use_threads(_n_blocks(len(first)))
        ds, dv = _forward(*[_np(t) for t in inputs], ctx.n_blocks)
        ctx.save_for_backward(*inputs)
        return torch.from_numpy(ds), torch.from_numpy(dv)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_s, grad_v):
        phi, v, filters, directions, first, second = ctx.saved_tensors
        n_f = phi.shape[1] // 3
        if grad_s is None:
            grad_s = phi.new_zeros((phi.shape[0], n_f))
        if grad_v is None:
            grad_v = phi.new_zeros((phi.shape[0], 3, n_f))
        arrays = (grad_s, grad_v, phi, v, filters, directions, first, second)
        grad_phi, grad_v_in, grad_filters, grad_directions = _backward(
            *[_np(t) for t in arrays], _use_threads(ctx.n_blocks)
        )
        return (
            torch.from_numpy(grad_phi),
            torch.from_numpy(grad_v_in) if v.shape[0] else None,
            torch.from_numpy(grad_filters),
            torch.from_numpy(grad_directions),
            None,
            None,
        )


def fused_message(phi, v, filters, directions, first, second):
    """Δs, Δv of one PaiNN message over each unordered pair (first, second) once, in both
    directions; ``v`` None before the first message."""
    if v is None:
        v = phi.new_zeros((0, 3, phi.shape[1] // 3))
    return FusedMessage.apply(phi, v, filters, directions, first, second)
