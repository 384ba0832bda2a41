"""Gradient features: what each atom contributes to the gradient of the energy with respect to
the weights of the model's atom-wise linear layers (Zaverkin et al., npj Comput. Mater. 2024).

A linear layer maps each atom's input x_i to z_i = W x_i, so the gradient of the energy with
respect to W is Σ_i g_i x_iᵀ with g_i = ∂E/∂z_i; atom i's term g_i x_iᵀ is its feature. For the
layers of the energy head (which act on one atom each) it is exactly ∂E_i/∂W; for layers inside
message passing it is atom i's share of ∂E/∂W (the shares sum to it). Two feature maps:

- ``last-layer``: g_i ⊗ x_i of the layer that gives the atomic energy, in full;
- ``sketched``: Σ_layers (x_i R₁)⊙(g_i R₂)/√P with fixed Gaussian matrices R₁, R₂ of P columns
  (512 by default), whose inner products are unbiased estimates of Σ_layers (x·x')(g·g'),
  the inner products of the full gradients, at the cost of a few small matrix products.

x and g come from one forward and one backward pass: forward hooks record each layer's input
and output (:class:`LayerTape`), and :func:`~stablemd.models.potential.predict` differentiates
the energy with respect to the outputs in the same backward pass as the forces. Layers with
components beyond the feature axis (PaiNN's vector features [n, 3, F], e3nn irreps of l > 0)
sum their gradient over those components, as the weight gradient does. Biases are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from stablemd.core.errors import InputError

#: The feature maps :class:`GradientFeatures` knows.
FEATURE_KINDS = ("sketched", "last-layer")


@dataclass(frozen=True)
class WeightBlock:
    """One block of a linear layer's weights: z[:, c, v] += α Σ_u w_uv x[:, c, u] over the
    ``components`` c, for the input columns ``inputs`` (``n_in`` features u) and output columns
    ``outputs`` (``n_out`` features v). ``features_last``: the columns are laid out as
    [components, features] (torch) rather than [features, components] (e3nn)."""

    inputs: slice
    outputs: slice
    n_in: int
    n_out: int
    alpha: float
    features_last: bool

    def split(self, values: torch.Tensor, columns: slice, n: int) -> torch.Tensor:
        """This block's part of a layer's input or output as [n_atoms, components, n]."""
        if self.features_last:
            return values.reshape(values.shape[0], -1, values.shape[-1])[..., columns]
        part = values.reshape(values.shape[0], -1)[:, columns]
        return part.reshape(part.shape[0], n, -1).transpose(1, 2)


def weight_blocks(layer: nn.Module) -> list[WeightBlock]:
    """The weight blocks of an ``nn.Linear`` (one) or an e3nn ``o3.Linear`` (one per path)."""
    if isinstance(layer, nn.Linear):
        every = slice(None)
        return [WeightBlock(every, every, layer.in_features, layer.out_features, 1.0, True)]
    if hasattr(layer, "instructions") and hasattr(layer, "irreps_in"):  # e3nn o3.Linear
        slices_in, slices_out = layer.irreps_in.slices(), layer.irreps_out.slices()
        return [
            WeightBlock(
                slices_in[path.i_in],
                slices_out[path.i_out],
                layer.irreps_in[path.i_in].mul,
                layer.irreps_out[path.i_out].mul,
                float(path.path_weight),
                False,
            )  # fmt: skip
            for path in layer.instructions
        ]
    raise InputError(f"gradient features: {type(layer).__name__} is not a linear layer")


class LayerTape:
    """Records the input and output of each of ``layers`` during one forward pass (a context
    manager that installs forward hooks); :func:`~stablemd.models.potential.predict` then
    fills ``gradients`` with ∂E/∂output of each, in the order of ``layers``."""

    def __init__(self, layers: list[nn.Module]):
        self.layers = layers
        self.records: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.gradients: list[torch.Tensor | None] = []
        self._hooks: list = []

    def _hook(self, index: int):
        def record(layer, args, output):
            if index in self.records:
                raise RuntimeError(f"gradient features: {type(layer).__name__} ran twice")
            if torch.is_grad_enabled() and not output.requires_grad:
                output.requires_grad_(True)  # a layer before any dependence on positions
            self.records[index] = (args[0], output)

        return record

    def __enter__(self) -> LayerTape:
        self.records, self.gradients = {}, []
        self._hooks = [
            layer.register_forward_hook(self._hook(k)) for k, layer in enumerate(self.layers)
        ]
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    @property
    def outputs(self) -> list[torch.Tensor]:
        """Each layer's output, in the order of ``layers``."""
        if len(self.records) != len(self.layers):
            raise RuntimeError("gradient features: a layer did not run in the forward pass")
        return [self.records[k][1] for k in range(len(self.layers))]

    @property
    def inputs(self) -> list[torch.Tensor]:
        return [self.records[k][0] for k in range(len(self.layers))]


