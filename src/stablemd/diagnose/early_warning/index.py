"""The cumulative latent instability (CLI) index: accumulation of the indicator H along a
trajectory, its critical level and its saturation. Pure functions on tensors; times in ps.

Definitions (stablemd's, "CLI-inspired": the CLI paper publishes no formula):

- Per atom, C_i(t_k) = Σ_{m=1..k} H_i(t_m) (t_m − t_{m−1}), C_i(t_0) = 0: the time (ps) the
  atom spent flagged, a right Riemann sum of ∫₀ᵗ H_i dt' over the times H was evaluated.
- Per replica, CLI_r(t) = (1/N_r) Σ_{i∈r} C_i(t), in ps ("flagged atom-ps per atom"): the
  time integral of the fraction of the replica's atoms that are flagged. CLI_r(t)/t is the
  time-averaged flagged fraction (0 … 1), and a difference quotient of CLI over a window is the
  flagged fraction averaged over that window.
- Series of several replicas are [n_times, n_replicas]; a replica's series may end early (a
  frozen replica) and is then NaN after its last value. Any other non-finite value is refused.
- Critical level (:class:`CriticalLevel`): calibrated on known-good runs of length T_cal (MD of
  the reference method, or of the model from training frames, that did not fail): L = ``factor``
  × the ``quantile`` of their CLI at T_cal, at least ``floor_fraction`` × T_cal. A run is past
  it at time t when CLI_r(t) > L · max(1, t / T_cal): no more than the good runs accumulated by
  T_cal, and beyond T_cal no faster than their average rate (a saturating good run stays below
  this line).
- Saturation: the trailing rate over a window W, (CLI(t_end) − CLI(t_end − W)) / W (the flagged
  fraction over the last W), is at most max(``tolerance``, ``relative_tolerance`` × CLI(t_end) /
  t_end); a replica with less than W recorded is not judged saturated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stablemd.core.errors import InputError

#: Saturation: the trailing rate may be this fraction of the run's average rate.
RELATIVE_TOLERANCE = 0.1


def _times(times_ps) -> torch.Tensor:
    times = torch.as_tensor(times_ps, dtype=torch.float64)
    if times.dim() != 1 or len(times) == 0:
        raise InputError("times must be a non-empty 1-d sequence (ps)")
    if not bool(torch.isfinite(times).all()):
        raise InputError("times contain non-finite numbers")
    if len(times) > 1 and not bool((times.diff() > 0).all()):
        raise InputError("times must increase strictly")
    return times


def _series(series, n_times: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Series [n_times, n_replicas] (a 1-d one is one replica) and each replica's number of
    recorded values (a finite prefix; NaN after it)."""
    values = torch.as_tensor(series, dtype=torch.float64)
    if values.dim() == 1:
        values = values[:, None]
    if values.dim() != 2 or values.shape[0] != n_times:
        raise InputError(f"series of shape {tuple(values.shape)} for {n_times} times")
    finite = torch.isfinite(values)
    lengths = finite.sum(dim=0)
    prefix = torch.arange(n_times)[:, None] < lengths[None, :]
    if not bool((finite == prefix).all()):
        raise InputError("series contain non-finite values other than NaN after a replica's end")
    if bool((lengths == 0).any()):
        raise InputError("a replica has no recorded value")
    return values, lengths


def cumulative_index(flags, times_ps) -> torch.Tensor:
    """∫₀ᵗ H dt' as a right Riemann sum [n_times, ...] (ps) of ``flags`` [n_times, ...]
    (H ∈ {0, 1} per atom, or flagged fractions in [0, 1] per replica) at ``times_ps``."""
    times = _times(times_ps)
    values = torch.as_tensor(flags, dtype=torch.float64)
    if values.shape[:1] != times.shape:
        raise InputError(f"flags of shape {tuple(values.shape)} for {len(times)} times")
    if not bool(((values >= 0) & (values <= 1)).all()):
        raise InputError("flags must lie in [0, 1] (and be finite)")
    steps = torch.cat([times.new_zeros(1), times.diff()])
    steps = steps.view(-1, *([1] * (values.dim() - 1)))
    return torch.cumsum(values * steps, dim=0)


def replica_index(per_atom: torch.Tensor, system_index: torch.Tensor, n_systems: int):
    """CLI_r = mean of the per-atom index [..., n_atoms] over each replica's atoms
    → [..., n_systems]."""
    counts = torch.bincount(system_index, minlength=n_systems).to(torch.float64)
    if bool((counts == 0).any()):
        raise InputError("a replica has no atoms")
    sums = per_atom.new_zeros((*per_atom.shape[:-1], n_systems)).index_add(
        -1, system_index, per_atom
    )
    return sums / counts


