"""
Node-style events: C{on(name, callback)} and C{emit(name, *args)}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

Listener = Callable[..., object]

ALIASES = {"exit": "death"}
"""Node calls C{death} C{exit}; both names reach the same listeners."""


class EventEmitter:
    """
    Calls the listeners of an event in the order they were added.  A listener
    that raises is logged; it does not stop the others.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}

    def on(self, event: str, callback: Listener) -> EventEmitter:
        """
        Call C{callback} every time C{event} happens.
        """
        self._listeners.setdefault(ALIASES.get(event, event), []).append(callback)
        return self

    addListener = on

    def once(self, event: str, callback: Listener) -> EventEmitter:
        """
        Call C{callback} the next time C{event} happens, and not after.
        """

        def onceOnly(*args: Any) -> None:
            self.removeListener(event, onceOnly)
            callback(*args)

        return self.on(event, onceOnly)

    def removeListener(self, event: str, callback: Listener) -> EventEmitter:
        """
        Stop calling C{callback} for C{event}.
        """
        listeners = self._listeners.get(ALIASES.get(event, event), [])
        if callback in listeners:
            listeners.remove(callback)
        return self

    def emit(self, event: str, *args: Any) -> bool:
        """
        Call every listener of C{event} with C{args}; say whether there was any.
        """
        listeners = list(self._listeners.get(ALIASES.get(event, event), ()))
        for listener in listeners:
            try:
                listener(*args)
            except Exception:
                self._log.failure(
                    "{event!r} listener {listener!r} failed",
                    event=event,
                    listener=listener,
                )
        return bool(listeners)
