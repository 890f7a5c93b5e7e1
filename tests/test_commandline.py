"""
Bad command lines: each gives one line and a non-zero exit within seconds,
with no worker left behind and no traceback.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .support import APPS, TWISTD, childrenOf

WEB = str(APPS / "web.tac")

WRONG = [
    (["--workers", "0"], "--workers"),
    (["--workers", "many"], "--workers"),
    (["-w", "-3"], "-w"),
    (["--graceful-timeout", "-1"], "--graceful-timeout"),
    (["--graceful-timeout", "soon"], "--graceful-timeout"),
    (["--timeout", "x"], "--timeout"),
    (["--max-age", "old"], "--max-age"),
    (["--max-memory", "-5"], "--max-memory"),
    (["--max-memory", "lots"], "--max-memory"),
    (["--spares", "-1"], "--spares"),
    (["--scheduling", "random"], "--scheduling"),
    (["--reload-batch", "0"], "--reload-batch"),
    (["--restart-delay", "nan"], "--restart-delay"),
    (["--max-restart-delay", "x"], "--max-restart-delay"),
    (["--stable-after", "-2"], "--stable-after"),
    (["--max-boot-failures", "0"], "--max-boot-failures"),
    (["--max-message-size", "0"], "--max-message-size"),
    (["--max-message-size", "big"], "--max-message-size"),
    (["--master-hook", "nomodule"], "--master-hook"),
    (["--master-hook", "no.such.module:hook"], "--master-hook"),
    (["--bind", "tcp:http"], "--bind"),
    (["--bind", "sctp:80"], "--bind"),
    (["--bind", "tcp:70000"], "--bind"),
    (["--log-format", "xml"], "--log-format"),
    (["--no-such-option"], "no-such-option"),
]


def run(args: list[str], cwd: Path, timeout: float = 10.0) -> tuple[int, str]:
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "--logfile=-", "cluster", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not childrenOf(process.pid)
    return process.returncode, err.decode() + out.decode()


@pytest.mark.parametrize("args,named", WRONG, ids=[" ".join(a) for a, _ in WRONG])
def test_wrongOption(tmp_path: Path, args: list[str], named: str) -> None:
    code, output = run(["--app", WEB, *args], tmp_path)
    assert code != 0
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert named in lines[0], output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "app,says",
    [
        ("missing.tac", "cannot load missing.tac: no such file"),
        (".", "is a directory"),
    ],
)
def test_badAppPath(tmp_path: Path, app: str, says: str) -> None:
    code, output = run(["--app", app], tmp_path)
    assert code != 0
    lines = output.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], output


def test_noApp(tmp_path: Path) -> None:
    code, output = run([], tmp_path)
    assert code != 0
    assert output.strip().splitlines() == [
        "twistd cluster: --app is required: the .tac file to run (or name a twistd "
        "plugin) (see --help)"
    ]


def test_tacThatNeverReturns(tmp_path: Path) -> None:
    """
    A .tac that loops forever while loading is killed at --boot-timeout; the
    master says so in one line and exits non-zero.
    """
    app = tmp_path / "loop.tac"
    app.write_text("while True:\n    pass\n")
    code, output = run(
        ["--app", str(app), "--workers", "1", "--spares", "0", "--boot-timeout", "2"],
        tmp_path,
        timeout=20,
    )
    assert code == 1
    errors = [
        line for line in output.splitlines() if line.startswith("twisted-cluster")
    ]
    assert errors == [
        "twisted-cluster: worker 1 did not start within 2s (--boot-timeout)"
    ]


def test_addressInUse(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        version = tmp_path / "v"
        version.write_text("v1")
        process = subprocess.run(
            [TWISTD, "-n", "--pidfile=", f"--logfile={tmp_path / 'log'}", "cluster"]
            + ["--app", WEB, "--workers", "2", "--spares", "0"],
            cwd=tmp_path,
            env={"PORT": str(port), "VERSION_FILE": str(version), "PATH": "/usr/bin"},
            capture_output=True,
            timeout=20,
        )
    assert process.returncode == 1
    assert process.stderr.decode().splitlines() == [
        f"twisted-cluster: cannot listen on TCP port {port} on 127.0.0.1: "
        "Address already in use"
    ]


def test_fatalErrorLetsExitHandlersRun(tmp_path: Path) -> None:
    """
    A fatal error exits 1 the ordinary way: an exit handler the master's
    hook registered still runs.
    """
    import os

    mark = tmp_path / "mark"
    broken = tmp_path / "broken.tac"
    broken.write_text("x = (\n")
    process = subprocess.run(
        [TWISTD, "-n", "--pidfile=", f"--logfile={tmp_path / 'log'}", "cluster"]
        + ["--app", str(broken), "--spares", "0"]
        + ["--master-hook", "tests.apps.hook:markAtExit"],
        cwd=APPS.parent.parent,
        env={**os.environ, "MARK_FILE": str(mark)},
        capture_output=True,
        timeout=20,
    )
    assert process.returncode == 1, process.stderr
    assert mark.read_text() == "ran"
