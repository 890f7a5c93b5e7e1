"""
A worker's app metrics, for the master to merge into its own page.
"""

from __future__ import annotations

import sys


def appMetrics() -> bytes:
    """
    What the app registered in C{prometheus_client}'s default registry, in
    Prometheus' text format; nothing if the app never imported
    C{prometheus_client} (it is not imported here for it).
    """
    if "prometheus_client" not in sys.modules:
        return b""
    from prometheus_client import REGISTRY, generate_latest

    return generate_latest(REGISTRY)
