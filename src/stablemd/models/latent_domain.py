"""The natural interpolation domain (NID) of a potential in its own latent space, and the
Heaviside indicators that mark an atom outside it.

The latent features b_i [F] are the per-atom features the model's atomic-energy readout reads
(``predict(potential, batch, ("features",))``: PaiNN's scalar features after the last
interaction, the input of its energy MLP; the MACE adapter's invariant node features of every
interaction, which its per-interaction readouts read). A domain is fitted per element on the
training frames and offers two indicators, H_i ∈ {0, 1}:

- **box** (after n2p2's extrapolation warnings): per feature the training range widened by
  ``box_margin`` of its width on each side, [min − ε·w, max + ε·w] with w = max − min (each
  side widened by at least ``BOX_FLOOR``, so a feature constant over the training atoms still
  tolerates rounding);
  H_i = 1 when any feature of atom i is outside.
- **grade** (after the D-optimality extrapolation grade of ACE/pacemaker and MTP):
  γ_i = max_j |(b_i A⁻¹)_j|, with A [F, F] the rows of F training atoms of the element chosen
  by MaxVol (:func:`maxvol`) so that every training atom has γ ≤ 1 + ``maxvol_tolerance``;
  H_i = 1 when γ_i > ``grade_threshold``.

Training features that do not span all F dimensions (fewer training atoms of an element than
features, or features that are linearly dependent) are handled in the subspace they do span:
the training matrix's singular directions above ``rank_tolerance`` × the largest singular value
give the rank k and a basis V [F, k]; the active set is k atoms chosen by MaxVol on b V, and the
grade adds the part of b outside that subspace, measured against a scale τ: the largest such
part among the training atoms, or, when every training atom spans a direction of its own (k
equals their number, as with fewer atoms than features, where those parts are all zero), the
largest distance of a training atom from the span of the others (leave one out); τ is at least
``RESIDUAL_FLOOR`` × the largest training feature norm:
γ_i = max(max_j |(b_i V A⁻¹)_j|, ‖b_i − b_i V Vᵀ‖ / τ). With k = F the second term is zero and
γ is exactly the grade of ACE and MTP. A non-finite feature is always flagged.

The fitted domain is a plain dictionary of tensors and numbers (:meth:`LatentDomain.state_dict`),
so it can be saved with ``torch.save`` or kept in a model file's metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import scipy.linalg
import torch
from ase import Atoms
from ase.data import chemical_symbols

from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.models.potential import Potential, predict
from stablemd.models.registry import attachment, model_fingerprint

FORMAT = "stablemd-latent-domain/1"
#: The model-file attachment that holds a domain (under ``"domain"``) and its critical levels.
ATTACHMENT = "latent_domain"
#: Defaults (see the module docstring and docs/early_warning.md).
BOX_MARGIN = 0.1
GRADE_THRESHOLD = 2.0
MAXVOL_TOLERANCE = 0.01
RANK_TOLERANCE = 1e-6
#: Smallest half-margin of a box feature, in feature units (a feature constant in training).
BOX_FLOOR = 1e-6
#: Smallest scale of the out-of-subspace part, relative to the largest training feature norm.
RESIDUAL_FLOOR = 1e-6
INDICATORS = ("grade", "box")


def maxvol(
    rows: torch.Tensor, tolerance: float = MAXVOL_TOLERANCE, max_swaps: int | None = None
) -> torch.Tensor:
    """Indices of k rows of ``rows`` [n, k] (n ≥ k, rank k) whose square submatrix A has a
    locally maximal |det A|: every row r then has max_j |(r A⁻¹)_j| ≤ 1 + ``tolerance``.

    The algorithm of Goreinov, Oseledets, Savostyanov, Tyrtyshnikov and Zamarashkin ("How to
    find a good submatrix", 2010), as used for the active sets of MTP and ACE: start from the
    pivots of a column-pivoted QR of rowsᵀ; with C = rows A⁻¹ [n, k], while some |C_ij| exceeds
    1 + tolerance put row i in place of active row j, which multiplies |det A| by |C_ij|, and
    update C by the rank-one formula C ← C − C[:, j] (C[i] − e_j) / C_ij. C is recomputed by a
    solve before stopping, so rounding in the updates cannot end the search early.
    """
    n, k = rows.shape
    if n < k:
        raise ValueError(f"maxvol needs at least as many rows as columns, got {n} × {k}")
    rows = rows.to(torch.float64)
    _, _, pivots = scipy.linalg.qr(rows.T.numpy(), mode="economic", pivoting=True)
    active = torch.as_tensor(pivots[:k].copy(), dtype=torch.long)
    max_swaps = 100 * k if max_swaps is None else max_swaps
    swaps = 0
    while True:
        coefficients = torch.linalg.solve(rows[active].T, rows.T).T  # C = rows A⁻¹, exactly
        while swaps < max_swaps:
            flat = int(coefficients.abs().argmax())
            i, j = divmod(flat, k)
            pivot = float(coefficients[i, j])
            if abs(pivot) <= 1.0 + tolerance:
                break
            u = coefficients[i].clone()
            u[j] -= 1.0
            coefficients -= torch.outer(coefficients[:, j], u) / pivot
            active[j] = i
            swaps += 1
        exact = torch.linalg.solve(rows[active].T, rows.T).T
        if float(exact.abs().max()) <= 1.0 + tolerance or swaps >= max_swaps:
            return active


@dataclass
class ElementDomain:
    """The domain of one element: the box [``low``, ``high``] [F]; the basis V [F, k] of the
    training features' span, the active set's coordinates in it A [k, k] and its inverse
    A⁻¹; the scale τ of the out-of-span part (0: V spans everything); how many training atoms
    it was fitted on and the ``active_rows`` (their indices among those atoms)."""

    low: torch.Tensor
    high: torch.Tensor
    basis: torch.Tensor
    active_set: torch.Tensor
    inverse: torch.Tensor
    residual_scale: float
    n_training: int
    active_rows: torch.Tensor

    @property
    def n_features(self) -> int:
        return int(self.low.shape[0])

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    def outside_box(self, features: torch.Tensor) -> torch.Tensor:
        """Boolean [n]: some feature of the row outside the box (or not finite)."""
        inside = (features >= self.low) & (features <= self.high)
        return ~inside.all(dim=1)

    def grade(self, features: torch.Tensor) -> torch.Tensor:
        """Extrapolation grade γ [n] of feature rows [n, F] (inf where a feature is not finite)."""
        projected = features @ self.basis
        gamma = (projected @ self.inverse).abs().amax(dim=1)
        if self.rank < self.n_features:
            residual = torch.linalg.vector_norm(features - projected @ self.basis.T, dim=1)
            gamma = torch.maximum(gamma, residual / self.residual_scale)
        finite = torch.isfinite(features).all(dim=1)
        return torch.where(finite, gamma, torch.full_like(gamma, float("inf")))

    def to_dict(self) -> dict:
        return {
            "low": self.low.clone(),
            "high": self.high.clone(),
            "basis": self.basis.clone(),
            "active_set": self.active_set.clone(),
            "inverse": self.inverse.clone(),
            "residual_scale": float(self.residual_scale),
            "n_training": int(self.n_training),
            "active_rows": self.active_rows.clone(),
        }

    @classmethod
    def from_dict(cls, values: dict) -> ElementDomain:
        return cls(
            **{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in values.items()}
        )


def fit_element(
    features: torch.Tensor,
    box_margin: float = BOX_MARGIN,
    maxvol_tolerance: float = MAXVOL_TOLERANCE,
    rank_tolerance: float = RANK_TOLERANCE,
) -> ElementDomain:
    """The domain of one element from its training atoms' features [n, F] (float64)."""
    features = features.to(torch.float64)
    lowest, highest = features.amin(dim=0), features.amax(dim=0)
    half = (box_margin * (highest - lowest)).clamp_min(BOX_FLOOR)
    _, singular, vh = torch.linalg.svd(features, full_matrices=False)
    rank = int((singular > rank_tolerance * singular[0]).sum()) if float(singular[0]) > 0 else 0
    if rank == 0:
        raise InputError("the training features of an element are all zero; no domain to fit")
    basis = vh[:rank].T.contiguous()  # [F, k]
    projected = features @ basis
    active_rows = maxvol(projected, maxvol_tolerance)
    active_set = projected[active_rows]
    residual_scale = 0.0
    if rank < features.shape[1]:
        residual = torch.linalg.vector_norm(features - projected @ basis.T, dim=1)
        residual_scale = float(residual.max())
        if rank == features.shape[0]:
            # Each training atom spans a direction of its own, so its residual is zero by
            # construction: measure instead how far each lies from the span of the others
            # (leave one out), 1/√((G⁻¹)_ii) with G = P Pᵀ the Gram matrix.
            gram_inverse = torch.linalg.inv(projected @ projected.T)
            leave_one_out = gram_inverse.diagonal().clamp_min(1e-300).rsqrt()
            residual_scale = max(residual_scale, float(leave_one_out.max()))
        floor = RESIDUAL_FLOOR * float(torch.linalg.vector_norm(features, dim=1).max())
        residual_scale = max(residual_scale, floor)
    return ElementDomain(
        low=lowest - half,
        high=highest + half,
        basis=basis,
        active_set=active_set,
        inverse=torch.linalg.inv(active_set),
        residual_scale=residual_scale,
        n_training=int(features.shape[0]),
        active_rows=active_rows,
    )


class LatentDomain:
    """Per-element NID of one model's latent features, and the indicators built on it.

    ``elements`` maps atomic numbers to their :class:`ElementDomain`; ``grade_threshold`` is the
    γ above which the grade indicator flags an atom; ``model`` is the fingerprint of the model
    whose features were fitted (None: not recorded).
    """

    def __init__(
        self,
        elements: dict[int, ElementDomain],
        grade_threshold: float = GRADE_THRESHOLD,
        box_margin: float = BOX_MARGIN,
        model: str | None = None,
    ):
        if not elements:
            raise InputError("a latent domain needs at least one element")
        if not grade_threshold >= 1.0:
            raise InputError(f"grade_threshold must be at least 1, got {grade_threshold}")
        sizes = {d.n_features for d in elements.values()}
        if len(sizes) != 1:
            raise InputError(f"the elements' domains have different feature sizes {sorted(sizes)}")
        self.elements = dict(sorted(elements.items()))
        self.grade_threshold = float(grade_threshold)
        self.box_margin = float(box_margin)
        self.model = model
        self.n_features = sizes.pop()

    @classmethod
    def fit(
        cls,
        features: torch.Tensor,
        numbers: torch.Tensor,
        grade_threshold: float = GRADE_THRESHOLD,
        box_margin: float = BOX_MARGIN,
        maxvol_tolerance: float = MAXVOL_TOLERANCE,
        rank_tolerance: float = RANK_TOLERANCE,
        model: str | None = None,
    ) -> LatentDomain:
        """Fit every element present in ``numbers`` [n] from training features [n, F]."""
        if features.dim() != 2 or features.shape[0] != numbers.shape[0]:
            raise InputError(
                f"features {tuple(features.shape)} and numbers {tuple(numbers.shape)} do not match"
            )
        if not bool(torch.isfinite(features).all()):
            raise InputError("the training features contain non-finite numbers")
        if not box_margin >= 0:
            raise InputError(f"box_margin must be ≥ 0, got {box_margin}")
        if not maxvol_tolerance > 0:
            raise InputError(f"maxvol_tolerance must be > 0, got {maxvol_tolerance}")
        elements = {
            int(z): fit_element(
                features[numbers == z], box_margin, maxvol_tolerance, rank_tolerance
            )
            for z in torch.unique(numbers).tolist()
        }
        return cls(elements, grade_threshold, box_margin, model)

    def _per_element(self, features: torch.Tensor, numbers: torch.Tensor, method: str):
        if features.dim() != 2 or features.shape[1] != self.n_features:
            raise InputError(
                f"features of shape {tuple(features.shape)}; this domain was fitted on "
                f"{self.n_features} features per atom (another model?)"
            )
        features = features.to(torch.float64)
        for z in torch.unique(numbers).tolist():
            if z not in self.elements:
                known = ", ".join(chemical_symbols[e] for e in self.elements)
                raise InputError(
                    f"the latent domain has no training atoms of {chemical_symbols[z]} "
                    f"(it knows {known})"
                )
            mask = numbers == z
            yield mask, getattr(self.elements[z], method)(features[mask])

    def grade(self, features: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        """Extrapolation grade γ [n] (float64; inf where a feature is not finite)."""
        out = torch.empty(features.shape[0], dtype=torch.float64)
        for mask, value in self._per_element(features, numbers, "grade"):
            out[mask] = value
        return out

    def outside_box(self, features: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        """Box indicator [n] (bool): some feature outside its widened training range."""
        out = torch.empty(features.shape[0], dtype=torch.bool)
        for mask, value in self._per_element(features, numbers, "outside_box"):
            out[mask] = value
        return out

    def indicator(
        self, features: torch.Tensor, numbers: torch.Tensor, method: str = "grade"
    ) -> torch.Tensor:
        """H [n] (bool) by ``method``: ``grade`` (γ > grade_threshold) or ``box``."""
        if method == "grade":
            return self.grade(features, numbers) > self.grade_threshold
        if method == "box":
            return self.outside_box(features, numbers)
        raise InputError(f"unknown indicator {method!r}; choose from {list(INDICATORS)}")

    def check_model(self, potential: Potential) -> None:
        """Refuse a model other than the one this domain was fitted on (when recorded)."""
        if self.model is not None and model_fingerprint(potential) != self.model:
            raise InputError(
                "this latent domain was fitted on the features of another model "
                f"(fingerprint {self.model})"
            )

    def state_dict(self) -> dict:
        """A plain dictionary (tensors, numbers, strings) for ``torch.save`` or metadata."""
        return {
            "format": FORMAT,
            "grade_threshold": self.grade_threshold,
            "box_margin": self.box_margin,
            "model": self.model,
            "elements": {z: d.to_dict() for z, d in self.elements.items()},
        }

    @classmethod
    def from_state_dict(cls, values: dict) -> LatentDomain:
        """The inverse of :meth:`state_dict`."""
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            raise InputError(f"not a stablemd latent domain (expected format {FORMAT})")
        try:
            elements = {int(z): ElementDomain.from_dict(d) for z, d in values["elements"].items()}
            settings = values["grade_threshold"], values["box_margin"], values["model"]
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"a damaged stablemd latent domain ({exc!r})") from None
        return cls(elements, *settings)


def latent_features(
    potential: Potential, frames: Sequence[Atoms], batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's per-atom latent features [n_atoms, F] (float64) and atomic numbers [n_atoms]
    of every atom of ``frames``, in order, computed ``batch_size`` frames at a time."""
    if len(frames) == 0:
        raise InputError("no frames to compute latent features of")
    dtype = next(potential.parameters()).dtype
    features, numbers = [], []
    for start in range(0, len(frames), batch_size):
        batch = Batch.from_atoms(frames[start : start + batch_size], dtype=dtype)
        with torch.no_grad():
            out = predict(potential, batch, ("energy", "features"))
        features.append(out["features"].detach().to(torch.float64))
        numbers.append(batch.numbers)
    return torch.cat(features), torch.cat(numbers)


def fit_latent_domain(
    potential: Potential,
    frames: Sequence[Atoms],
    grade_threshold: float = GRADE_THRESHOLD,
    box_margin: float = BOX_MARGIN,
    maxvol_tolerance: float = MAXVOL_TOLERANCE,
    rank_tolerance: float = RANK_TOLERANCE,
) -> LatentDomain:
    """The NID of ``potential`` fitted on its training ``frames``, tied to its fingerprint."""
    features, numbers = latent_features(potential, frames)
    return LatentDomain.fit(
        features, numbers, grade_threshold, box_margin, maxvol_tolerance, rank_tolerance,
        model=model_fingerprint(potential),
    )  # fmt: skip


def stored_latent_domain(potential: Potential) -> LatentDomain | None:
    """The latent domain attached to the model (None: none); refuses one fitted for other
    weights. The critical levels beside it belong to the early warning
    (:func:`stablemd.diagnose.early_warning.model_file.stored_early_warning`)."""
    values = attachment(potential, ATTACHMENT)
    if values is None:
        return None
    if not isinstance(values, dict) or "domain" not in values:
        raise InputError("a damaged early-warning attachment (no latent domain)")
    return LatentDomain.from_state_dict(values["domain"])
