"""
Importing the cluster module makes nothing: no master, no thread, no
descriptor, not even in a process that says it is a worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, os, sys, threading
before = sorted(os.listdir("/proc/self/fd"))
import twisted_cluster.cluster as cluster
after = sorted(os.listdir("/proc/self/fd"))
print(json.dumps({
    "threads": threading.active_count(),
    "descriptors": [before, after],
    "master": cluster._master is not None,
    "reactor": "twisted.internet.reactor" in sys.modules,
}))
"""


@pytest.mark.parametrize("asWorker", [False, True])
def test_importMakesNothing(asWorker: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWISTED_CLUSTER")}
    if asWorker:
        env["TWISTED_CLUSTER_WORKER_ID"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["threads"] == 1
    before, after = seen["descriptors"]
    assert after == before
    assert not seen["master"] and not seen["reactor"]
