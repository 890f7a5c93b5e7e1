"""
Messages between master and workers: JSON values, never code.
"""

from __future__ import annotations

import json


def encodeMessage(message: object) -> bytes:
    """
    Encode C{message} as JSON.

    @raise TypeError: if JSON cannot encode it (NaN and infinities included,
        as they are not JSON).
    """
    try:
        return json.dumps(message, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise TypeError(f"cannot send {type(message).__name__} message: {e}") from None


def decodeMessage(data: bytes) -> object:
    """
    Decode a message that L{encodeMessage} made.
    """
    return json.loads(data)
