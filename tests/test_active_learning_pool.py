"""The candidate pool: biased replicas, frames every k steps, the frame that passed the
threshold kept, the start never."""

from __future__ import annotations

import math

import torch
from md_support import single_thread  # noqa: F401 (fixture)
from test_models import ethanol, make_model, rattled
from test_uncertainty import fitted

from stablemd.explore.active_learning.pool import CandidateRecorder, Pool, run_pool
from stablemd.md.settings import MDSettings
from stablemd.md.starts import initial_state


def test_pool_keeps_frames_every_k_steps_and_the_one_past_the_threshold(single_thread):  # noqa: F811
    model = make_model("painn")
    uncertainty = fitted(model, projections=32)
    starts = [rattled(ethanol(), 40 + k) for k in range(3)]
    settings = MDSettings(replicas=3, temperature_K=600.0, timestep_fs=0.5, thermostat="langevin")
    every, steps = 7, 60
    # the largest u each replica reaches without a stop (every step kept); the threshold
    # between the smallest and the next of them stops two replicas and not the third
    free = run_pool(model, uncertainty, starts, settings, steps, 1, 0.25, None)
    reached = sorted(
        max(c.max_atomic_u for c in free.candidates if c.replica == k) for k in range(3)
    )
    threshold = 0.5 * (reached[0] + reached[1])
    pool = run_pool(model, uncertainty, starts, settings, steps, every, 0.25, threshold)
    step_fs = 0.5
    stopped = [k for k, reason in enumerate(pool.stopped_by) if reason == "uncertainty"]
    assert 0 < len(stopped) < 3, "the case needs replicas that stop and one that does not"
    for k in range(3):
        times = [c.time_fs for c in pool.candidates if c.replica == k]
        assert times and min(times) > 0  # never the start
        regular = [t for t in times if round(t / step_fs) % every == 0]
        if k in stopped:
            *earlier, last = [c for c in pool.candidates if c.replica == k]
            assert last.time_fs == pool.stopped_fs[k]
            assert last.max_atomic_u > threshold
            assert all(c.max_atomic_u <= threshold for c in earlier)
            assert len(regular) == math.floor(pool.stopped_fs[k] / step_fs / every)
        else:
            assert times == regular and len(times) == steps // every
    # the candidates carry the structures of their replicas
    for c in pool.candidates:
        assert (c.atoms.numbers == starts[0].numbers).all()
    again = Pool.from_dict(pool.to_dict())
    assert [c.time_fs for c in again.candidates] == [c.time_fs for c in pool.candidates]
    torch.testing.assert_close(
        torch.as_tensor(again.candidates[-1].atoms.positions),
        torch.as_tensor(pool.candidates[-1].atoms.positions),
    )


def test_a_non_finite_frame_is_never_a_candidate():
    """A replica whose positions or u turned non-finite at a kept step (the NonFinite criterion
    freezes it only after every monitor has seen that state) gives no candidate: NaN positions
    would go to the oracle, a NaN u into the selection."""
    state = initial_state([ethanol()], 3, 300.0, seed=0)
    state.step, state.time_fs = 10, 5.0
    u = torch.full((state.n_atoms,), 0.2, dtype=torch.float64)
    u[state.system_index == 2] = float("nan")
    state.outputs = {"atomic_uncertainty": u, "uncertainty": u.clone()}
    state.positions[state.system_index == 1] = float("inf")
    recorder = CandidateRecorder(every=5, threshold=1.0)
    recorder(state)
    assert [row["replica"] for row in recorder.rows] == [0]
