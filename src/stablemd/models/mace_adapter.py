"""MACE (mace-torch) behind the stablemd :class:`~stablemd.models.potential.Potential` contract.

A small ``mace.modules.MACE`` with zero atomic energies: E0, scale and shift are applied by
stablemd's own :class:`~stablemd.models.potential.AtomicEnergyScaling`, and forces and stress
come from :func:`~stablemd.models.potential.predict`, so MACE is asked for energies only.

Edge convention: mace's ``edge_index[0]`` is the sender, ``edge_index[1]`` the receiver, and its
edge vector is ``r[receiver] - r[sender] + shift``; stablemd's pair vector is
``r[neighbor] - r[center] + shift``, hence ``edge_index = [centers, neighbors]``.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from typing import Any

import numpy as np
import torch

from stablemd.core.batch import Batch
from stablemd.core.neighbors import NeighborList
from stablemd.models.potential import Potential

# Importing mace has side effects that this import undoes or contains: it prints a banner to
# stdout and sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD for the whole process (restored below);
# e3nn 0.4 loads its constants with torch.load's weights-only default, which rejects the
# ``slice`` objects they contain unless allowed.
_WEIGHTS_ONLY_FLAG = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_flag = os.environ.get(_WEIGHTS_ONLY_FLAG)
with torch.serialization.safe_globals([slice]), contextlib.redirect_stdout(io.StringIO()):
    from e3nn import o3
    from mace.modules import MACE, RealAgnosticResidualInteractionBlock
if _flag is None:
    os.environ.pop(_WEIGHTS_ONLY_FLAG, None)
else:
    os.environ[_WEIGHTS_ONLY_FLAG] = _flag


class MACEPotential(Potential):
    """A MACE model over the given elements (atomic numbers); cutoff in Å.

    ``avg_num_neighbors`` normalises the sum over neighbours (≈ 15 for molecules at 5 Å).
    ``features`` are the invariant (0e) node features of every interaction, concatenated.
    """

    kind = "mace"
    supports_direct_forces = False

    def __init__(
        self,
        elements: list[int],
        cutoff: float = 5.0,
        hidden_irreps: str = "32x0e+32x1o",
        max_ell: int = 2,
        correlation: int = 2,
        num_interactions: int = 2,
        num_bessel: int = 8,
        num_polynomial_cutoff: int = 5,
        radial_mlp: list[int] | None = None,
        mlp_irreps: str = "16x0e",
        avg_num_neighbors: float = 12.0,
    ):
        super().__init__(elements, cutoff)
        self.config = {
            "hidden_irreps": str(o3.Irreps(hidden_irreps)),
            "max_ell": int(max_ell),
            "correlation": int(correlation),
            "num_interactions": int(num_interactions),
            "num_bessel": int(num_bessel),
            "num_polynomial_cutoff": int(num_polynomial_cutoff),
            "radial_mlp": [int(n) for n in (radial_mlp or [32, 32, 32])],
            "mlp_irreps": str(o3.Irreps(mlp_irreps)),
            "avg_num_neighbors": float(avg_num_neighbors),
        }
        c = self.config
        with warnings.catch_warnings():  # e3nn's TorchScript code generation is chatty
            warnings.filterwarnings("ignore", "The TorchScript type system", UserWarning)
            self.mace = MACE(
                r_max=self.cutoff,
                num_bessel=c["num_bessel"],
                num_polynomial_cutoff=c["num_polynomial_cutoff"],
                max_ell=c["max_ell"],
                interaction_cls=RealAgnosticResidualInteractionBlock,
                interaction_cls_first=RealAgnosticResidualInteractionBlock,
                num_interactions=c["num_interactions"],
                num_elements=len(self.elements),
                hidden_irreps=o3.Irreps(c["hidden_irreps"]),
                MLP_irreps=o3.Irreps(c["mlp_irreps"]),
                atomic_energies=np.zeros(len(self.elements)),
                avg_num_neighbors=c["avg_num_neighbors"],
                atomic_numbers=self.elements,
                correlation=c["correlation"],
                gate=torch.nn.functional.silu,
                radial_MLP=c["radial_mlp"],
            )
        self.register_buffer("invariant_columns", self._invariant_columns(), persistent=False)

    def _invariant_columns(self) -> torch.Tensor:
        """Columns of mace's concatenated node features that hold 0e (invariant) channels."""
        columns, offset = [], 0
        for product in self.mace.products:
            irreps = product.linear.irreps_out
            for (_, ir), part in zip(irreps, irreps.slices(), strict=True):
                if ir == o3.Irrep("0e"):
                    columns.append(torch.arange(part.start, part.stop) + offset)
            offset += irreps.dim
        return torch.cat(columns)

    def hyperparameters(self) -> dict[str, Any]:
        return {"elements": list(self.elements), "cutoff": self.cutoff, **self.config}

    def gradient_feature_layers(self) -> list[torch.nn.Module]:
        """The e3nn linear layers of each interaction and product basis, then the readouts;
        the last layer of the last readout gives the atomic energy."""
        layers: list[torch.nn.Module] = []
        for interaction, product in zip(self.mace.interactions, self.mace.products, strict=True):
            layers += [interaction.linear_up, interaction.linear, product.linear]
        for readout in self.mace.readouts:
            names = ("linear", "linear_1", "linear_2")
            layers += [getattr(readout, n) for n in names if hasattr(readout, n)]
        return layers

    def raw_outputs(
        self,
        batch: Batch,
        neighbors: NeighborList,
        direct_forces: bool,
        features: bool,
        once_differentiable: bool = False,
    ) -> dict[str, torch.Tensor]:
        positions = batch.positions
        if not positions.requires_grad:
            # mace switches on requires_grad of its input; keep the caller's tensor untouched.
            positions = positions.detach()
        one_hot = (batch.numbers[:, None] == self.mace.atomic_numbers).to(positions.dtype)
        counts = batch.atoms_per_system
        ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        data = {
            "positions": positions,
            "node_attrs": one_hot,
            "edge_index": torch.stack([neighbors.centers, neighbors.neighbors]),
            "shifts": neighbors.shifts,
            "cell": batch.cell,
            "batch": batch.system_index,
            "ptr": ptr,
        }
        out = self.mace(data, compute_force=False)
        result = {"raw_energies": out["node_energy"]}
        if features:
            result["features"] = out["node_feats"][:, self.invariant_columns]
        return result
