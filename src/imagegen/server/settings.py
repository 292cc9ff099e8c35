"""What an operator configures for ``imagegen serve``: one frozen :class:`ServerSettings`, checked when built."""

from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from imagegen.errors import InvalidRequest
from imagegen.options import EngineOptions
from imagegen.requests import Limits

#: Loopback names accepted without authentication (besides any address in 127.0.0.0/8 or ::1).
LOOPBACK_NAMES = ("localhost",)
DEFAULT_ENGINE_FACTORY = "imagegen.server.jobs.worker:default_engine"
_NOT_FOR_WORKERS = ("api_keys", "basic_auth", "host", "port")
#: Longest ``url_ttl``: a signed URL works without credentials, so it must not live for ever, and its ``expires`` must
#: stay within the digits :class:`imagegen.server.jobs.urls.URLSigner` accepts back.
MAX_URL_TTL = 7 * 24 * 3600
#: The URL schemes of ``store_url`` (PostgreSQL; libpq takes both).
STORE_URL_SCHEMES = ("postgresql://", "postgres://")


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """``url`` with its password (``user:PASSWORD@``, ``?password=``) replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            user_info, _, host = netloc.rpartition("@")
            user, colon, _ = user_info.partition(":")
            netloc = f"{user}:***@{host}" if colon else netloc
        query = "&".join(
            "password=***" if item.partition("=")[0].lower() == "password" else item for item in parts.query.split("&")
        )
        return urlunsplit(parts._replace(netloc=netloc, query=query if parts.query else ""))
    except ValueError:
        return url.partition("://")[0] + "://***"


def default_data_dir() -> Path:
    """``<IMAGEGEN_HOME>/server``: the job database, result images and request inputs."""
    from imagegen.loading import imagegen_home

    return imagegen_home() / "server"


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Everything ``imagegen serve`` needs. Authentication may be off only on a loopback address."""

    host: str = "127.0.0.1"
    #: A1111's port, so A1111 clients work without reconfiguration.
    port: int = 7860
    #: Model references the operator allows besides the models directory and the built-in demo model.
    models: tuple[str, ...] = ()
    #: The model used when a request names none (default: the first of ``models``, else the demo model).
    default_model: str | None = None
    #: How the workers' engines run (device, dtype, memory savers) and where named models live.
    engine: EngineOptions = field(default_factory=EngineOptions)
    data_dir: Path = field(default_factory=default_data_dir)
    #: The job store: None for ``<data_dir>/jobs.sqlite3``, or a PostgreSQL URL (``postgresql://user:pass@host:port/db``)
    #: for a queue shared by several servers. Out of ``repr`` (it may hold a password); workers receive it.
    store_url: str | None = field(default=None, repr=False)
    #: Bearer keys (any of them is accepted; also as the password of HTTP Basic auth on /sdapi).
    api_keys: tuple[str, ...] = ()
    #: A1111 ``--api-auth`` style (user, password) pairs for HTTP Basic auth on /sdapi.
    basic_auth: tuple[tuple[str, str], ...] = ()
    #: Most jobs waiting (not running); beyond it, submissions get 429 with Retry-After.
    max_queue: int = 64
    limits: Limits = field(default_factory=Limits)
    #: Worker processes, each owning one engine (one per device).
    workers: int = 1
    #: Largest request body; larger bodies get 413 before they are read.
    max_body_bytes: int = 45 * 1024 * 1024
    #: ``module:callable`` building the engine inside the worker (tests swap in a fake).
    engine_factory: str = DEFAULT_ENGINE_FACTORY
    #: How many times a job whose worker died is run again before it fails.
    job_retries: int = 1
    #: Seconds between progress writes to the store (every step would be a write per step per job).
    progress_interval: float = 0.25
    #: Seconds between store polls of idle workers, SSE streams and blocking waits.
    poll_interval: float = 0.1
    #: Seconds SIGTERM waits for running jobs before the workers are stopped.
    drain_timeout: float = 600.0
    #: Seconds without a heartbeat after which a worker of a shared store (several servers, Ray replicas) is presumed
    #: dead and its jobs are re-queued by another server. Workers beat every ``worker_lease / 5`` seconds.
    worker_lease: float = 5.0
    #: Seconds a job may run before its worker is killed and the job fails as ``timeout`` (None: no limit).
    job_timeout: float | None = 3600.0
    #: Seconds a signed image URL (``?expires=...&sig=...``) stays valid; such a URL needs no API key.
    url_ttl: int = 3600
    #: Hours a finished job (its row, images and Idempotency-Key) is kept after it ended; 0 keeps everything forever.
    keep_results_hours: float = 168.0
    #: Seconds between two clean-up sweeps of expired results (the first one runs at start).
    cleanup_interval: float = 600.0
    #: Most jobs a worker runs as one denoising batch (compatible text-to-image jobs queued one after the other).
    max_batch: int = 8
    #: Most images in one batch (memory): a batch stops growing before it would pass this.
    max_batch_images: int = 16
    #: Seconds a woken idle worker waits for more jobs to arrive before it claims (company for a batch).
    batch_wait: float = 0.02

    def __post_init__(self) -> None:
        # Accept str paths and lists from library callers; store Paths and tuples (the dataclass is frozen).
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        for name in ("models", "api_keys"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "basic_auth", tuple(tuple(pair) for pair in self.basic_auth))
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise InvalidRequest("port", f"must be between 0 and 65535, got {self.port!r}")
        for name, low in (
            ("max_queue", 1),
            ("workers", 1),
            ("max_body_bytes", 1024),
            ("job_retries", 0),
            ("max_batch", 1),
            ("max_batch_images", 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InvalidRequest(name, f"must be an integer of at least {low}, got {value!r}")
        if self.job_timeout is not None and not self.job_timeout > 0:
            raise InvalidRequest("job_timeout", f"must be a positive number of seconds, got {self.job_timeout!r}")
        if not isinstance(self.url_ttl, int) or isinstance(self.url_ttl, bool) or self.url_ttl < 1:
            raise InvalidRequest("url_ttl", f"must be a whole number of seconds of at least 1, got {self.url_ttl!r}")
        if self.url_ttl > MAX_URL_TTL:
            raise InvalidRequest("url_ttl", f"must be at most {MAX_URL_TTL} seconds (7 days), got {self.url_ttl}")
        if not _number(self.keep_results_hours) or not self.keep_results_hours >= 0:
            raise InvalidRequest(
                "keep_results_hours",
                f"must be a number of hours >= 0 (0 keeps results forever), got {self.keep_results_hours!r}",
            )
        if not _number(self.cleanup_interval) or not self.cleanup_interval > 0:
            raise InvalidRequest(
                "cleanup_interval", f"must be a positive number of seconds, got {self.cleanup_interval!r}"
            )
        if not _number(self.worker_lease) or not 1 <= self.worker_lease <= 3600:
            raise InvalidRequest("worker_lease", f"must be between 1 and 3600 seconds, got {self.worker_lease!r}")
        if not _number(self.batch_wait) or not 0 <= self.batch_wait <= 1:
            raise InvalidRequest("batch_wait", f"must be between 0 and 1 second, got {self.batch_wait!r}")
        if self.store_url is not None and not (
            isinstance(self.store_url, str) and self.store_url.startswith(STORE_URL_SCHEMES)
        ):
            raise InvalidRequest(
                "store",
                "must be a PostgreSQL URL, postgresql://USER:PASSWORD@HOST:PORT/DATABASE (or postgres://...), or left "
                f"out for the SQLite database in the data directory; got {redact_url(str(self.store_url))!r}",
            )
        if ":" not in self.engine_factory:
            raise InvalidRequest("engine_factory", f"must be 'module:callable', got {self.engine_factory!r}")
        if any(not key for key in self.api_keys):
            raise InvalidRequest("api_key", "API keys must not be empty")
        if any(not user or not password for user, password in self.basic_auth):
            raise InvalidRequest("api_auth", "must be USER:PASSWORD with both parts non-empty")
        if not self.auth_enabled and not is_loopback(self.host):
            raise InvalidRequest(
                "api_key",
                f"refusing to listen on {self.host} without authentication: anyone who can reach it could use it. "
                "Pass --api-key KEY (or IMAGEGEN_API_KEYS), or bind to 127.0.0.1",
            )

    @property
    def models_dir(self) -> Path | None:
        """The folder of served models (the engine's models directory)."""
        return self.engine.models_dir

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys or self.basic_auth)

    def warnings(self) -> tuple[str, ...]:
        """Settings that are allowed but probably not what the operator wants (printed in the banner and logged)."""
        found = []
        keep_seconds = self.keep_results_hours * 3600
        if 0 < keep_seconds < self.url_ttl:
            found.append(
                f"--keep-results {self.keep_results_hours:g} h is shorter than --url-ttl {self.url_ttl} s: image URLs "
                "may answer 404 before they expire (their job is deleted first)"
            )
        return tuple(found)

    @property
    def images_dir(self) -> Path:
        """Result PNGs (with infotext), ``<job id>-<index>.png``."""
        return self.data_dir / "images"

    @property
    def inputs_dir(self) -> Path:
        """Init images of queued jobs, ``<job id>.png``."""
        return self.data_dir / "inputs"

    @property
    def metrics_dir(self) -> Path:
        """The workers' Prometheus metrics files (emptied when the server starts)."""
        return self.data_dir / "metrics"

    @property
    def database(self) -> Path:
        """The SQLite job store (used unless ``store_url`` names another)."""
        return self.data_dir / "jobs.sqlite3"

    @property
    def store_is_shared(self) -> bool:
        """True when the job store may be shared with other servers (PostgreSQL): no server owns it alone."""
        return self.store_url is not None

    @property
    def url_key_path(self) -> Path:
        """The random key that signs image URLs (created once, mode 0600; delete it to revoke every URL)."""
        return self.data_dir / "url-signing.key"

    def worker_json(self) -> str:
        """The settings a worker needs, as JSON, without the API credentials (a worker never checks them). The one
        secret it keeps is ``store_url``'s password: a worker must open the job store itself."""
        # host/port are left out too: a worker serves no HTTP, and its defaults (loopback) pass the auth check.
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_FOR_WORKERS}
        data["limits"] = asdict(self.limits)
        data["engine"] = asdict(self.engine)
        return json.dumps(data, default=_json_default)

    @classmethod
    def from_worker_json(cls, text: str) -> ServerSettings:
        data: dict[str, Any] = json.loads(text)
        data["limits"] = Limits(**data["limits"])
        data["engine"] = EngineOptions(**data["engine"])
        data["models"] = tuple(data["models"])
        data["data_dir"] = Path(data["data_dir"])
        return cls(**data)


def _number(value: object) -> bool:
    """A finite int or float (not a bool): what a duration setting may be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_default(value: object) -> object:
    if isinstance(value, (Path, Enum)):
        return str(value.value if isinstance(value, Enum) else value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
