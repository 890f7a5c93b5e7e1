"""
C{--config FILE} and the workers' environment, C{--env} and C{--env-file}
(contract §7).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from twisted_cluster.config import readConfig
from twisted_cluster.envfile import WorkerEnvironment, parseEnvironment

from .support import Cluster, freePort, get, waitFor
from .test_plugins import pidsServing, run, webRoot

ENV_TAC = """\
import os

from twisted.application import internet, service
from twisted.web import resource, server


class Env(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        names = ["FIXED", "FROM_FILE", "BOTH"]
        values = " ".join(os.environ.get(n, "-") for n in names)
        return f"env {os.getpid()} {values}\\n".encode()


application = service.Application("env")
internet.TCPServer(
    int(os.environ["PORT"]), server.Site(Env()), interface="127.0.0.1"
).setServiceParent(application)
"""


def failing(args: list[str], cwd: Path) -> list[str]:
    """
    The lines C{twistd -n cluster ARGS} writes as it fails, with no worker.
    """
    return [line for line in run(args, cwd).splitlines() if line.strip()]


def webPlugin(port: int, root: Path) -> list[str]:
    return ["web", "--listen", f"tcp:{port}:interface=127.0.0.1", "--path", str(root)]


def toml(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


@pytest.mark.timeout(60)
def test_configIsTheCommandLine(
    tmp_path: Path, cluster: Callable[..., Cluster]
) -> None:
    """
    A configuration file gives the cluster the same options on the command
    line give: here 3 workers, no spare, the web plugin serving a directory.
    """
    root = webRoot(tmp_path)
    port = freePort()
    config = tmp_path / "cluster.toml"
    config.write_text(
        f"workers = 3\nspares = 0\ngraceful-timeout = 5\n"
        f"plugin = {toml(webPlugin(port, root))}\n"
    )
    c = cluster(None, workers=None, args=["--config", str(config)])
    assert pidsServing(port, "/pid.rpy", 3) == set(c.workerPids())
    assert get(port, "/hello.txt") == "hello from a file\n"


@pytest.mark.timeout(60)
def test_commandLineWins(tmp_path: Path, cluster: Callable[..., Cluster]) -> None:
    """
    Options on the command line win over the file's, and a plugin on the
    command line over the file's C{plugin} (or C{app}).
    """
    root = webRoot(tmp_path)
    (tmp_path / "other").mkdir()
    port, otherPort = freePort(), freePort()
    config = tmp_path / "cluster.toml"
    config.write_text(
        f"workers = 3\napp = 'nonexistent.tac'\n"
        f"plugin = {toml(webPlugin(otherPort, tmp_path / 'other'))}\n"
    )
    c = cluster(
        None,
        workers=2,
        args=["--config", str(config)],
        plugin=webPlugin(port, root),
    )
    assert pidsServing(port, "/pid.rpy") == set(c.workerPids())
    assert len(c.workerPids()) == 2
    assert f":{otherPort}" not in c.log()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "text,says",
    [
        ("wrokers = 2\n", "--config cluster.toml: wrokers: unknown key"),
        ("workers = 'many'\n", "--config cluster.toml: workers: must be a whole"),
        ("workers = true\n", "--config cluster.toml: workers: expected a string"),
        ("plugin = 3\n", "--config cluster.toml: plugin: expected a list"),
        ("config = 'other.toml'\n", "--config cluster.toml: config: unknown key"),
        ("workers = \n", "--config cluster.toml: not valid TOML"),
        ("plugin = ['nosuch']\n", "no twistd plugin named 'nosuch'"),
    ],
)
def test_badConfig(tmp_path: Path, text: str, says: str) -> None:
    """
    An unknown key or a wrong value: one line naming it, a non-zero exit.
    """
    (tmp_path / "cluster.toml").write_text(text)
    lines = failing(["--config", "cluster.toml"], tmp_path)
    assert len(lines) == 1 and says in lines[0], lines


def test_noConfigFile(tmp_path: Path) -> None:
    lines = failing(["--config", "missing.toml"], tmp_path)
    assert lines == [
        "twistd cluster: --config missing.toml: No such file or directory (see --help)"
    ]


def test_readConfig(tmp_path: Path) -> None:
    """
    The file's options become arguments; repeatable ones take a list (env a
    table too); app and plugin are kept apart.
    """
    path = tmp_path / "c.toml"
    path.write_text(
        "workers = 4\nmax-memory = 1.5\nbind = ['tcp:80', 'udp:53']\n"
        "env = { A = 'one', B = 2 }\nhealth = 'tcp:8081'\n"
        "plugin = ['web', '--path', '.']\napp = 'x.tac'\n"
    )
    found = readConfig(
        str(path),
        ["workers", "max-memory", "bind", "env", "health", "app"],
        [],
        ["bind", "env"],
    )
    assert found.arguments == [
        *("--workers", "4", "--max-memory", "1.5"),
        *("--bind", "tcp:80", "--bind", "udp:53"),
        *("--env", "A=one", "--env", "B=2", "--health", "tcp:8081"),
    ]
    assert found.plugin == ["web", "--path", "."]
    assert found.app == ["--app", "x.tac"]


def test_parseEnvironment() -> None:
    """
    The usual .env format: comments and blank lines, C{export}, quotes.
    """
    text = """
