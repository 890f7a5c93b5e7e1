"""
Running this checkout's code as user C{nobody}, for tests of privilege
dropping (C{twistd -u nobody -g nogroup ... cluster}, started as root) and
of refusing other users.

The dev venv's interpreter lives under C{/root}, which C{nobody} cannot
enter.  So Debian's C{/usr/bin/python3} (the same minor version: the dev
venv's compiled extensions load in it) gets:

  - once per machine, a venv under C{/tmp} holding a copy of the runtime
    packages installed in the dev venv (the closure of this project's
    requirements, no test tools), byte-compiled and with fresh Twisted
    plugin caches: C{nobody} can neither compile nor write caches;
  - once per test session, a small venv on top of it (a C{.pth} file) with
    a fresh copy of C{twisted_cluster} and its C{twistd} plugin.

Everything is world-readable, under directories C{nobody} can traverse.
"""

from __future__ import annotations

import fcntl
import grp
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest

from .support import ROOT

USER, GROUP = "nobody", "nogroup"
BASE_PYTHON = Path("/usr/bin/python3")
CACHE = Path("/tmp")
PROJECT = "twisted-cluster"
PREFIX = "twisted-cluster-nobody-"
PYTHON_VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"

# What the interpreter checks once its packages are in place, as root: the
# compiled extensions load, and Twisted's plugin caches are written (where
# a cache is missing or stale, a process as nobody would import every
# plugin, and fail to write it, each time it looks for one).
_CHECK = """
import compileall, os, sys
for path in sys.argv[1:]:
    assert compileall.compile_dir(path, quiet=1), path
import cryptography.hazmat.bindings._rust, OpenSSL.SSL, service_identity
import zope.interface, twisted.internet.ssl, twisted.plugins
from twisted.plugin import IPlugin, getPlugins
list(getPlugins(IPlugin))
for path in filter(os.path.isdir, twisted.plugins.__path__):
    assert os.path.exists(os.path.join(path, "dropin.cache")), path
"""


def asNobody(argv: Sequence[str | os.PathLike[str]]) -> list[str]:
    """
    C{argv}, to be run as C{nobody} (group C{nogroup}, no other groups).
    """
    switch = ["setpriv", f"--reuid={USER}", f"--regid={GROUP}", "--clear-groups"]
    return [*switch, *map(str, argv)]


def nobodyIds() -> tuple[int, int]:
    """
    The uid of C{nobody} and the gid of C{nogroup}.
    """
    return pwd.getpwnam(USER).pw_uid, grp.getgrnam(GROUP).gr_gid


def cleanEnviron(**extra: str) -> dict[str, str]:
    """
    This process's environment without what would point an interpreter at
    the dev venv, or make a process believe it is a cluster's worker.
    """
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONSTARTUP"}
    drop |= {"VIRTUAL_ENV", "TWISTED_CLUSTER_WORKER_ID"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, **extra}


@cache
def whyNot() -> str | None:
    """
    Why this machine cannot run the project as C{nobody}, or C{None}.
    """
    if os.geteuid() != 0:
        return "running as nobody needs root (to switch user)"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    try:
        nobodyIds()
    except KeyError:
        return f"there is no user {USER} or no group {GROUP}"
    if not all(os.stat(p).st_mode & stat.S_IXOTH for p in [CACHE, *CACHE.parents]):
        return f"{USER} cannot traverse {CACHE}"
    if not os.access(BASE_PYTHON, os.X_OK):
        return f"{BASE_PYTHON} is missing"
    probe = "import sys, venv; print('{}.{}'.format(*sys.version_info[:2]))"
    found = subprocess.run(
        [BASE_PYTHON, "-c", probe], capture_output=True, text=True, env=cleanEnviron()
    )
    if found.returncode:
        return f"{BASE_PYTHON} has no venv module: {found.stderr.strip()[-200:]}"
    version, wanted = found.stdout.strip(), "{}.{}".format(*sys.version_info[:2])
    if version != wanted:
        return (
            f"{BASE_PYTHON} is Python {version or '?'}, not the dev venv's "
            f"{wanted}: the dev venv's compiled extensions would not load in it"
        )
    return None


