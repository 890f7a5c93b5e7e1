"""
A worker that starts a Python child process which imports the cluster
module, and writes to OUT_FILE what the child said (or its error) and what
the worker itself knows.
"""

import json
import os
import subprocess
import sys

from twisted.application import service

from twisted_cluster import cluster


class RunChild(service.Service):
    def startService(self):
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import os; from twisted_cluster import cluster; "
                "print(cluster.isMaster, 'TWISTED_CLUSTER_WORKER_ID' in os.environ)",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        report = {
            "child": child.stdout.strip(),
            "childError": child.stderr.strip().splitlines()[-1:],
            "workerId": cluster.worker.id,
            "isWorker": cluster.isWorker,
        }
        path = os.environ["OUT_FILE"] + f".{os.getpid()}"
        with open(path + ".tmp", "w") as f:
            json.dump(report, f)
        os.rename(path + ".tmp", path)


application = service.Application("child")
RunChild().setServiceParent(application)
