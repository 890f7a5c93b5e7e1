"""
Each worker pings the master at start-up and writes the answer it gets into
REPORT_DIR.
"""

import json
import os

from twisted.application import service

from twisted_cluster import cluster


def answered(message):
    name = os.path.join(os.environ["REPORT_DIR"], f"pong-{cluster.worker.id}")
    with open(name, "w") as f:
        json.dump(message, f)


cluster.worker.on("message", answered)
cluster.worker.send({"ping": cluster.worker.id})
application = service.Application("ping")
