"""
What a process uses, read from C{/proc} (Linux): CPU time and resident
memory.  Elsewhere each reads C{None}.
"""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpuSeconds(pid: int) -> float | None:
    """
    The user and system CPU seconds process C{pid} has used, or C{None}.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            # After the command name, which may hold spaces and parentheses.
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, ValueError, IndexError):
        return None


def residentBytes(pid: int) -> int | None:
    """
    The resident set of process C{pid} in bytes, or C{None}.
    """
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def residentMegabytes(pid: int) -> float | None:
    """
    The resident set of process C{pid} in megabytes, or C{None}.
    """
    rss = residentBytes(pid)
    return None if rss is None else rss / (1024 * 1024)
