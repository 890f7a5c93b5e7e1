"""
The master starts without Twisted's TLS support, and gets it back when
something uses it.  Each test runs in a fresh interpreter: this one has
imported the reactor already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins

from .support import APPS, waitFor

LEAN_THEN_TLS = """
import json, sys
from twisted_cluster.master.lean import withoutTLS

with withoutTLS() as kept:
    from twisted.internet import reactor
    from twisted.protocols import amp
loaded = "OpenSSL" in sys.modules

from twisted.internet import protocol, ssl
from twisted.internet.interfaces import IReactorSSL

pem = open(sys.argv[1]).read()
server = ssl.PrivateCertificate.loadPEM(pem).options()
client = ssl.optionsForClientTLS(
    "localhost", trustRoot=ssl.Certificate.loadPEM(pem)
)
result = {"kept": kept, "loadedInside": loaded, "ssl": IReactorSSL.providedBy(reactor)}

class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

class Ask(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(b"over TLS")
    def dataReceived(self, data):
        result["echo"] = data.decode()
        reactor.stop()

echo = protocol.Factory.forProtocol(Echo)
port = reactor.listenSSL(0, echo, server, interface="127.0.0.1")
ask = protocol.ClientFactory.forProtocol(Ask)
reactor.connectSSL("127.0.0.1", port.getHost().port, ask, client)
reactor.callLater(20, reactor.stop)
reactor.run()
print(json.dumps(result))
"""


def run(script: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tlsBackOnFirstUse(pem: str) -> None:
    """
    Inside the block the reactor and AMP load without OpenSSL; after it,
    listenSSL and connectSSL work: a real handshake and an echo.
    """
    assert run(LEAN_THEN_TLS, pem) == {
        "kept": True,
        "loadedInside": False,
        "ssl": True,
        "echo": "over TLS",
    }


def test_notWhenAlreadyLoaded() -> None:
    """
    Once the reactor has been imported (with its TLS), nothing is kept out.
    """
    script = """
import json, sys
from twisted.internet import reactor
from twisted_cluster.master.lean import withoutTLS
with withoutTLS() as kept:
    import twisted.protocols.amp
print(json.dumps({"kept": kept, "loaded": "OpenSSL" in sys.modules}))
"""
    assert run(script) == {"kept": False, "loaded": True}


def test_twistdMasterWithoutTLS(cluster, tmp_path: Path) -> None:
    """
    A twistd cluster master has not loaded OpenSSL when its hook runs; its
    workers serve as ever.
    """
    # A missing plugin cache has twistd import every plugin, TLS too, to
    # write it (make install writes them); this is about the usual start.
    list(getPlugins(IServiceMaker))
    report = tmp_path / "master.json"
    cluster(
        APPS / "ping.tac",
        workers=1,
        env={"REPORT_DIR": str(tmp_path), "PYTHONPATH": str(APPS)},
        args=["--master-hook", "hook:reportModules"],
    )
    seen = json.loads(waitFor(lambda: report.exists() and report.read_text()))
    assert seen == {"OpenSSL": False, "reactor": True}
