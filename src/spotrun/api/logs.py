"""How a server writes its log: the usual text lines, or one JSON object per record.

``spotrun server --log-format json`` (or ``SPOTRUN_LOG_FORMAT=json``) is for a log
collector: each record is one line holding ``time`` (ISO 8601, UTC), ``level``, ``logger``
and ``message``, plus ``job`` and ``generation`` when the record carries them (passed as
``extra={"job": …}``), and ``exception`` with the traceback when there is one.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Literal

from spotrun.errors import SpecError

LOG_FORMAT_ENV = "SPOTRUN_LOG_FORMAT"
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: what a record may carry about the job it is about
CONTEXT = ("job", "generation")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def log_format(chosen: str | None) -> LogFormat:
    """The format asked for (``--log-format``), else ``$SPOTRUN_LOG_FORMAT``, else text."""
    value = chosen or os.environ.get(LOG_FORMAT_ENV) or "text"
    for known in LOG_FORMATS:
        if value == known:
            return known
    where = "--log-format" if chosen else LOG_FORMAT_ENV
    raise SpecError(where, f"{value!r} is not a log format; use one of: text, json")


def setup_logging(fmt: LogFormat) -> None:
    """Send every record at INFO and above to stderr, in ``fmt``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
