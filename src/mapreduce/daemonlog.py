"""How the daemons (``mapreduce master``, ``mapreduce worker``) log: text, or JSON lines.

``--log-format json`` (or ``$MAPREDUCE_LOG_FORMAT=json``) makes every line a daemon
writes, its logs on stderr and its start-up messages on stdout, one JSON object with
``time`` (ISO 8601, UTC), ``level``, ``component`` (``master``, ``worker``, ``shuffle``,
``master.raft``), ``job``, ``task``, ``attempt`` (empty, or null, when the line is not
about one) and ``message``, for log shippers.  Code that logs about a task passes
:func:`about` as ``extra``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import traceback
from typing import Any

FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(name)s: %(message)s"


def about(job: str, task: str = "", attempt: int | None = None) -> dict[str, Any]:
    """``extra=`` for a log call about a job, a task or an attempt."""
    return {"job": job, "task": task, "attempt": attempt}


def line(level: str, component: str, message: str, **fields: Any) -> str:
    """One JSON log line (without its newline)."""
    now = datetime.datetime.now(datetime.UTC)
    return json.dumps(
        {
            "time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": level,
            "component": component,
            "job": fields.get("job") or "",
            "task": fields.get("task") or "",
            "attempt": fields.get("attempt"),
            "message": message,
        },
        ensure_ascii=False,
    )


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return line(
            record.levelname.lower(),
            record.name.removeprefix("mapreduce."),
            message,
            job=getattr(record, "job", ""),
            task=getattr(record, "task", ""),
            attempt=getattr(record, "attempt", None),
        )


class TextFormatter(logging.Formatter):
    """``TIME LOGGER: [JOB TASK attempt N] MESSAGE``, for people."""

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        attempt = getattr(record, "attempt", None)
        parts = (
            getattr(record, "job", ""),
            getattr(record, "task", ""),
            "" if attempt is None else f"attempt {attempt}",
        )
        about = " ".join(str(part) for part in parts if part)
        if about:
            record.message = f"{about}: {record.message}"
        return super().formatMessage(record)


def configure(log_format: str) -> None:
    """Set up the daemon's logging on stderr ($MAPREDUCE_LOG_LEVEL, default INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("MAPREDUCE_LOG_LEVEL", "INFO"))


def say(log_format: str, component: str, message: str) -> None:
    """A start-up message on stdout (``master listening on ...``): as is, or as a JSON line."""
    print(message if log_format != "json" else line("info", component, message), flush=True)
