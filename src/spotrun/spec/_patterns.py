"""botocore's patterns, written for Java's regular expressions, as Python's ``re`` reads them.

botocore's patterns are Java regexes matched against the whole value (Java's
``String.matches``), e.g. ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}``. Python's ``re`` differs in
a few places, which ``translate`` bridges:

- ``\\p{…}`` classes (``\\p{L}``, ``\\p{Alnum}``, …), which ``re`` lacks: Unicode general
  categories become explicit code point ranges, POSIX classes their ASCII sets (Java's
  default).
- Java's ``.`` stops at every line terminator (``\\r``, ``\\u0085``, ``\\u2028``,
  ``\\u2029``), not only ``\\n``.
- ``\\w``, ``\\d``, ``\\s`` and ``\\b`` are ASCII-only in Java by default: ``compiled``
  uses ``re.ASCII``; and the match is always a full match.

What has no translation (``\\P{…}``, class unions and intersections) raises
``ValueError``, and ``compiled`` gives None for it, so that the caller skips the pattern.
Pure.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Mapping

#: Java's POSIX classes (ASCII-only by default, as in Java) as Python class contents
_POSIX = {
    "Lower": "a-z",
    "Upper": "A-Z",
    "ASCII": "\\x00-\\x7f",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Alnum": "a-zA-Z0-9",
    "XDigit": "0-9a-fA-F",
    "Space": " \\t\\n\\x0b\\f\\r",
    "Blank": " \\t",
}
#: what Java's ``.`` leaves out besides ``\n``, which Python's leaves out alone
_JAVA_DOT = "[^\\n\\r\\x85\\u2028\\u2029]"


@functools.cache
def _category_runs() -> Mapping[str, tuple[tuple[int, int], ...]]:
    """Each Unicode general category's runs of code points, in one pass over them all
    (about a quarter of a second, once, on the first pattern that needs it)."""
    runs: dict[str, list[tuple[int, int]]] = {}
    start, current = 0, unicodedata.category("\x00")
    for cp in range(1, sys.maxunicode + 1):
        cat = unicodedata.category(chr(cp))
        if cat != current:
            runs.setdefault(current, []).append((start, cp - 1))
            start, current = cp, cat
    runs.setdefault(current, []).append((start, sys.maxunicode))
    return {cat: tuple(r) for cat, r in runs.items()}


@functools.cache
def _category_ranges(prefix: str) -> str:
    """Python class contents for the general categories starting with ``prefix`` (``L``,
    ``Nd``, …), as ``re`` has no ``\\p{…}``."""
    picked = sorted(r for cat, rs in _category_runs().items() if cat.startswith(prefix) for r in rs)
    if not picked:
        raise ValueError(f"no Unicode category starts with {prefix!r}")
    return "".join(_esc(a) if a == b else f"{_esc(a)}-{_esc(b)}" for a, b in picked)


def _esc(cp: int) -> str:
    return f"\\U{cp:08x}"


def _property(name: str) -> str:
    """Class contents for ``\\p{name}``; ``ValueError`` for a property spotrun cannot map."""
    if name in _POSIX:
        return _POSIX[name]
    bare = name.removeprefix("Is")
    if 1 <= len(bare) <= 2 and bare[0] in "LMNPSZC":
        return _category_ranges(bare)
    raise ValueError(f"\\p{{{name}}} has no translation")


def translate(java: str) -> str:
    """A Java regular expression as Python's ``re`` reads it (to be used with fullmatch).

    Raises ``ValueError`` for what has no translation (``\\P{…}``, class intersections).
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(java):
        ch = java[i]
        if ch == "\\" and i + 1 < len(java):
            nxt = java[i + 1]
            if nxt in "pP" and i + 2 < len(java) and java[i + 2] == "{":
                end = java.index("}", i)
                if nxt == "P":
                    raise ValueError("negated property classes \\P{…} have no translation")
                body = _property(java[i + 3 : end])
                out.append(body if in_class else f"[{body}]")
                i = end + 1
                continue
            out.append(java[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "[" or java.startswith("&&", i):
                raise ValueError("nested classes and intersections have no translation")
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            out.append(ch)
            # a ']' (or '^]') right after the opening bracket is a literal
            if java.startswith("^", i + 1):
                out.append("^")
                i += 1
            if java.startswith("]", i + 1):
                out.append("\\]")
                i += 1
            i += 1
            continue
        elif ch == ".":
            out.append(_JAVA_DOT)
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


@functools.cache
def compiled(java: str) -> re.Pattern[str] | None:
    """The compiled translation of a botocore pattern, or None when it has none."""
    try:
        return re.compile(translate(java), re.ASCII)
    except (ValueError, re.error):
        return None
