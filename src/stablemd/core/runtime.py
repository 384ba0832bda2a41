"""Process-wide settings that make large batches faster on CPUs: the memory allocator, and a
thread count that follows the load of the machine.

glibc returns every freed block above 128 KiB to the kernel and maps fresh pages for the next
one; a batched force call allocates and frees hundreds of such edge tensors, so most of its time
went to page faults (system time). Raising the mmap and trim thresholds keeps that memory in
the process: 64 aspirin replicas, PaiNN, energy + forces went from about 400 to 260 ms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from pathlib import Path

import torch

#: mallopt parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_ONE_GIB = 1 << 30


def tune_memory_allocator() -> bool:
    """Keep freed memory for reuse (glibc only); returns whether the settings were applied."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return all(
        mallopt(option, value) == 1
        for option, value in (
            (_M_MMAP_THRESHOLD, _ONE_GIB),
            (_M_TRIM_THRESHOLD, _ONE_GIB),
            (_M_TOP_PAD, 256 << 20),
        )
    )


class ThreadBudget:
    """Torch (and numba) threads = the cores that other processes leave free, re-measured
    every ``interval_s`` seconds of wall time.

    Two torch threads on two cores stall when another job holds one core: each parallel region
    waits at its barrier for the thread that lost its core (measured: the quickstart took 24
    instead of 6 minutes). Busy time of the processors this process may run on comes from
    ``/proc/stat`` (user, nice, system, irq, softirq, steal); this process's own share from
    ``/proc/self/stat``; a core counts as taken when others use more than half of it.
    ``max_threads`` (default: the processors we may run on) is never exceeded: a user's
    ``OMP_NUM_THREADS`` is a limit, not a first guess. Off Linux there is no such accounting:
    the count is never changed.
    """

    def __init__(self, interval_s: float = 10.0, max_threads: int | None = None):
        self.interval_s = float(interval_s)
        affinity = getattr(os, "sched_getaffinity", None)  # Linux only
        self.cpus = sorted(affinity(0)) if affinity else list(range(os.cpu_count() or 1))
        self.max_threads = len(self.cpus) if max_threads is None else max(1, max_threads)
        self.last = None  # stays None off Linux: no accounting, the count is left alone
        if affinity is not None:
            self.ticks_per_s = os.sysconf("SC_CLK_TCK")
            self.last = self._sample()

    def _clock(self) -> float:
        """Wall time (s) on the clock of :meth:`_sample`."""
        return time.monotonic()

    def _sample(self) -> tuple[float, float, float] | None:
        """(wall s, busy s of our processors, s used by this process), or None off Linux."""
        try:
            lines = Path("/proc/stat").read_text().splitlines()
            own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        busy = 0
        wanted = {f"cpu{c}" for c in self.cpus}
        for line in lines:
            fields = line.split()
            if fields and fields[0] in wanted:
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
                busy += user + nice + system + irq + softirq + steal
        mine = int(own[11]) + int(own[12])  # utime, stime of all threads
        return self._clock(), busy / self.ticks_per_s, mine / self.ticks_per_s

    def threads(self) -> int | None:
        """The thread count for now, or None while the interval has not passed. Called every
        MD step, so before the interval has passed it reads only the clock (a read of
        ``/proc`` costs about 70 µs)."""
        if self.last is None or self._clock() - self.last[0] < self.interval_s:
            return None
        now = self._sample()
        if now is None or now[0] <= self.last[0]:
            return None
        elapsed = now[0] - self.last[0]
        others = max(0.0, (now[1] - self.last[1]) - (now[2] - self.last[2])) / elapsed
        self.last = now
        return max(1, min(self.max_threads, len(self.cpus) - round(others)))


_budget: ThreadBudget | None = None


def adapt_threads_to_load(interval_s: float = 10.0, first_look_s: float = 0.3) -> None:
    """Make :func:`adapt_threads` follow the load of the machine (the command line does): set
    the thread count now from ``first_look_s`` of measurement, then every ``interval_s``,
    never above torch's count at the call (``OMP_NUM_THREADS`` when set)."""
    global _budget
    _budget = ThreadBudget(first_look_s, max_threads=torch.get_num_threads())
    time.sleep(first_look_s)
    adapt_threads()
    _budget.interval_s = float(interval_s)


def adapt_threads() -> None:
    """Set the thread count to the free cores when adaptation is on and its interval has
    passed; cheap enough to call every MD step or training batch from the main thread (torch's
    thread count belongs to the thread that sets it)."""
    if _budget is None:
        return
    threads = _budget.threads()
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