@dataclass(frozen=True)
class CriticalLevel:
    """The calibrated level ``level_ps`` of CLI reached by known-good runs of length
    ``calibration_ps``; :meth:`at` extends it beyond that length at their average rate."""

    level_ps: float
    calibration_ps: float

    def at(self, times_ps) -> torch.Tensor:
        """L · max(1, t / T_cal) (ps) at each time."""
        times = torch.as_tensor(times_ps, dtype=torch.float64)
        return self.level_ps * torch.clamp(times / self.calibration_ps, min=1.0)


def calibrate_critical_level(
    times_ps, cli, quantile: float = 1.0, factor: float = 1.0, floor_fraction: float = 0.0
) -> CriticalLevel:
    """The critical level from CLI series [n_times, n_replicas] of known-good runs: ``factor``
    × the ``quantile`` over replicas of CLI at the last time, and at least ``floor_fraction`` ×
    their length (a flagged fraction that good runs may have stayed below: without it, runs that
    never flag give a level of 0, which the first flagged atom passes). Every replica must have
    run to the end (one that stopped early was not a good run)."""
    times = _times(times_ps)
    values, lengths = _series(cli, len(times))
    if not 0 <= quantile <= 1:
        raise InputError(f"quantile must be within [0, 1], got {quantile}")
    if not factor > 0:
        raise InputError(f"factor must be positive, got {factor}")
    if not 0 <= floor_fraction <= 1:
        raise InputError(f"floor_fraction must be within [0, 1], got {floor_fraction}")
    if bool((lengths < len(times)).any()):
        raise InputError("a calibration replica stopped early: calibrate on runs that did not fail")
    if not float(times[-1]) > 0:
        raise InputError("the calibration runs need a positive length")
    level = factor * float(torch.quantile(values[-1], quantile))
    length = float(times[-1])
    return CriticalLevel(level_ps=max(level, floor_fraction * length), calibration_ps=length)


def first_crossing(times_ps, cli, critical: CriticalLevel) -> torch.Tensor:
    """Per replica [n_replicas] the first time (ps) at which CLI exceeds the critical level
    (NaN: never, within its recorded series)."""
    times = _times(times_ps)
    values, _ = _series(cli, len(times))
    above = values > critical.at(times)[:, None]  # NaN compares False
    first = torch.where(above.any(dim=0), above.to(torch.int8).argmax(dim=0), -1)
    out = torch.full((values.shape[1],), float("nan"), dtype=torch.float64)
    crossed = first >= 0
    out[crossed] = times[first[crossed]]
    return out


def lead_times(crossing_ps, failure_ps) -> torch.Tensor:
    """Failure time − crossing time (ps) per replica; NaN where either never happened (a
    negative lead: the index crossed only after the failure)."""
    crossing = torch.as_tensor(crossing_ps, dtype=torch.float64)
    failure = torch.as_tensor(failure_ps, dtype=torch.float64)
    return failure - crossing


def trailing_rate(times_ps, cli, window_ps: float) -> torch.Tensor:
    """Per replica [n_replicas] (CLI(t_end) − CLI(t_end − W)) / W, the flagged fraction over
    the last ``window_ps`` of its series (CLI interpolated linearly between times); over the
    whole series when it is shorter than W (0 for a single recorded value)."""
    times = _times(times_ps)
    values, lengths = _series(cli, len(times))
    if not window_ps > 0:
        raise InputError(f"window_ps must be positive, got {window_ps}")
    rates = torch.zeros(values.shape[1], dtype=torch.float64)
    for r, n in enumerate(lengths.tolist()):
        t, c = times[:n].numpy(), values[:n, r].numpy()
        start = max(t[-1] - window_ps, t[0])
        if t[-1] > start:
            rates[r] = (c[-1] - np.interp(start, t, c)) / (t[-1] - start)
    return rates


def is_saturated(
    times_ps,
    cli,
    window_ps: float,
    tolerance: float = 0.0,
    relative_tolerance: float = RELATIVE_TOLERANCE,
) -> torch.Tensor:
    """Boolean per replica: its trailing rate over ``window_ps`` is at most
    max(``tolerance``, ``relative_tolerance`` × CLI(t_end) / t_end) and its series covers at
    least ``window_ps``."""
    times = _times(times_ps)
    values, lengths = _series(cli, len(times))
    if tolerance < 0 or relative_tolerance < 0:
        raise InputError("saturation tolerances must be ≥ 0")
    rates = trailing_rate(times, values, window_ps)
    end = times[lengths - 1]
    last = values.gather(0, (lengths - 1)[None, :])[0]
    average = torch.where(end > 0, last / end.clamp_min(1e-300), torch.zeros_like(last))
    covered = end - times[0] >= window_ps
    return covered & (rates <= torch.clamp(relative_tolerance * average, min=tolerance))
