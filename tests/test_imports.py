"""
Importing the cluster module makes nothing: no master, no thread, no
descriptor, not even in a process that says it is a worker; and no module
of the package imports another in a circle.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import twisted_cluster

PROBE = """
import json, os, sys, threading
before = sorted(os.listdir("/proc/self/fd"))
import twisted_cluster.cluster as cluster
after = sorted(os.listdir("/proc/self/fd"))
print(json.dumps({
    "threads": threading.active_count(),
    "descriptors": [before, after],
    "master": cluster._master is not None,
    "reactor": "twisted.internet.reactor" in sys.modules,
}))
"""


@pytest.mark.parametrize("asWorker", [False, True])
def test_importMakesNothing(asWorker: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWISTED_CLUSTER")}
    if asWorker:
        env["TWISTED_CLUSTER_WORKER_ID"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["threads"] == 1
    before, after = seen["descriptors"]
    assert after == before
    assert not seen["master"] and not seen["reactor"]


def _imports(path: Path, module: str) -> set[str]:
    """
    The package's modules that C{module} imports when it runs (not those
    only a type checker reads, under C{if TYPE_CHECKING:}), wherever in it
    the import statement is: one inside a function is a circle put off.
    """
    tree = ast.parse(path.read_text())
    typing = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for child in node.body
        for n in ast.walk(child)
    }
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            name = (
                (f"{base}.{node.module}" if node.level and node.module else base)
                if node.level
                else node.module or ""
            )
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("twisted_cluster")}


def test_noModuleImportsAnotherInACircle() -> None:
    root = Path(twisted_cluster.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {
        name: _imports(path, name) & set(modules) for name, path in modules.items()
    }
    graph = {name: edges - {name} for name, edges in graph.items()}
    assert len(graph) > 30, "found too few modules to trust"
    circles = []
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            circles.append(" -> ".join(path[path.index(name) :] + [name]))
            return
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert circles == []