class GradientFeatures:
    """A feature map of per-atom gradient features [n_atoms, dimension] of a potential.

    ``kind``: ``sketched`` (``projections`` columns, Gaussian matrices drawn from ``seed``) or
    ``last-layer``. The matrices are part of :meth:`state_dict`, so a stored map gives the same
    features whatever the random number generator of another torch version does.
    """

    def __init__(
        self,
        layers: list[nn.Module],
        kind: str = "sketched",
        projections: int = 512,
        seed: int = 0,
        matrices: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ):
        if kind not in FEATURE_KINDS:
            raise InputError(f"features: unknown kind {kind!r}; choose from {list(FEATURE_KINDS)}")
        if projections < 1:
            raise InputError(f"projections: must be at least 1, got {projections}")
        self.kind, self.projections, self.seed = kind, int(projections), int(seed)
        self.layers = layers if kind == "sketched" else layers[-1:]
        self.blocks = [weight_blocks(layer) for layer in self.layers]
        if kind == "sketched" and matrices is None:
            generator = torch.Generator().manual_seed(self.seed)

            def gaussian(rows: int) -> torch.Tensor:
                shape = (rows, self.projections)
                return torch.randn(shape, generator=generator, dtype=torch.float64)

            matrices = [(gaussian(b.n_in), gaussian(b.n_out)) for bs in self.blocks for b in bs]
        self.matrices = matrices or []
        self._cast: dict[tuple[int, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def dimension(self) -> int:
        """Length of one atom's feature vector."""
        if self.kind == "sketched":
            return self.projections
        return sum(b.n_in * b.n_out for b in self.blocks[-1])

    def tape(self) -> LayerTape:
        """A recorder of this map's layers, for one forward and backward pass."""
        return LayerTape(self.layers)

    def __call__(self, tape: LayerTape) -> torch.Tensor:
        """Per-atom features [n_atoms, dimension] from a tape of one forward and backward pass
        (differentiable when the pass was taken with ``create_graph``)."""
        if len(tape.gradients) != len(self.layers):
            raise RuntimeError("gradient features: the tape holds no backward pass")
        pairs = list(zip(tape.inputs, tape.gradients, tape.outputs, strict=True))
        columns, total, k = [], None, 0
        for (x, g, z), blocks in zip(pairs, self.blocks, strict=True):
            g = torch.zeros_like(z) if g is None else g
            for block in blocks:
                xb = block.split(x, block.inputs, block.n_in)
                gb = block.split(g, block.outputs, block.n_out)
                if self.kind == "last-layer":
                    outer = torch.einsum("acu,acv->auv", xb, gb) * block.alpha
                    columns.append(outer.reshape(outer.shape[0], -1))
                    continue
                r_in, r_out = self._matrices(k, x.dtype)
                k += 1
                sketch = torch.einsum("acp,acp->ap", xb @ r_in, gb @ r_out) * block.alpha
                total = sketch if total is None else total + sketch
        if self.kind == "last-layer":
            return torch.cat(columns, dim=1)
        return total / math.sqrt(self.projections)

    def _matrices(self, k: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The k-th pair of projection matrices in ``dtype`` (cast once, then kept)."""
        key = (k, dtype)
        if key not in self._cast:
            self._cast[key] = tuple(m.to(dtype) for m in self.matrices[k])
        return self._cast[key]

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "projections": self.projections,
            "seed": self.seed,
            "matrices": [list(pair) for pair in self.matrices],
        }

    @classmethod
    def from_state_dict(cls, layers: list[nn.Module], values: dict) -> GradientFeatures:
        matrices = [tuple(pair) for pair in values["matrices"]] or None
        return cls(layers, values["kind"], values["projections"], values["seed"], matrices)
