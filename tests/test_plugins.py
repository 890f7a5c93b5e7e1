"""
Any twistd plugin, not only a .tac (contract §7):
C{twistd cluster [options] PLUGIN [plugin options]} runs, in each worker, the
service C{twistd PLUGIN [plugin options]} would run, its ports shared.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .support import (
    TWISTD,
    Cluster,
    childrenOf,
    freePort,
    get,
    tcp,
    waitFor,
    workersAnswering,
)

PID_RPY = """\
import os

from twisted.web import resource as _resource


class Pid(_resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return f"pid {os.getpid()}\\n".encode()


resource = Pid()
"""

WSGI_APP = """\
import os


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"wsgi {os.getpid()}\\n".encode()]
"""

# A third-party plugin: a drop-in in twisted/plugins/ (no __init__.py) and
# the module that makes its service.
DROPIN = """\
from twisted.application.service import ServiceMaker

hello = ServiceMaker("hello", "hellotap", "Says hello with its pid.", "hello")
"""

HELLOTAP = """\
import os

from twisted.application import strports
from twisted.internet import protocol
from twisted.python import usage


class Options(usage.Options):
    optParameters = [["port", "p", None, "The TCP port."]]

    def postOptions(self):
        if self["port"] is None:
            raise usage.UsageError("hello needs --port")


class Hello(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(f"{os.getpid()} hello\\n".encode())
        self.transport.loseConnection()


def makeService(options):
    factory = protocol.Factory.forProtocol(Hello)
    return strports.service(f"tcp:{options['port']}:interface=127.0.0.1", factory)
"""


def pidsServing(port: int, path: str, count: int = 2) -> set[int]:
    """
    Ask C{path} (which answers "WORD PID") until C{count} different pids
    have answered; those pids.
    """
    seen: set[int] = set()

    def enough() -> bool:
        try:
            seen.add(int(get(port, path, timeout=5).split()[1]))
        except OSError:
            pass  # not listening yet: waitFor's deadline bounds this
        return len(seen) >= count

    waitFor(enough, what=f"{count} workers answering {path}")
    return seen


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """
    C{twistd -n cluster ARGS}, which must fail within 5 s with no worker
    started; what it wrote.
    """
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "--logfile=-", "cluster", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not childrenOf(process.pid)
    assert process.returncode != 0
    return err.decode() + out.decode()


def webRoot(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello.txt").write_text("hello from a file\n")
    (root / "pid.rpy").write_text(PID_RPY)
    return root


def title(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


def hasSetproctitle() -> bool:
    try:
        import setproctitle  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.timeout(60)
def test_webPath(tmp_path: Path, cluster: Callable[..., Cluster]) -> None:
    """
    C{web --listen ... --path DIR} serves the directory from every worker.
    """
    root = webRoot(tmp_path)
    port = freePort()
    c = cluster(
        None,
        plugin=["web", "--listen", f"tcp:{port}:interface=127.0.0.1"]
        + ["--path", str(root)],
    )
    pids = pidsServing(port, "/pid.rpy")
    assert pids == set(c.workerPids())
    assert get(port, "/hello.txt") == "hello from a file\n"
    if hasSetproctitle():
        assert title(c.pid) == "twisted-cluster master [web]"
        assert {title(pid) for pid in pids} == {
            "twisted-cluster worker 1 slot 1 [web]",
            "twisted-cluster worker 2 slot 2 [web]",
        }


@pytest.mark.timeout(60)
def test_webWSGI(tmp_path: Path, cluster: Callable[..., Cluster]) -> None:
    """
    A WSGI app under C{web --wsgi} runs on every worker.
    """
    (tmp_path / "wsgiapp.py").write_text(WSGI_APP)
    port = freePort()
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    c = cluster(
        None,
        env={"PYTHONPATH": path},
        plugin=["web", "--listen", f"tcp:{port}:interface=127.0.0.1"]
        + ["--wsgi", "wsgiapp.application"],
    )
    assert pidsServing(port, "/") == set(c.workerPids())


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "plugin,says",
    [
        (["nosuchplugin", "--x"], "twistd cluster: no twistd plugin named"),
        (
            ["web", "--lisen", "tcp:8080"],
            "twistd cluster web: option --lisen not recognized",
        ),
        (["web", "--wsgi", "no.such.app"], "No such WSGI application"),
    ],
    ids=["unknown plugin", "unknown option", "rejected value"],
)
def test_wrongPlugin(tmp_path: Path, plugin: list[str], says: str) -> None:
    """
    A plugin that is not installed, or options it rejects: one line (the
    plugin's own message), a non-zero exit within 5 s, no worker started.
    """
    started = time.monotonic()
    output = run(["--workers", "2", "--control", "none", *plugin], tmp_path)
    assert time.monotonic() - started < 5
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert says in lines[0], output


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "args,says",
    [
        (["--app", "x.tac", "web"], "give one of them"),
        ([], "--app is required"),
    ],
)
def test_appOrPlugin(tmp_path: Path, args: list[str], says: str) -> None:
    """
    Exactly one of C{--app} or a plugin.
    """
    output = run(args, tmp_path)
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], output


def test_helpShowsBothForms(tmp_path: Path) -> None:
    process = subprocess.run(
        [TWISTD, "cluster", "--help"], cwd=tmp_path, capture_output=True, timeout=10
    )
    usage = process.stdout.decode()
    assert process.returncode == 0
    assert "cluster [options] --app server.tac" in usage
    assert "cluster [options] PLUGIN [plugin options]" in usage
    commands = usage.split("Commands:")[1].split()
    assert "web" in commands and "cluster" not in commands
    process = subprocess.run(
        [TWISTD, "cluster", "web", "--help"], capture_output=True, timeout=10
    )
    assert process.stdout.decode().startswith(
        "Usage: twistd [options] cluster [options] web [web options]\n"
    )


def installHello(tmp_path: Path) -> dict[str, str]:
    """
    Write the third-party plugin under C{tmp_path}; the environment that
    puts it on C{PYTHONPATH}.
    """
    site = tmp_path / "site"
    plugins = site / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "hello_plugin.py").write_text(DROPIN)
    (site / "hellotap.py").write_text(HELLOTAP)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path}


@pytest.mark.timeout(60)
def test_thirdPartyPlugin(tmp_path: Path, cluster: Callable[..., Cluster]) -> None:
    """
    A plugin installed from a directory on C{PYTHONPATH} runs on 2 workers;
    its warm spare builds the service while it waits and starts it when a
    worker dies.
    """
    env = installHello(tmp_path)
    port = freePort()
    c = cluster(
        None,
        env=env,
        args=["--spares", "1"],
        plugin=["hello", "--port", str(port)],
    )
    serving = {int(p) for p in workersAnswering(tcp(port), 2)}
    assert serving <= set(c.workerPids())
    spares = waitFor(lambda: set(c.workerPids()) - serving, what="the spare")
    if hasSetproctitle():
        (spare,) = spares
        waitFor(
            lambda: title(spare) == "twisted-cluster spare [hello]",
            what="the spare's title",
        )
    os.kill(min(serving), signal.SIGKILL)
    waitFor(
        lambda: any(int(p) in spares for p in workersAnswering(tcp(port), 2)),
        what="the spare to serve",
    )


@pytest.mark.timeout(30)
def test_thirdPartyPluginOptions(tmp_path: Path) -> None:
    """
    A third-party plugin's own Options check its arguments in the master.
    """
    output = run(["--workers", "2", "hello"], tmp_path, env=installHello(tmp_path))
    assert output.strip().splitlines() == [
        "twistd cluster hello: hello needs --port (see twistd cluster hello --help)"
    ]
