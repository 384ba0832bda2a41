"""Work that may run at most once per interval of wall time, such as redrawing a plot.

Drawing a two-panel matplotlib figure takes about a second on one core (the tick labels'
layout dominates), as long as a whole epoch of a small training run: redrawn every epoch, the
learning curve made most of the quickstart's training time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Wall time between redraws of a long run's plot (s); runs draw it once more at the end.
PLOT_EVERY_S = 30.0


class Throttle:
    """Calls ``action`` when called at least ``seconds`` of wall time after its last call (the
    first call runs it); :meth:`flush` runs it now."""

    def __init__(self, action: Callable[[], None], seconds: float):
        self.action = action
        self.seconds = float(seconds)
        self.last: float | None = None

    def __call__(self) -> None:
        if self.last is None or time.perf_counter() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        self.action()
        self.last = time.perf_counter()
