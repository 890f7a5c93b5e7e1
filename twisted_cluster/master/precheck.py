"""
Whether the code installed now can take over a running master:

    python -m twisted_cluster.master.precheck VERSION TWISTD-ARGUMENTS...

Run by the master before it upgrades in place, in the environment and
directory the new image will have.  It imports the master's modules and
parses the master's own command line as twistd would (the plugin, the
cluster's options and the app's, through the new code); it starts nothing.
Exits 0 if all is well, else 1 with one line saying why.
"""

from __future__ import annotations

import sys


def check(argv: list[str]) -> str | None:
    """
    Why the new code cannot take over from a master writing handover
    format C{argv[0]} with twistd arguments C{argv[1:]}; C{None} if it can.
    """
    if not argv or not argv[0].isdigit():
        return "usage: python -m twisted_cluster.master.precheck VERSION ARGS..."
    version, args = int(argv[0]), argv[1:]
    from twisted.python.usage import UsageError

    from twisted_cluster import tap  # noqa: F401 (the master's shell and options)
    from twisted_cluster.master import supervisor  # noqa: F401
    from twisted_cluster.master.upgrade import READABLE

    if version not in READABLE:
        return f"it reads handover formats {READABLE}, not {version}"
    from twisted.scripts.twistd import ServerOptions

    options = ServerOptions()
    try:
        options.parseOptions(args)
    except (UsageError, SystemExit) as e:
        return f"its command line does not parse: {e}"
    if options.subCommand != "cluster":
        return f"the command line runs {options.subCommand!r}, not cluster"
    return None


def main() -> None:
    try:
        why = check(sys.argv[1:])
    except Exception as e:
        why = f"{type(e).__name__}: {' '.join(str(e).split())}"
    if why is not None:
        sys.stderr.write(f"{why}\n")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
