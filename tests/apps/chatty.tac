"""
Each worker logs a line and a failure when its app starts, and writes its
own id, slot and pid into REPORT_DIR (for the log and process-title tests).
"""

import os

from twisted.application import service
from twisted.logger import Logger

from twisted_cluster import cluster

log = Logger(namespace="chatty")


class Chatty(service.Service):
    def startService(self):
        worker = cluster.worker
        log.info("hello from worker {id}", id=worker.id)
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("it broke on purpose")
        name = os.path.join(os.environ["REPORT_DIR"], f"started-{worker.id}")
        with open(name + ".tmp", "w") as f:
            f.write(f"{worker.id} {worker.slot} {os.getpid()}\n")
        os.rename(name + ".tmp", name)


application = service.Application("chatty")
Chatty().setServiceParent(application)