# a comment
export DATABASE_URL=postgres://db/app
PLAIN = some value   # a comment after it
HASH=a#b
SINGLE='no \\n escapes # here'
DOUBLE="line\\nnext \\"quoted\\"" # comment
EMPTY=
SPACED="  kept  "
PLAIN=later wins
"""
    assert parseEnvironment(text) == {
        "DATABASE_URL": "postgres://db/app",
        "PLAIN": "later wins",
        "HASH": "a#b",
        "SINGLE": "no \\n escapes # here",
        "DOUBLE": 'line\nnext "quoted"',
        "EMPTY": "",
        "SPACED": "  kept  ",
    }


@pytest.mark.parametrize(
    "line,says",
    [
        ("NOEQUALS", "line 1: expected NAME=VALUE"),
        ("1ABC=x", "line 1: expected NAME=VALUE"),
        ("A='open", "line 1: A: no closing '"),
        ('A="open', 'line 1: A: no closing "'),
        ("A='x' trailing", "line 1: A: unexpected 'trailing'"),
    ],
)
def test_parseEnvironmentErrors(line: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parseEnvironment(line)


def test_workerEnvironment(tmp_path: Path) -> None:
    """
    --env wins over the file; a file that cannot be read again leaves what
    was read before.
    """
    path = tmp_path / "app.env"
    path.write_text("A=1\nB=file\n")
    environment = WorkerEnvironment({"B": "fixed"}, str(path))
    environment.read()
    assert environment() == {"A": "1", "B": "fixed"}
    path.write_text("A='broken\n")
    with pytest.raises(ValueError, match="app.env: line 1"):
        environment.read()
    assert environment() == {"A": "1", "B": "fixed"}


def answersOf(port: int, count: int = 2) -> dict[int, str]:
    """
    What C{count} different workers answer: their pid and the variables
    they show.
    """
    seen: dict[int, str] = {}

    def enough() -> bool:
        try:
            _, pid, values = get(port, timeout=5).strip().split(" ", 2)
        except OSError:
            return False  # not listening yet: waitFor's deadline bounds this
        seen[int(pid)] = values
        return len(seen) >= count

    waitFor(enough, what=f"{count} workers answering")
    return seen


@pytest.mark.timeout(90)
def test_environmentAndReload(tmp_path: Path, cluster: Callable[..., Cluster]) -> None:
    """
    C{--env} and C{--env-file} reach every worker, C{--env} winning; after
    the file changes, a reload (SIGHUP) gives the new workers its new values.
    """
    app = tmp_path / "env.tac"
    app.write_text(ENV_TAC)
    port = freePort()
    envFile = tmp_path / "app.env"
    envFile.write_text("FROM_FILE=first\nBOTH=file\n")
    c = cluster(
        app,
        env={"PORT": str(port)},
        args=["--env", "FIXED=cli", "--env", "BOTH=cli", "--env-file", "app.env"],
    )
    before = answersOf(port)
    assert set(before.values()) == {"cli first cli"}
    assert set(before) == set(c.workerPids())
    envFile.write_text("export FROM_FILE='second'\n")
    c.signal(signal.SIGHUP)
    waitFor(lambda: "Reload done" in c.log(), what="the reload")
    after = answersOf(port)
    assert set(after.values()) == {"cli second cli"}
    assert not set(after) & set(before)
    assert set(after) == set(c.workerPids())


def test_exampleConfig() -> None:
    """
    C{examples/cluster.toml} uses only keys the options know, with values
    they take.
    """
    from twisted_cluster.options import Options

    options = Options()
    example = Path(__file__).parent.parent / "examples" / "cluster.toml"
    found = readConfig(
        str(example),
        [name[:-1] for name in options.longOpt if name.endswith("=")],
        [],
        options.repeatable,
        options._check,
    )
    assert found.plugin[0] == "web"
    assert "--workers" in found.arguments
