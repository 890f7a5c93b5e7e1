"""
A web app (on PORT, answering "<worker id> <pid>") whose worker 1 attacks
its own channel to the master once it has started, as ATTACK says:

    endless-box   one box that never ends (distinct keys, forever)
    huge-message  a Message of 1 GiB, bypassing the worker's own limit
    descriptors   100,000 file descriptors, unasked for
    garbage       bytes that are not AMP
    unknown       a command the master does not know
    bad-json      a Message whose batch is not JSON
    bad-slot      a Listen for slot 57, which it was never given
    cut-box       half a box, then it exits
    unread        commands as fast as it can, never reading the answers

Everything is written from a thread on a blocking copy of the channel, as
fast as the master reads.
"""

import os
import socket
import struct
import sys
import threading

from twisted.application import internet, service
from twisted.internet import reactor
from twisted.web import resource, server

from twisted_cluster import cluster

ATTACK = os.environ["ATTACK"]


def pair(key, value):
    return struct.pack("!H", len(key)) + key + struct.pack("!H", len(value)) + value


def box(**values):
    return b"".join(pair(k.encode(), v) for k, v in values.items()) + b"\0\0"


def attack(channel):
    write = channel.sendall
    chunk = b"x" * 65535
    if ATTACK == "endless-box":
        write(pair(b"_command", b"Message") + pair(b"_ask", b"1"))
        n = 0
        while True:
            n += 1
            write(pair(b"k%d" % n, chunk))
    elif ATTACK == "huge-message":
        write(pair(b"_command", b"Message") + pair(b"_ask", b"1"))
        write(pair(b"batch", b"[" + b"1" * 65534))
        for n in range(1, (1 << 30) // 65535):
            write(pair(b"batch.%d" % n, b"1" * 65535))
        write(pair(b"batch.x", b"]") + b"\0\0")
    elif ATTACK == "descriptors":
        for _ in range(100_000 // 50):
            socket.send_fds(channel, [b"x"], [0] * 50)
    elif ATTACK == "garbage":
        write(os.urandom(1 << 20))
    elif ATTACK == "unknown":
        write(box(_command=b"TakeOver", _ask=b"1"))
    elif ATTACK == "bad-json":
        write(box(_command=b"Message", _ask=b"1", batch=b"[not json"))
    elif ATTACK == "bad-slot":
        request = b'{"kind":"tcp","interface":"127.0.0.1","port":0,"path":"",'
        request += b'"backlog":50,"mode":438,"occurrence":0,"wantPID":false}'
        write(box(_command=b"Listen", _ask=b"1", request=request, slot=b"57"))
    elif ATTACK == "unread":
        online = box(_command=b"Online", _ask=b"1")
        while True:
            write(online * 1000)
    elif ATTACK == "cut-box":
        write(pair(b"_command", b"Message") + pair(b"_ask", b"1") + b"\0\x05ba")
        os._exit(3)


def start():
    transport = cluster.worker._channel.transport
    if ATTACK == "unread":
        transport.stopReading()
    fd = os.dup(transport.fileno())
    channel = socket.socket(fileno=fd)
    channel.setblocking(True)
    thread = threading.Thread(target=lambda: _run(channel), daemon=True)
    thread.start()


def _run(channel):
    try:
        attack(channel)
    except OSError as e:
        sys.stderr.write(f"attack ended: {e}\n")


class Who(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return f"{cluster.worker.id} {os.getpid()}".encode()


if cluster.worker.id == 1:
    reactor.callLater(0.5, start)

application = service.Application("hostile")
internet.TCPServer(
    int(os.environ["PORT"]), server.Site(Who()), interface="127.0.0.1"
).setServiceParent(application)
