"""
When to restart a worker that died: exponential backoff with jitter.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RestartPolicy:
    """
    A worker that dies after staying up for C{stableAfter} seconds is
    replaced at once.  Each further quick death of its replacements doubles
    the delay (from C{initialDelay}, up to C{maxDelay}), give or take
    C{jitter} of it, so that workers failing together do not restart in step.

    @ivar maxBootFailures: how many times in a row a replacement may fail to
        start before the master gives up.
    """

    initialDelay: float = 0.1
    maxDelay: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    stableAfter: float = 10.0
    maxBootFailures: int = 5
    random: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, failures: int) -> float:
        """
        Seconds to wait before the next start, after C{failures} quick
        deaths in a row (the first death of a stable worker is not one).
        """
        if failures <= 0:
            return 0.0
        base = min(self.maxDelay, self.initialDelay * self.factor ** (failures - 1))
        return jittered(base, self.jitter, self.random)

    def failuresAfter(self, failures: int, uptime: float | None) -> int:
        """
        The count of quick deaths in a row once a worker with C{uptime}
        seconds up (C{None}: it never came up) has died.
        """
        if uptime is not None and uptime >= self.stableAfter:
            return 0
        return failures + 1


def jittered(value: float, fraction: float, random: Callable[[], float]) -> float:
    """
    C{value} moved up or down by up to C{fraction} of it, evenly spread
    (C{random} draws from [0, 1)): so that workers started together do not
    restart or recycle together.
    """
    return value * (1 + fraction * (2 * random() - 1))
