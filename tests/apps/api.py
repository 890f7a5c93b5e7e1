"""
Node's cluster API end to end: the master runs a scenario against real
workers and prints what it saw as one JSON line, "RESULT {...}".

Workers listen on port 0 with a protocol that answers "<id>" after DELAY
seconds, and obey messages: {"do": "echo"|"disconnect"|"crash"|"env"|"size"
|"big"|"count"}.
"""

import gc
import hashlib
import json
import os
import sys

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from twisted_cluster import cluster

BIG = 16 * 1024 * 1024
BURST = 10_000  # messages: several batches (messages.BATCH_SIZE) each way


class Slow(protocol.Protocol):
    """
    Says "accepted", then after DELAY seconds "done" and closes.
    """

    def connectionMade(self):
        self.transport.write(b"accepted ")
        reactor.callLater(float(os.environ.get("DELAY", "0")), self.answer)

    def answer(self):
        self.transport.write(b"done")
        self.transport.loseConnection()


def workerMain():
    me = cluster.worker
    received = []

    def whenFrozen(then, tries=50):
        # The worker freezes its start-up heap a moment after it starts.
        if gc.get_freeze_count() or not tries:
            then()
        else:
            reactor.callLater(0.1, whenFrozen, then, tries - 1)

    def onMessage(message):
        do = message.get("do")
        if do == "echo":
            me.send({"echo": message["n"]})
        elif do == "disconnect":
            me.disconnect()
        elif do == "crash":
            os._exit(3)
        elif do == "env":
            whenFrozen(
                lambda: me.send(
                    {"env": os.environ.get("EXTRA"), "frozen": gc.get_freeze_count()}
                )
            )
        elif do == "size":
            data = message["data"]
            me.send(
                {"size": len(data), "sha": hashlib.sha256(data.encode()).hexdigest()}
            )
        elif do == "big":
            me.send({"big": "y" * BIG})
        elif do == "count":
            received.append(message["n"])
            if len(received) == message["of"]:
                me.send({"inOrder": received == list(range(message["of"]))})

    me.on("message", onMessage)
    f = protocol.Factory.forProtocol(Slow)
    reactor.listenTCP(0, f, interface="127.0.0.1")


def waitFor(emitter, event):
    d = defer.Deferred()
    emitter.once(event, lambda *args: d.callback(args))
    return d


class Collect(protocol.Protocol):
    def __init__(self):
        self.data = b""
        self.accepted = defer.Deferred()
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.data += data
        if not self.accepted.called:
            self.accepted.callback(None)

    def connectionLost(self, reason):
        self.done.callback(self.data.decode())


@defer.inlineCallbacks
def scenario():
    result = {}
    log = []
    for name in ["fork", "online", "listening", "disconnect", "exit"]:
        cluster.on(name, lambda *args, name=name: log.append([name, args[0].id]))

    # Events, in order, for a worker asked to disconnect while a client waits.
    w1 = cluster.fork()
    (address,) = yield waitFor(w1, "listening")
    result["state1"] = w1.state
    result["ids"] = list(cluster.workers)
    client = Collect()
    yield connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", address.port), client
    )
    yield client.accepted
    dead = w1.disconnect()
    result["answerDuringDisconnect"] = yield client.done
    yield dead
    result["events1"] = [e for e in log if e[1] == 1]
    result["after1"] = {
        "exitedAfterDisconnect": w1.exitedAfterDisconnect,
        "state": w1.state,
        "isDead": w1.isDead(),
        "inWorkers": 1 in cluster.workers,
        "exitCode": w1.exitCode,
    }

    # kill() is not a disconnect.
    w2 = cluster.fork()
    yield waitFor(w2, "listening")
    w2.kill()
    code, signal = yield waitFor(w2, "exit")
    result["kill"] = [w2.exitedAfterDisconnect, code, signal]

    # A worker that disconnects by itself.
    w3 = cluster.fork()
    yield waitFor(w3, "listening")
    w3.send({"do": "disconnect"})
    code, signal = yield waitFor(w3, "exit")
    result["selfDisconnect"] = [w3.exitedAfterDisconnect, code, signal]

    # A crash.
    w4 = cluster.fork()
    yield waitFor(w4, "listening")
    w4.send({"do": "crash"})
    code, signal = yield waitFor(w4, "exit")
    result["crash"] = [w4.exitedAfterDisconnect, code, signal]

    # fork(env=...), messages both ways, in order (bursts of several batches),
    # of any size.
    w5 = cluster.fork(env={"EXTRA": "yes"})
    yield waitFor(w5, "listening")
    replies = []
    w5.on("message", replies.append)  # before any other listener of w5
    got = waitFor(w5, "message")
    yield w5.send({"do": "env"})
    (message,) = yield got
    result["env"] = message

    try:
        w5.send({"not json": {1, 2}})
    except TypeError as e:
        result["typeError"] = str(e)
    got = waitFor(w5, "message")
    yield w5.send({"do": "env"})
    (message,) = yield got
    result["usableAfterTypeError"] = message["env"] == "yes"

    before = len(replies)
    allEchoed = defer.Deferred()

    def echoed(worker, message):
        if len(replies) == before + BURST:
            allEchoed.callback(None)

    cluster.on("message", echoed)  # after the listener that fills replies
    yield defer.gatherResults([w5.send({"do": "echo", "n": n}) for n in range(BURST)])
    yield allEchoed
    result["echoInOrder"] = [m["echo"] for m in replies[before:]] == list(range(BURST))

    got = waitFor(w5, "message")
    yield defer.gatherResults(
        [w5.send({"do": "count", "n": n, "of": BURST}) for n in range(BURST)]
    )
    (message,) = yield got
    result["toWorkerInOrder"] = message

    data = "x" * BIG
    got = waitFor(w5, "message")
    yield w5.send({"do": "size", "data": data})
    (message,) = yield got
    result["bigToWorker"] = message == {
        "size": BIG,
        "sha": hashlib.sha256(data.encode()).hexdigest(),
    }
    got = waitFor(w5, "message")
    w5.send({"do": "big"})
    (message,) = yield got
    result["bigToMaster"] = message == {"big": "y" * BIG}

    # cluster.disconnect() ends every worker.
    w6 = cluster.fork()
    yield waitFor(w6, "listening")
    yield cluster.disconnect()
    result["afterDisconnectAll"] = {
        "workers": list(cluster.workers),
        "exited": [w5.isDead(), w6.isDead()],
        "afterDisconnect": [w5.exitedAfterDisconnect, w6.exitedAfterDisconnect],
    }
    result["allEvents"] = log
    return result


def masterMain():
    def done(result):
        print("RESULT " + json.dumps(result), flush=True)

    def failed(failure):
        print("FAILED " + failure.getTraceback(), flush=True)

    d = task.deferLater(reactor, 0, scenario)
    d.addCallbacks(done, failed)
    d.addBoth(lambda _: reactor.stop())


if cluster.isMaster:
    masterMain()
else:
    workerMain()
reactor.run()
sys.exit(0)
