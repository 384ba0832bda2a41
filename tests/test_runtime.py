"""The thread budget: cores that other processes leave free, from CPU accounting."""

from __future__ import annotations

import time

import pytest

from stablemd.core.runtime import ThreadBudget


class Scripted(ThreadBudget):
    """A budget on two processors reading scripted (wall s, busy s, own s) samples."""

    def __init__(self, samples):
        self.samples = list(samples)
        self.interval_s = 10.0
        self.cpus = [0, 1]
        self.max_threads = 2
        self.now = None  # the clock; None: the time of the next sample
        self.last = self._sample() if self.samples else None

    def _clock(self):
        return self.samples[0][0] if self.now is None else self.now

    def _sample(self):
        return self.samples.pop(0)


@pytest.mark.parametrize(
    ("busy_s", "own_s", "expected"),
    [
        (20.0, 20.0, 2),  # both cores busy, all of it ours: keep both
        (19.0, 10.0, 1),  # another process holds 0.9 of a core
        (12.0, 10.0, 2),  # others use 0.2 of a core: noise
        (40.0, 0.0, 1),  # others hold both cores: still one thread
    ],
)
def test_threads_follow_what_other_processes_use(busy_s, own_s, expected):
    budget = Scripted([(0.0, 0.0, 0.0), (10.0, busy_s, own_s)])
    assert budget.threads() == expected


def test_never_more_threads_than_the_limit_asked_for():
    budget = Scripted([(0.0, 0.0, 0.0), (10.0, 10.0, 10.0)])  # an idle machine
    budget.max_threads = 1  # OMP_NUM_THREADS=1
    assert budget.threads() == 1


def test_the_command_line_keeps_a_one_thread_limit(monkeypatch):
    import torch

    from stablemd.core import runtime

    idle = lambda self: (time.monotonic(), 0.0, 0.0)  # noqa: E731 (no process uses a core)
    monkeypatch.setattr(runtime.ThreadBudget, "_sample", idle)
    monkeypatch.setattr(runtime, "_budget", None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runtime.adapt_threads_to_load(first_look_s=0.0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_no_new_count_before_the_interval_has_passed():
    budget = Scripted([(0.0, 0.0, 0.0), (10.0, 19.0, 10.0)])
    budget.now = 5.0
    assert budget.threads() is None
    budget.now = 10.0
    assert budget.threads() == 1


def test_reads_nothing_before_the_interval_has_passed():
    budget = Scripted([(0.0, 0.0, 0.0), (5.0, 10.0, 0.0)])
    budget._sample = None  # reading a sample now would fail
    assert budget.threads() is None


def test_reads_this_machine():
    budget = ThreadBudget(interval_s=0.0)
    assert budget.last is not None
    assert 1 <= budget.threads() <= len(budget.cpus)


def test_throttle_runs_once_per_interval_and_on_flush(monkeypatch):
    from stablemd.core import throttle

    # the wall clock as the throttle reads it: after each run, and at each later call
    clock = iter([0.0, 0.0, 10.0, 29.0, 31.0, 31.0, 32.0])
    monkeypatch.setattr(throttle.time, "perf_counter", lambda: next(clock))
    calls = []
    plot = throttle.Throttle(lambda: calls.append(1), seconds=30.0)
    plot()  # the first call runs (at 0 s)
    plot()  # 0 s later: skipped
    plot()  # 10 s: skipped
    plot()  # 29 s: skipped
    plot()  # 31 s: runs
    plot.flush()  # runs regardless
    assert len(calls) == 3


def test_without_linux_accounting_the_count_is_left_alone(monkeypatch):
    import os

    monkeypatch.delattr(os, "sched_getaffinity")  # as on macOS and Windows
    budget = ThreadBudget(interval_s=0.0)
    assert budget.threads() is None
