"""A costly refresh (reports, a figure) kept to a small share of the work it reports on."""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    """Calls ``refresh`` when due: ``min_interval_s`` and 10x its last duration have passed.

    A refresh whose cost grows with the work (sweep reports that read every cell, a run's
    accuracy figure) would otherwise cost more than the work itself; this way it stays
    under a tenth of it. ``force=True`` refreshes now (the end of the work).
    """

    def __init__(self, refresh: Callable[[], None], min_interval_s: float = 30.0) -> None:
        self.refresh = refresh
        self.min_interval_s = min_interval_s
        self.last_end = float("-inf")
        self.last_duration = 0.0

    def __call__(self, force: bool = False) -> None:
        """Refresh if due (or if ``force``)."""
        now = time.time()
        if not force and now - self.last_end < max(self.min_interval_s,
                                                   10 * self.last_duration):
            return
        self.refresh()
        self.last_end = time.time()
        self.last_duration = self.last_end - now
