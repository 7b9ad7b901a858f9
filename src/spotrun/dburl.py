"""Database URLs as users give them: checked, normalised, and shown without a password.

Plain string handling, no database library: the CLI and the settings use this, and neither
may load the store (only the server opens the database).

* ``sqlite:////absolute/path.db``: a file every process of a server sees alike;
* ``postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE[?…]`` (also ``postgres://`` and
  ``postgresql+psycopg://``), driven by psycopg 3.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

SUPPORTED = "sqlite:////PATH or postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE"
_SQLITE = ("sqlite", "sqlite+pysqlite")
_POSTGRES = ("postgresql", "postgresql+psycopg", "postgres")


def database_url(url: str) -> str:
    """``url`` as the store opens it; ``ValueError`` says what is wrong with a bad one (and
    never repeats its password)."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme:
        raise ValueError(f"{shown_url(text)!r} is not a database URL; use {SUPPORTED}")
    scheme = scheme.lower()
    if scheme in _SQLITE:
        path = rest[1:] if rest.startswith("/") else ""
        if not path or path == ":memory:":
            # every process of a server must see the same data: a file it names
            raise ValueError(f"{text!r} names no SQLite file; use sqlite:////PATH")
        if not path.startswith("/"):
            # a background server runs elsewhere than the shell that named the file
            raise ValueError(f"{text!r}: give the SQLite file's absolute path (sqlite:////…)")
        return f"sqlite:///{path}"
    if scheme in _POSTGRES:
        parts = urlsplit(f"postgresql+psycopg://{rest}")
        if not parts.hostname:
            raise ValueError(f"{shown_url(text)!r} names no host; use {SUPPORTED}")
        if not parts.path.strip("/"):
            raise ValueError(f"{shown_url(text)!r} names no database; use {SUPPORTED}")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError(f"{shown_url(text)!r}: the port must be a number") from None
        return urlunsplit(parts)
    raise ValueError(
        f"{shown_url(text)!r}: spotrun's store runs on SQLite or PostgreSQL (psycopg), "
        f"not {scheme!r}; use {SUPPORTED}"
    )


def shown_url(url: str) -> str:
    """The URL with its password replaced by ``***``, fit for a log line or the CLI."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<not a URL>" if ":" in url or "@" in url else url
    netloc, slash, tail = rest.partition("/")
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        name = user.split(":", 1)[0]
        netloc = f"{name}:***@{host}"
    return f"{scheme}{sep}{netloc}{slash}{tail}"
