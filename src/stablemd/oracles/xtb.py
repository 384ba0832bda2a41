"""GFN2-xTB from tblite, run on a fixed number of OpenMP threads.

tblite parallelises with OpenMP. For molecules of a few dozen atoms two threads gain nothing,
and on a busy 2-core machine the spinning threads make a single point 10–200× slower
(measured for ethanol: 4 ms on one thread, 40–900 ms on two while another process ran).
The thread count is set only around each calculation and restored afterwards, because the
OpenMP runtime (libgomp) is shared with torch.
"""

from __future__ import annotations

import ctypes
from contextlib import contextmanager

from tblite.ase import TBLite


def _libgomp():
    try:
        return ctypes.CDLL("libgomp.so.1")
    except OSError:  # another OpenMP runtime: leave the thread count alone
        return None


_GOMP = _libgomp()


@contextmanager
def omp_threads(n: int | None):
    """Run the block with ``n`` OpenMP threads (None: unchanged), then restore the old count."""
    if _GOMP is None or n is None:
        yield
        return
    old = _GOMP.omp_get_max_threads()
    _GOMP.omp_set_num_threads(int(n))
    try:
        yield
    finally:
        _GOMP.omp_set_num_threads(old)


class XTBCalculator(TBLite):
    """tblite's ASE calculator (GFN2-xTB by default) computing on ``threads`` OpenMP threads."""

    def __init__(self, threads: int | None = 1, **kwargs):
        self.threads = threads
        super().__init__(**kwargs)

    def calculate(self, *args, **kwargs):
        with omp_threads(self.threads):
            super().calculate(*args, **kwargs)

    def forget_guess(self) -> None:
        """Start the next SCF from tblite's initial guess rather than from the last solution, so
        that its result depends on the positions only (not on the calculations before)."""
        self._res = None
