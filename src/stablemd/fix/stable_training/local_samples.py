"""LocalSamples for the localized Boltzmann estimator (StABlE paper, appendix A.2, A.6).

A localized sample γ is a set of atoms of one sampled frame; its energy U(γ) is the sum of the
model's per-atom energies over the set. :func:`molecule_samples` makes one sample per
molecule of every frame, and :func:`stratify` picks samples
evenly across bins of a deviation (the paper's water recipe: 100 bins, 5 samples each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stablemd.core.batch import Batch
from stablemd.core.errors import InputError


@dataclass
class LocalSamples:
    """Which atoms of a batch make up each sample: pairs (``atom_index`` [P], ``sample_index``
    [P]); U(γ_s) = Σ of the per-atom energies of atoms paired with s. An atom may belong to
    several samples or to none."""

    atom_index: torch.Tensor
    sample_index: torch.Tensor
    n_samples: int

    @classmethod
    def whole_systems(cls, batch: Batch) -> LocalSamples:
        """One sample per system of the batch: the global estimator."""
        atoms = torch.arange(batch.n_atoms)
        return cls(atoms, batch.system_index.clone(), batch.n_systems)

    def atom_coefficients(self, sample_weights: torch.Tensor, n_atoms: int) -> torch.Tensor:
        """c_a = Σ_{samples s ∋ a} w_s [n_atoms], so that Σ_s w_s U(γ_s) = Σ_a c_a ε_a."""
        coefficients = torch.zeros(n_atoms, dtype=sample_weights.dtype)
        return coefficients.index_add(0, self.atom_index, sample_weights[self.sample_index])

    def energies(self, per_atom_energies: torch.Tensor) -> torch.Tensor:
        """U(γ_s) [n_samples] from per-atom energies [n_atoms]."""
        out = per_atom_energies.new_zeros(self.n_samples)
        return out.index_add(0, self.sample_index, per_atom_energies[self.atom_index])


def molecule_samples(batch: Batch, molecule_index) -> LocalSamples:
    """One sample per (frame, molecule): frames are the systems of ``batch``, all copies of one
    structure whose atom ``a`` belongs to molecule ``molecule_index[a]``. Sample s = frame ×
    n_molecules + molecule."""
    molecules = torch.as_tensor(np.asarray(molecule_index), dtype=torch.long)
    sizes = batch.atoms_per_system
    if not bool((sizes == len(molecules)).all()):
        raise InputError(
            f"molecule_index has {len(molecules)} atoms, the frames {sorted(set(sizes.tolist()))}"
        )
    n_molecules = int(molecules.max()) + 1
    order = torch.argsort(batch.system_index, stable=True)
    within = torch.arange(batch.n_atoms) - torch.repeat_interleave(
        torch.cumsum(sizes, 0) - sizes, sizes
    )  # position of each (sorted) atom inside its frame
    sample = batch.system_index[order] * n_molecules + molecules[within]
    return LocalSamples(order, sample, batch.n_systems * n_molecules)


def stratify(deviation, n_bins: int = 100, per_bin: int = 5, seed: int = 0) -> torch.Tensor:
    """Indices of samples picked evenly over ``n_bins`` equal-width bins of ``deviation`` [N]:
    up to ``per_bin`` from each bin, at random without replacement, sorted."""
    deviation = torch.as_tensor(deviation, dtype=torch.float64)
    edges = torch.linspace(float(deviation.min()), float(deviation.max()), n_bins + 1)
    bins = torch.bucketize(deviation, edges[1:-1], right=True)
    rng = np.random.default_rng(seed)
    chosen = []
    for b in torch.unique(bins).tolist():
        members = torch.nonzero(bins == b)[:, 0].numpy()
        chosen.extend(rng.choice(members, size=min(per_bin, len(members)), replace=False))
    return torch.as_tensor(sorted(int(i) for i in chosen), dtype=torch.long)


def select(local_samples: LocalSamples, samples: torch.Tensor) -> LocalSamples:
    """Only the samples ``samples`` [k] (renumbered 0 … k−1 in that order)."""
    new_index = torch.full((local_samples.n_samples,), -1, dtype=torch.long)
    new_index[samples] = torch.arange(len(samples))
    renumbered = new_index[local_samples.sample_index]
    keep = renumbered >= 0
    return LocalSamples(local_samples.atom_index[keep], renumbered[keep], len(samples))
