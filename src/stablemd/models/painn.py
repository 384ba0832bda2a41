"""PaiNN, the built-in equivariant message-passing potential.

Schütt, Unke, Gastegger, "Equivariant message passing for the prediction of tensorial
properties and molecular spectra", ICML 2021. Each atom carries scalar features s_i [F] and
vector features v_i [3, F]; message and update blocks follow the paper (Eqs. 7–9), without
weight sharing between interactions. The energy head is a two-layer MLP on the final s_i; the
direct-force head is a gated equivariant block that maps v_i to one vector per atom.

Smoothness: the radial filters W(r) = A · sinc_n(r) · f_cut(r) have no bias, the sinc basis
sin(nπr/r_c)/r vanishes at r_c and the cosine cutoff has a double zero there, so every pair
term has a triple zero at the cutoff: the energy is C², the forces C¹ when a pair crosses it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from stablemd.core.batch import Batch
from stablemd.core.neighbors import NeighborList
from stablemd.models.painn_fused import fused_message
from stablemd.models.potential import N_ELEMENTS, Potential

#: Added under square roots of squared vector norms, so their gradient stays finite at v = 0.
NORM_EPS = 1e-8


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Smooth channel-wise norm of vector features [n, 3, F] → [n, F]."""
    return torch.sqrt(torch.sum(v * v, dim=1) + NORM_EPS)


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out))


