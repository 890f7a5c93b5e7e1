"""
Where a master's control socket is, for the master and the command alike
(nothing here imports Twisted: C{twistd} reads this before the reactor).
"""

from __future__ import annotations

import os

CONTROL_NAME = "twistd.ctl"
"""The control socket's file name, beside the pid file by default."""


def defaultControlPath(pidfile: str | None) -> str:
    """
    Where the control socket is by default: C{twistd.ctl} in the directory of
    C{pidfile}, or in the current directory when there is none.
    """
    directory = os.path.dirname(os.path.abspath(pidfile)) if pidfile else os.getcwd()
    return os.path.join(directory, CONTROL_NAME)
