"""
The log's format, C{--log-format}: twistd's text, or one JSON object per
line for log shippers.  The master and the workers write the same fields:

    {"time": "2026-12-02T00:24:35.123456Z", "level": "info",
     "namespace": "app", "system": "HTTPChannel,0,127.0.0.1",
     "message": "hello", "worker_id": 3, "worker_slot": 1}

C{time} is ISO 8601 in UTC, to the microsecond; C{system} is there when the
event has one; C{worker_id} and C{worker_slot} are in every worker's event
and in none of the master's (a spare's slot is C{null} until it starts); a
failure's traceback is in C{traceback}, inside the line.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from twisted.logger import LogEvent, formatEvent

TEXT = "text"
JSON = "json"
FORMATS = (TEXT, JSON)

WORKER_ID = "worker_id"
WORKER_SLOT = "worker_slot"
"""The keys, in a worker's events the master publishes, naming the worker."""


def isoTime(when: float | None) -> str | None:
    """
    C{when}, seconds since the epoch, as ISO 8601 in UTC (C{...Z}).
    """
    if when is None:
        return None
    stamp = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")


def eventAsJSONLine(
    event: LogEvent, worker: tuple[int, int | None] | None = None
) -> str | None:
    """
    One line of JSON for C{event} (C{None} if there is nothing to say), with
    C{worker_id} and C{worker_slot} from C{worker}, the id and slot of the
    worker that logged it, if given; else those the event carries, if any.
    """
    level = event.get("log_level")
    message = formatEvent(event)
    fields: dict[str, Any] = {
        "time": isoTime(event.get("log_time")),
        "level": getattr(level, "name", None),
        "namespace": event.get("log_namespace"),
    }
    system = event.get("log_system")
    if system is not None:
        fields["system"] = _text(system)
    failure = event.get("log_failure")
    if failure is not None:
        if not message:
            message = _failureMessage(failure)
        fields["traceback"] = _traceback(failure)
    if not message and failure is None:
        return None
    fields["message"] = message
    if worker is not None:
        fields[WORKER_ID], fields[WORKER_SLOT] = worker
    elif WORKER_ID in event:
        fields[WORKER_ID] = event[WORKER_ID]
        fields[WORKER_SLOT] = event.get(WORKER_SLOT)
    return json.dumps(fields, ensure_ascii=False, default=_text) + "\n"


def _text(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return "UNFORMATTABLE"


def _failureMessage(failure: Any) -> str:
    try:
        return f"{failure.type.__name__}: {failure.getErrorMessage()}"
    except Exception:
        return "(unformattable failure)"


def _traceback(failure: Any) -> str:
    try:
        return str(failure.getTraceback())
    except Exception:
        return "(unable to obtain traceback)"