def skipUnlessNobody() -> None:
    """
    Skip the test, saying why, unless it can run things as C{nobody}.
    """
    reason = whyNot()
    if reason is not None:
        pytest.skip(f"cannot run as {USER}: {reason}")


def runtimeDistributions() -> list[metadata.Distribution]:
    """
    The installed distributions this project needs at run time: the closure
    of its requirements (with their extras, without its own test extra).
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    todo = [(PROJECT, "")]
    while todo:
        name, extra = todo.pop()
        key = canonicalize_name(name)
        if (key, extra) in done:
            continue
        done.add((key, extra))
        try:
            dist = found.get(key) or metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise RuntimeError(f"{name}, which {PROJECT} needs, is not installed")
        found[key] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or marker.evaluate({"extra": extra}):
                todo.append((requirement.name, ""))
                todo.extend((requirement.name, e) for e in requirement.extras)
    del found[canonicalize_name(PROJECT)]  # the checkout's code is copied anew
    return sorted(found.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def cacheKey(distributions: Sequence[metadata.Distribution]) -> str:
    """
    A hash of what the shared venv is made of: the interpreter, the
    packages (names and versions), the project's requirements and this
    recipe.
    """
    digest = hashlib.sha256()
    python = os.stat(BASE_PYTHON)
    digest.update(f"{os.path.realpath(BASE_PYTHON)} {python.st_size}".encode())
    digest.update(f" {python.st_mtime_ns}\n".encode())
    for dist in distributions:
        digest.update(f"{dist.metadata['Name']}=={dist.version}\n".encode())
    for path in [ROOT / "setup.cfg", ROOT / "pyproject.toml", Path(__file__)]:
        digest.update(path.read_bytes() if path.exists() else b"-")
    return digest.hexdigest()[:16]


def sitePackages(venv: Path) -> Path:
    return venv / "lib" / PYTHON_VERSION / "site-packages"


def openToAll(top: Path) -> None:
    """
    C{chmod -R a+rX top}.
    """
    for directory, dirs, files in os.walk(top):
        for name in [directory, *(os.path.join(directory, n) for n in dirs + files)]:
            mode = os.lstat(name).st_mode
            if stat.S_ISLNK(mode):
                continue
            wanted = mode | 0o444
            if stat.S_ISDIR(mode) or mode & 0o111:
                wanted |= 0o111
            if wanted != mode:
                os.chmod(name, stat.S_IMODE(wanted))


def _venv(where: Path) -> Path:
    subprocess.run(
        [BASE_PYTHON, "-m", "venv", "--without-pip", where],
        check=True,
        env=cleanEnviron(),
    )
    return where / "bin" / "python"


def _prepare(python: Path, *compile: Path) -> None:
    """
    As root: byte-compile C{compile}, check the extensions load, write the
    plugin caches.
    """
    done = subprocess.run(
        [python, "-I", "-c", _CHECK, *map(str, compile)],
        capture_output=True,
        text=True,
        cwd=python.parent,  # not a checkout's twisted/plugins
        env=cleanEnviron(),
    )
    if done.returncode:
        raise RuntimeError(f"{python} is not usable:\n{done.stdout}{done.stderr}")


def _build(venv: Path, distributions: Sequence[metadata.Distribution]) -> None:
    python = _venv(venv)
    site = sitePackages(venv)
    for dist in distributions:
        for file in dist.files or []:
            if file.parts[0] == "..":
                continue  # scripts: nobody runs them (see twistdScript)
            source = Path(str(dist.locate_file(file)))
            if not source.is_file():
                continue
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            # A copy, not a hard link: the dev venv's files stay its own.
            # copy2 keeps mtimes, so the copied byte code stays valid.
            shutil.copy2(source, target)
    _prepare(python, site)
    openToAll(venv)


def sharedVenv() -> Path:
    """
    The machine's venv of this project's runtime packages for C{nobody}
    (built the first time, or when what it is made of changed).
    """
    distributions = runtimeDistributions()
    final = CACHE / f"{PREFIX}{cacheKey(distributions)}"
    done = final / "complete"
    if not done.exists():
        _buildOnce(final, distributions)
    done.touch()  # in use: see _forgetOld
    _forgetOld(keep=final)
    return final


def _buildOnce(final: Path, distributions: Sequence[metadata.Distribution]) -> None:
    with open(f"{final}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it
        if (final / "complete").exists():
            return
        shutil.rmtree(final, ignore_errors=True)
        partial = Path(tempfile.mkdtemp(prefix=f"{final.name}.", dir=CACHE))
        try:
            _build(partial, distributions)
            (partial / "complete").touch(0o644)
            os.chmod(partial, 0o755)
            os.rename(partial, final)
        finally:
            shutil.rmtree(partial, ignore_errors=True)


def _forgetOld(keep: Path, age: float = 86400.0) -> None:
    """
    Remove what this module left in the cache directory, other than C{keep},
    unused for C{age} seconds: shared venvs of other keys, and what killed
    sessions and builds left.
    """
    for old in CACHE.glob(f"{PREFIX}*"):
        if old == keep or not old.is_dir():
            continue
        used = old / "complete" if (old / "complete").exists() else old
        try:
            idle = time.time() - used.stat().st_mtime
        except FileNotFoundError:
            continue
        if idle > age:
            shutil.rmtree(old, ignore_errors=True)
            Path(f"{old}.lock").unlink(missing_ok=True)


def twistdScript(python: Path) -> Path:
    """
    The C{twistd} script of the venv whose interpreter is C{python}.
    """
    return python.parent / "twistd"


def makeNobodyPython(directory: Path) -> Path:
    """
    An interpreter, in new venv C{directory}, that runs this checkout's code
    as C{nobody}; C{twistd} is beside it (L{twistdScript}).
    """
    skipUnlessNobody()
    shared = sitePackages(sharedVenv())
    python = _venv(directory)
    site = sitePackages(directory)
    (site / "twisted-cluster-nobody.pth").write_text(f"{shared}\n")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
    shutil.copytree(ROOT / "twisted_cluster", site / "twisted_cluster", ignore=skip)
    plugins = site / "twisted" / "plugins"
    shutil.copytree(ROOT / "twisted" / "plugins", plugins, ignore=skip)
    twistdScript(python).write_text(
        f"#!{python}\n"
        "import sys\n"
        "from twisted.scripts.twistd import run\n"
        "sys.exit(run())\n"
    )
    twistdScript(python).chmod(0o755)
    _prepare(python, site / "twisted_cluster", plugins)
    openToAll(directory)
    return python


def makeNobodyWorkdir(parent: Path, name: str = "work") -> Path:
    """
    A new directory in C{parent} (which C{nobody} can traverse) owned by
    C{nobody}: for the files of a cluster that drops privileges.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    os.chown(workdir, *nobodyIds())
    workdir.chmod(0o755)
    return workdir


@pytest.fixture(scope="session", name="nobodyRoot")
def nobodyRootFixture() -> Iterator[Path]:
    """
    This session's directory for C{nobody}'s venv and work directories,
    under C{/tmp}; removed at the end.
    """
    skipUnlessNobody()
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}session-", dir=CACHE))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", name="nobodyPython")
def nobodyPythonFixture(nobodyRoot: Path) -> Path:
    """
    The interpreter of L{makeNobodyPython}, once per session.
    """
    return makeNobodyPython(nobodyRoot / "venv")


@pytest.fixture(name="nobodyWorkdir")
def nobodyWorkdirFixture(nobodyRoot: Path) -> Path:
    """
    A new directory owned by C{nobody} (L{makeNobodyWorkdir}).
    """
    return makeNobodyWorkdir(nobodyRoot)
