"""
The workers' environment: C{--env NAME=VALUE} and C{--env-file FILE}.

The file is in the usual C{.env} format, read again at every reload so that
a deploy can change the workers' configuration without restarting the
master.  The parser is ours, not C{python-dotenv}'s: the format is a few
lines of rules, and a supervisor is better off without a dependency for it.

    # a comment, and blank lines, are skipped
    export DATABASE_URL=postgres://db/app     # "export " is allowed
    GREETING="hello\\nworld"                   # escapes in double quotes
    LITERAL='no $expansion, no \\escapes'      # single quotes: as written
    EMPTY=

No variable expansion (C{${OTHER}} stays as written) and no value spanning
lines, unless a double-quoted C{\\n} says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parseAssignment(text: str) -> tuple[str, str]:
    """
    C{NAME=VALUE} as given to C{--env}: the value is taken as it is.

    @raise ValueError: saying what is wrong with it.
    """
    name, equals, value = text.partition("=")
    if not equals or not _NAME.match(name):
        raise ValueError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def parseEnvironment(text: str) -> dict[str, str]:
    """
    The variables of a C{.env} file's text, later lines winning.

    @raise ValueError: naming the line that is not an assignment.
    """
    variables: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, equals, rest = line.partition("=")
        name = name.strip()
        if not equals or not _NAME.match(name):
            raise ValueError(f"line {number}: expected NAME=VALUE, not {line!r}")
        try:
            variables[name] = _value(rest.strip())
        except ValueError as e:
            raise ValueError(f"line {number}: {name}: {e}") from None
    return variables


def _value(text: str) -> str:
    """
    An assignment's value: quoted (the rest of the line may be a comment),
    or bare (up to a C{#} after a space).
    """
    if text[:1] == "'":
        end = text.find("'", 1)
        if end < 0:
            raise ValueError("no closing '")
        _onlyComment(text[end + 1 :])
        return text[1:end]
    if text[:1] == '"':
        value, end = _doubleQuoted(text)
        _onlyComment(text[end:])
        return value
    return re.split(r"\s+#", text, maxsplit=1)[0].rstrip()


def _doubleQuoted(text: str) -> tuple[str, int]:
    out: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return "".join(out), index + 1
        if char == "\\" and index + 1 < len(text):
            following = text[index + 1]
            out.append(_ESCAPES.get(following, "\\" + following))
            index += 2
            continue
        out.append(char)
        index += 1
    raise ValueError('no closing "')


def _onlyComment(tail: str) -> None:
    tail = tail.strip()
    if tail and not tail.startswith("#"):
        raise ValueError(f"unexpected {tail!r} after the quoted value")


class WorkerEnvironment:
    """
    What every worker gets besides the master's own environment: the
    variables of C{path} (if any), read at L{read}, overridden by C{fixed}
    (C{--env}).  Calling it gives them; the master calls it at each fork.
    """

    def __init__(self, fixed: Mapping[str, str], path: str | None) -> None:
        self.fixed = dict(fixed)
        self.path = path
        self._fromFile: dict[str, str] = {}

    def read(self) -> None:
        """
        Read the file again; on an error, the variables read before stay.

        @raise ValueError: saying, in one line, why the file cannot be read.
        """
        if self.path is None:
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ValueError(f"--env-file {self.path}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"--env-file {self.path}: not UTF-8 ({e})") from None
        try:
            self._fromFile = parseEnvironment(text)
        except ValueError as e:
            raise ValueError(f"--env-file {self.path}: {e}") from None

    def __call__(self) -> dict[str, str]:
        return {**self._fromFile, **self.fixed}
