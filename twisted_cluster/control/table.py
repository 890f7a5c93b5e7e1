"""
The status document as a table, for people.
"""

from __future__ import annotations

from typing import Any, TextIO


def formatStatus(status: dict[str, Any], out: TextIO) -> None:
    """
    The status document as a table: a row per worker, the master's, then
    the cluster's state.
    """
    header = (
        "ID",
        "SLOT",
        "PID",
        "STATE",
        "UPTIME",
        "RESTARTS",
        "CPU%",
        "MEMORY",
        "OPEN",
        "ACCEPTED",
    )
    rows = [header]
    for w in status["workers"]:
        rows.append(
            (
                str(w["id"]),
                _or(w["slot"]),
                _or(w["pid"]),
                w["state"],
                _duration(w["uptime"]),
                str(w["restarts"]),
                _or(w["cpu"]),
                _bytes(w["rss"]),
                str(w["open"]),
                str(w["accepted"]),
            )
        )
    m = status["master"]
    rows.append(
        (
            "master",
            "-",
            str(m["pid"]),
            status["state"],
            _duration(m["uptime"]),
            "-",
            _or(m["cpu"]),
            _bytes(m["rss"]),
            "-",
            "-",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = zip(row, widths, strict=True)
        line = "  ".join(cell.ljust(width) for cell, width in cells)
        out.write(line.rstrip() + "\n")
    serving = sum(1 for w in status["workers"] if w["state"] == "serving")
    upgrades = m.get("generation", 0)
    upgraded = f"; master {m.get('version', '?')}" + (
        f", upgraded in place {upgrades} time{'' if upgrades == 1 else 's'}"
        if upgrades
        else ""
    )
    others: dict[str, list[str]] = {}
    for w in status["workers"]:
        if w.get("version") and w["version"] != m.get("version"):
            others.setdefault(w["version"], []).append(str(w["id"]))
    for version, ids in sorted(others.items()):
        # After an upgrade in place, say: a reload rolls them onto the new.
        upgraded += (
            f"; worker{'s' if len(ids) > 1 else ''} {', '.join(ids)} on {version}"
        )
    out.write(
        f"\ncluster {status['state']}: {serving} of {status['count']} workers "
        f"serving ({status['scheduling']}){upgraded}\n"
    )


def _or(value: object) -> str:
    return "-" if value is None else str(value)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _bytes(count: int | None) -> str:
    if count is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f}{unit}" if unit == "B" else f"{count:.1f}{unit}"
        count /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")
