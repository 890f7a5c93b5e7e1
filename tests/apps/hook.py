"""
A --master-hook for tests: answers each worker's message with a pong.
"""


def install(cluster):
    def pong(worker, message):
        worker.send({"pong": message, "from": "master"})

    cluster.on("message", pong)
