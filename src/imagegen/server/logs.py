"""Structured logs: one JSON object per line on stderr, for the API process (access log) and the workers."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from typing import Any

#: The id of the HTTP request being served (set by the access-log middleware; read where a job is queued, so the
#: job's record and the worker's log lines carry the id of the request that submitted it).
REQUEST_ID: ContextVar[str | None] = ContextVar("imagegen_request_id", default=None)

#: ``extra=`` keys copied into the JSON line (logging stores them as record attributes).
_FIELDS = (
    "method",
    "path",
    "status",
    "ms",
    "client",
    "request_id",
    "job",
    "worker",
    "pid",
    "attempts",
    "seconds",
    "code",
    "requeued",
    "ended",
    "removed_jobs",
    "removed_files",
    "stray_files",
    "keep_hours",
    "jobs",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _FIELDS:
            if hasattr(record, name):
                data[name] = getattr(record, name)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def configure_logging(level: str = "info") -> None:
    """Send the ``imagegen`` loggers to stderr as JSON lines (called by ``imagegen serve`` and each worker)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("imagegen")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
