"""
A --master-hook for tests: answers each worker's message with a pong.
"""


def install(cluster):
    def pong(worker, message):
        worker.send({"pong": message, "from": "master"})

    cluster.on("message", pong)


def reportModules(cluster):
    """
    Write into REPORT_DIR/master.json whether OpenSSL and the reactor are
    loaded in the master.
    """
    import json
    import os
    import sys

    seen = {
        "OpenSSL": "OpenSSL" in sys.modules,
        "reactor": "twisted.internet.reactor" in sys.modules,
    }
    with open(os.path.join(os.environ["REPORT_DIR"], "master.json"), "w") as f:
        json.dump(seen, f)


def markAtExit(cluster):
    # An exit handler the master's hook registers: it must run however the
    # master exits, a fatal error included.
    import atexit
    import os

    def mark():
        with open(os.environ["MARK_FILE"], "w") as f:
            f.write("ran")

    atexit.register(mark)


def failsOnceMarked(cluster):
    """
    Fail (as a new release's broken master hook would) once the file
    FAIL_MARK names exists: the check before an upgrade passes (it runs no
    hook), the new image does not.
    """
    import os

    if os.path.exists(os.environ["FAIL_MARK"]):
        raise RuntimeError("the new release's master hook fails")


def recordDeaths(cluster):
    """
    Append each worker death the master reports (Node's death event) to
    the file DEATHS names: "<id> <signal or exit code>".
    """
    import os

    def died(worker, code, signal):
        with open(os.environ["DEATHS"], "a") as f:
            f.write(f"{worker.id} {signal or code}\n")

    cluster.on("death", died)