class RadialBasis(nn.Module):
    """sin(nπr/r_c)/r, n = 1..n_rbf, times the cosine cutoff ½(cos(πr/r_c) + 1); r in Å."""

    def __init__(self, n_rbf: int, cutoff: float):
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("frequencies", torch.arange(1, n_rbf + 1) * math.pi / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        f_cut = 0.5 * (torch.cos(r * math.pi / self.cutoff) + 1.0) * (r < self.cutoff)
        basis = torch.sin(r[:, None] * self.frequencies) / r[:, None]
        return basis * f_cut[:, None]


class Message(nn.Module):
    """Eq. 7–8: Δs_i = Σ_j φ_s(s_j)∘W_s(r_ij); Δv_i = Σ_j v_j∘φ_vv(s_j)∘W_vv + φ_vs∘W_vs r̂_ij."""

    def __init__(self, n_features: int):
        super().__init__()
        self.phi = _mlp(n_features, n_features, 3 * n_features)

    def forward(self, s, v, filters, directions, centers, neighbors, fused: bool = False):
        """``filters`` W(r_ij) [n_pairs, 3F]; ``fused`` uses the first-derivative-only kernel."""
        if fused:
            ds, dv = fused_message(self.phi(s), v, filters, directions, centers, neighbors)
            return s + ds, dv if v is None else v + dv
        x = self.phi(s)[neighbors] * filters
        ds, dvv, dvs = torch.chunk(x, 3, dim=-1)
        dv = dvs[:, None, :] * directions[:, :, None]
        if v is None:  # before the first message every vector feature is zero
            v = dv.new_zeros((s.shape[0], *dv.shape[1:]))
        else:
            dv = dv.addcmul_(dvv[:, None, :], v[neighbors])
        return s.index_add(0, centers, ds), v.index_add(0, centers, dv)


class Update(nn.Module):
    """Eq. 9: Δv_i = a_vv∘(U v_i); Δs_i = a_sv∘⟨U v_i, V v_i⟩ + a_ss, a = MLP(s_i, ‖V v_i‖)."""

    def __init__(self, n_features: int):
        super().__init__()
        self.mix = nn.Linear(n_features, 2 * n_features, bias=False)
        self.mlp = _mlp(2 * n_features, n_features, 3 * n_features)

    def forward(self, s, v):
        uv, vv = torch.chunk(self.mix(v), 2, dim=-1)
        a_vv, a_sv, a_ss = torch.chunk(self.mlp(torch.cat([s, _norm(vv)], dim=-1)), 3, dim=-1)
        return s + a_sv * torch.sum(uv * vv, dim=1) + a_ss, v + a_vv[:, None, :] * uv


class GatedVectorHead(nn.Module):
    """Gated equivariant block (paper Fig. 3) from (s_i, v_i) to one vector per atom [n, 3]."""

    def __init__(self, n_features: int):
        super().__init__()
        self.mix = nn.Linear(n_features, n_features + 1, bias=False)
        self.gate = _mlp(2 * n_features, n_features, 1)

    def forward(self, s, v):
        context, direction = torch.split(self.mix(v), [v.shape[-1], 1], dim=-1)
        gate = self.gate(torch.cat([s, _norm(context)], dim=-1))
        return gate * direction[..., 0]


class PaiNN(Potential):
    """PaiNN over the given elements (atomic numbers); cutoff in Å."""

    kind = "painn"
    supports_direct_forces = True

    def __init__(
        self,
        elements: list[int],
        cutoff: float = 5.0,
        n_features: int = 64,
        n_interactions: int = 3,
        n_rbf: int = 20,
    ):
        super().__init__(elements, cutoff)
        self.n_features = int(n_features)
        self.n_interactions = int(n_interactions)
        self.n_rbf = int(n_rbf)
        index = torch.full((N_ELEMENTS,), -1, dtype=torch.long)
        index[self.elements] = torch.arange(len(self.elements))
        self.register_buffer("element_index", index, persistent=False)
        self.embedding = nn.Embedding(len(self.elements), self.n_features)
        self.radial_basis = RadialBasis(self.n_rbf, self.cutoff)
        # One bias-free filter network for all interactions (its bias would spoil smoothness).
        self.filters = nn.Linear(self.n_rbf, self.n_interactions * 3 * self.n_features, bias=False)
        self.messages = nn.ModuleList(Message(self.n_features) for _ in range(n_interactions))
        self.updates = nn.ModuleList(Update(self.n_features) for _ in range(n_interactions))
        self.energy_head = _mlp(self.n_features, self.n_features // 2, 1)
        self.force_head = GatedVectorHead(self.n_features)
        self._initialise()

    def _initialise(self) -> None:
        """Xavier-uniform weights and zero biases, as in the reference implementation."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "elements": list(self.elements),
            "cutoff": self.cutoff,
            "n_features": self.n_features,
            "n_interactions": self.n_interactions,
            "n_rbf": self.n_rbf,
        }

    def gradient_feature_layers(self) -> list[nn.Module]:
        """Message MLPs, update mixing and MLPs of each interaction, then the energy head (the
        radial filters act on pairs, not atoms, and the force head not on the energy)."""
        layers: list[nn.Module] = []
        for message, update in zip(self.messages, self.updates, strict=True):
            layers += [message.phi[0], message.phi[2], update.mix, update.mlp[0], update.mlp[2]]
        return layers + [self.energy_head[0], self.energy_head[2]]

    def raw_outputs(
        self,
        batch: Batch,
        neighbors: NeighborList,
        direct_forces: bool,
        features: bool,
        once_differentiable: bool = False,
    ) -> dict[str, torch.Tensor]:
        fused = once_differentiable and batch.positions.device.type == "cpu"
        if fused:  # the fused kernel sends each pair's message both ways
            neighbors = neighbors.one_direction()
        centers, others = neighbors.centers, neighbors.neighbors
        vectors = neighbors.vectors(batch.positions)
        r = torch.linalg.vector_norm(vectors, dim=1)
        directions = vectors / r[:, None]
        basis = self.radial_basis(r)
        # Each interaction's filters as their own contiguous [n_pairs, 3F] block.
        filters = [F.linear(basis, w) for w in self.filters.weight.chunk(self.n_interactions)]

        s = self.embedding(self.element_index[batch.numbers])
        v = None
        for message, update, w in zip(self.messages, self.updates, filters, strict=True):
            s, v = message(s, v, w, directions, centers, others, fused)
            s, v = update(s, v)

        out = {"raw_energies": self.energy_head(s)[:, 0]}
        if direct_forces:
            out["raw_direct_forces"] = self.force_head(s, v)
        if features:
            out["features"] = s
        return out
