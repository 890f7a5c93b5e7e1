"""
How many CPUs this process may use: the affinity mask, and the CPU quota of
its control group (a container's C{--cpus}), whichever is less.

A quota is CPU time per period: 150 ms in every 100 ms is one and a half
CPUs, which rounds up to two workers.  cgroup v2 says it in C{cpu.max}
(C{"150000 100000"}, or C{"max 100000"} for none), v1 in
C{cpu.cfs_quota_us} and C{cpu.cfs_period_us} (a quota of -1 for none).
The process's group is named in C{/proc/self/cgroup}; a group's parents
limit it too, so each one up to the root is read, and the least wins.
Anything missing, unreadable or malformed is no limit: the count then
falls back to the affinity mask, never below one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def affinityCPUs() -> int:
    """
    How many CPUs the affinity mask lets this process run on.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def usableCPUs(
    cgroupRoot: Path = CGROUP_ROOT,
    selfCgroup: Path = SELF_CGROUP,
    affinity: Callable[[], int] = affinityCPUs,
) -> int:
    """
    How many CPUs this process may use: its affinity count, or its control
    group's CPU quota rounded up if that is less; at least 1.

    @param cgroupRoot: where the cgroup file systems are mounted.
    @param selfCgroup: this process's C{/proc/self/cgroup}.
    @param affinity: how many CPUs the affinity mask allows.
    """
    count = affinity()
    quota = cpuQuota(cgroupRoot, selfCgroup)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def cpuQuota(
    cgroupRoot: Path = CGROUP_ROOT, selfCgroup: Path = SELF_CGROUP
) -> float | None:
    """
    The CPU quota of this process's control group and its parents, in CPUs
    (C{1.5}), or C{None} if there is none (or none can be read).
    """
    limits = [
        limit
        for directory, read in _groups(cgroupRoot, selfCgroup)
        if (limit := read(directory)) is not None
    ]
    return min(limits, default=None)


def _groups(
    root: Path, selfCgroup: Path
) -> Iterator[tuple[Path, Callable[[Path], float | None]]]:
    """
    Each directory that may hold this process's CPU quota, from its own
    group up to the hierarchy's root, with the reader for its format.
    """
    try:
        lines = selfCgroup.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return
    for line in lines:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path.startswith("/"):
            continue  # Malformed.
        if number == "0" and controllers == "":
            mounts = [root]
            read = _readV2
        elif "cpu" in controllers.split(","):
            mounts = [root / controllers, root / "cpu"]
            read = _readV1
        else:
            continue
        for mount in dict.fromkeys(mounts):
            for group in _upToRoot(PurePosixPath(path)):
                yield mount.joinpath(*group.parts[1:]), read


def _upToRoot(path: PurePosixPath) -> Iterator[PurePosixPath]:
    yield path
    yield from path.parents


def _readV2(directory: Path) -> float | None:
    fields = _read(directory / "cpu.max").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _readV1(directory: Path) -> float | None:
    return _ratio(
        _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    )


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    if q <= 0 or p <= 0:
        return None  # -1: no quota.
    return q / p


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""
