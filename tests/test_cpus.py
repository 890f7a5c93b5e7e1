"""
The default worker count: the affinity mask and the control group's CPU
quota (cgroup v2 C{cpu.max}, v1 C{cpu.cfs_quota_us}), rounded up, at least 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from twisted_cluster.cpus import cpuQuota, usableCPUs

from .support import APPS, ROOT, waitFor


def fakeSystem(
    tmp_path: Path, selfCgroup: str, files: dict[str, str]
) -> tuple[Path, Path]:
    """
    A cgroup root holding C{files} (paths relative to it), and a
    C{/proc/self/cgroup} saying C{selfCgroup}.
    """
    root = tmp_path / "cgroup"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "self-cgroup"
    proc.write_text(selfCgroup)
    return root, proc


def count(root: Path, proc: Path, affinity: int = 8) -> int:
    return usableCPUs(root, proc, affinity=lambda: affinity)


def test_v2NoLimit(tmp_path: Path) -> None:
    root, proc = fakeSystem(tmp_path, "0::/\n", {"cpu.max": "max 100000\n"})
    assert cpuQuota(root, proc) is None
    assert count(root, proc) == 8


def test_v2RoundsUp(tmp_path: Path) -> None:
    root, proc = fakeSystem(tmp_path, "0::/\n", {"cpu.max": "150000 100000\n"})
    assert cpuQuota(root, proc) == 1.5
    assert count(root, proc) == 2


def test_v2NestedGroup(tmp_path: Path) -> None:
    """
    The process's own group is found from /proc/self/cgroup; a parent's
    tighter quota limits it too.
    """
    root, proc = fakeSystem(
        tmp_path,
        "0::/system.slice/app.service\n",
        {
            "system.slice/app.service/cpu.max": "400000 100000\n",
            "system.slice/cpu.max": "300000 100000\n",
            "other.slice/cpu.max": "100000 100000\n",
        },
    )
    assert cpuQuota(root, proc) == 3.0
    assert count(root, proc) == 3


def test_v1Quota(tmp_path: Path) -> None:
    root, proc = fakeSystem(
        tmp_path,
        "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n",
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cpuQuota(root, proc) == 0.5
    assert count(root, proc) == 1


def test_v1NoQuota(tmp_path: Path) -> None:
    root, proc = fakeSystem(
        tmp_path,
        "1:cpu:/\n",
        {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
    )
    assert cpuQuota(root, proc) is None
    assert count(root, proc, affinity=3) == 3


def test_v1ContainerMount(tmp_path: Path) -> None:
    """
    Without a cgroup namespace a container's /proc/self/cgroup names the
    host's path, while its mount is its own group: the mount's root counts.
    """
    root, proc = fakeSystem(
        tmp_path,
        "2:cpu,cpuacct:/kubepods/pod1/c2\n",
        {
            "cpu/cpu.cfs_quota_us": "200000\n",
            "cpu/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cpuQuota(root, proc) == 2.0


def test_affinityWins(tmp_path: Path) -> None:
    root, proc = fakeSystem(tmp_path, "0::/\n", {"cpu.max": "800000 100000\n"})
    assert count(root, proc, affinity=2) == 2


def test_atLeastOne(tmp_path: Path) -> None:
    root, proc = fakeSystem(tmp_path, "0::/\n", {"cpu.max": "1000 100000\n"})
    assert count(root, proc) == 1
    assert usableCPUs(root, proc, affinity=lambda: 0) == 1


@pytest.mark.parametrize(
    "text",
    ["", "max", "lots 100000", "150000 0", "150000 100000 7", "-5 100000", "\xff"],
)
def test_malformedIgnored(tmp_path: Path, text: str) -> None:
    root, proc = fakeSystem(tmp_path, "0::/\n", {"cpu.max": text})
    assert count(root, proc) == 8


def test_unreadableIgnored(tmp_path: Path) -> None:
    root, proc = fakeSystem(tmp_path, "0::/a\n", {})
    (root / "a").mkdir()
    (root / "a" / "cpu.max").mkdir()  # reading a directory fails
    assert count(root, proc) == 8
    assert count(root, tmp_path / "no-such-file") == 8
    garbage = tmp_path / "garbage"
    garbage.write_text("nonsense\n::\n7:cpu\n")
    assert count(root, garbage) == 8


# A real control group: a process in it computes `twistd cluster`'s default.

DEFAULT_WORKERS = """
import os, sys
with open(sys.argv[1], "w") as procs:
    procs.write(str(os.getpid()))
from twisted_cluster.options import Options
options = Options()
options.parseOptions(["--app", sys.argv[2]])
print(options["workers"])
"""


def defaultWorkersIn(procs: Path) -> int:
    """
    The default worker count of a process that moved itself into the
    control group whose C{cgroup.procs} is C{procs}.
    """
    result = subprocess.run(
        [sys.executable, "-c", DEFAULT_WORKERS, str(procs), str(APPS / "ping.tac")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def removeGroup(group: Path) -> None:
    def removed() -> bool:
        try:
            group.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False  # Its last process may still be leaving.
        return True

    waitFor(removed, timeout=10, what=f"{group} to be removable")


def needsTwoCPUs() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one usable CPU: a quota under one could not be told apart")


@pytest.mark.timeout(60)
def test_realCgroupV2() -> None:
    """
    A process in a cgroup v2 group with C{cpu.max} "50000 100000" (half a
    CPU) defaults to one worker.
    """
    root = Path("/sys/fs/cgroup")
    if not (root / "cgroup.controllers").exists():
        pytest.skip(
            f"{root} is not a cgroup2 mount (no cgroup.controllers): this "
            "machine has cgroup v1 or a hybrid layout"
        )
    if os.geteuid() != 0 or not os.access(root, os.W_OK):
        pytest.skip(f"{root} is not writable here (needs root)")
    if "cpu" not in (root / "cgroup.controllers").read_text().split():
        pytest.skip(f"the cpu controller is not available in {root}")
    needsTwoCPUs()
    try:
        (root / "cgroup.subtree_control").write_text("+cpu")
    except OSError as e:
        pytest.skip(f"cannot enable the cpu controller in {root}: {e}")
    group = root / f"twisted-cluster-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "cpu.max").write_text("50000 100000")
        assert defaultWorkersIn(group / "cgroup.procs") == 1
    finally:
        removeGroup(group)


@pytest.mark.timeout(60)
def test_realCgroupV1() -> None:
    """
    A process in a cgroup v1 cpu group with C{cpu.cfs_quota_us} 50000 per
    100000 (half a CPU) defaults to one worker.
    """
    mount = Path("/sys/fs/cgroup/cpu")
    if not (mount / "cpu.cfs_quota_us").exists():
        pytest.skip(f"no cgroup v1 cpu hierarchy at {mount}")
    if os.geteuid() != 0 or not os.access(mount, os.W_OK):
        pytest.skip(f"{mount} is not writable here (needs root)")
    needsTwoCPUs()
    group = mount / f"twisted-cluster-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text("50000")
        assert defaultWorkersIn(group / "cgroup.procs") == 1
    finally:
        removeGroup(group)
