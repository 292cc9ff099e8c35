"""Signed image URLs: ``/v1/images/{name}?expires=UNIX&sig=HEX`` can be fetched without the API key until it expires.

OpenAI clients asking for ``response_format="url"`` expect a URL they can hand to anything (a browser, an ``<img>``
tag) for about an hour, as OpenAI's own image URLs are. The server signs ``(name, expires)`` with HMAC-SHA256 under a
random key kept in the data directory, so URLs survive a restart and a leaked URL opens exactly one image for a
limited time. The key is never derived from the API keys: rotating a key does not revoke URLs, and a URL reveals
nothing about a key. Deleting the key file (then restarting) revokes every URL handed out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

from imagegen.errors import ImagegenError
from imagegen.server.errors import URLExpired, URLSignatureInvalid
from imagegen.server.settings import MAX_URL_TTL

logger = logging.getLogger("imagegen.server")

KEY_BYTES = 32
#: The query parameters of a signed URL.
EXPIRES_PARAM = "expires"
SIGNATURE_PARAM = "sig"
#: Domain separation: a signature made here can never be valid for another use of the same key.
_PURPOSE = b"imagegen image url v1"
_EXPIRES = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")


class URLKeyError(ImagegenError):
    """The URL signing key file exists but is not a key this server wrote."""

    code = "url_key_invalid"


@dataclass(frozen=True, kw_only=True)
class SignedQuery:
    expires: int
    sig: str

    @property
    def query(self) -> str:
        """``expires=...&sig=...``, to append to the image's URL after ``?``."""
        return urlencode({EXPIRES_PARAM: self.expires, SIGNATURE_PARAM: self.sig})


class URLSigner:
    """Signs and verifies ``(image name, expiry)`` pairs; ``clock`` gives unix seconds (tests move it)."""

    def __init__(self, key: bytes, *, ttl: int, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError(f"the URL signing key must be at least 16 bytes, got {len(key)}")
        if not 1 <= ttl <= MAX_URL_TTL:
            raise ValueError(f"the URL lifetime must be between 1 and {MAX_URL_TTL} seconds, got {ttl}")
        self._key = key
        self.ttl = ttl
        self._clock = clock

    def _digest(self, name: str, expires: str) -> str:
        # Length-prefixed, so no (name, expires) pair can be re-split into another valid pair.
        message = b"%s\n%d:%s\n%s" % (_PURPOSE, len(name.encode()), name.encode(), expires.encode())
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, name: str) -> SignedQuery:
        """A signature for ``name`` valid for ``ttl`` seconds from now."""
        expires = int(self._clock()) + self.ttl
        if not _EXPIRES.fullmatch(str(expires)):
            # Only a broken clock gets here (the TTL is bounded): never hand out a URL that verify() would refuse.
            raise ValueError(f"cannot sign a URL expiring at {expires}: the clock reads {self._clock()!r}")
        return SignedQuery(expires=expires, sig=self._digest(name, str(expires)))

    def verify(self, name: str, *, expires: str | None, sig: str | None) -> None:
        """Return if ``sig`` signs exactly ``(name, expires)`` and ``expires`` has not passed, else raise
        :class:`URLSignatureInvalid` or :class:`URLExpired` (403). The signature is checked first, so an altered
        ``expires`` is reported as invalid, never as merely expired."""
        if expires is None or sig is None or not _EXPIRES.fullmatch(expires) or not _SIGNATURE.fullmatch(sig):
            raise URLSignatureInvalid(
                f"invalid image URL: a signed URL carries both '{EXPIRES_PARAM}' (unix seconds) and "
                f"'{SIGNATURE_PARAM}' (64 hex digits) exactly as the server gave them"
            )
        if not hmac.compare_digest(self._digest(name, expires), sig.lower()):
            raise URLSignatureInvalid(
                "invalid image URL signature: the URL was altered, belongs to another image, or was signed with a "
                "key this server no longer has; ask for a fresh URL"
            )
        deadline = int(expires)
        if self._clock() > deadline:
            when = datetime.fromtimestamp(deadline, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise URLExpired(
                f"this image URL expired at {when}; get a fresh one (GET /v1/jobs/{{id}} lists new URLs) or fetch "
                "the image with the API key"
            )


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``; if there is none, a new random one written there atomically with mode 0600.

    Raises :class:`URLKeyError` if the file holds something else than a key."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(KEY_BYTES)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")
    # O_EXCL and mode 0600 at creation: the key is never readable by others, not even for an instant.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        # Atomic and exclusive: a crash leaves either no key or the whole key, never a short one, and of servers
        # starting at once on one data directory (Ray ingress replicas, servers sharing a store), the first key wins.
        try:
            os.link(partial, path)
        except FileExistsError:
            return _read_key(path)
    finally:
        partial.unlink(missing_ok=True)
    logger.info("created a new image URL signing key", extra={"path": str(path)})
    return key


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise URLKeyError(
            f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte URL signing key; delete it and restart to make "
            "a new one (image URLs handed out before stop working)"
        )
    if path.stat().st_mode & 0o077:
        logger.warning("the image URL signing key is readable by other users; chmod 600 it", extra={"path": str(path)})
    return key
