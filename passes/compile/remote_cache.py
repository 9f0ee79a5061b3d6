"""The remote tier of the compile cache: compiled regions shared through Redis.

An entry is a shared library that every machine reading it will execute, so
an entry is used only when all of these hold:

* its header is signed: HMAC-SHA256, keyed by a secret the fleet shares
  (``FXDELEGATE_CACHE_SECRET``), over the header's canonical JSON; the header
  names the content key it was stored for, the payload's sha256 and size,
  and the chunks holding the payload;
* the key it names is the key asked for (a valid entry copied under another
  key is refused);
* the payload, reassembled from its chunks, has that size and sha256.

Anything else (no signature, a wrong one, a truncated or altered chunk) is
ignored with one warning, and the region is compiled locally. Without a
secret a remote cache is refused, unless the user opts out (`insecure`).

Layout, under a prefix (``fxdelegate:``): ``entry:<key>`` is the signed
header, written last; ``chunk:<key>:<write>:<i>`` the payload's chunks
(each write has its own id, so two writers never mix chunks); ``claim:<key>``
the lock of the machine compiling `key`. Every stored value has a TTL.

Faults never fail a lowering: any Redis error (down, unreachable, slow, out
of memory, a connection dropped mid-transfer) warns once and turns the
remote tier off for the rest of the lowering, within the connect and
operation timeouts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fxdelegate.errors import InvalidArgumentError, RemoteCacheWarning

log = logging.getLogger("fxdelegate.cache")

ENTRY_FORMAT = 1
PREFIX = "fxdelegate:"

# Compare-and-set scripts: a claim is refreshed or released only by its holder.
_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class RemoteCacheOptions:
    """Where the remote tier lives and how it behaves.

    `secret` signs and checks entries (``FXDELEGATE_CACHE_SECRET`` when None);
    `insecure=True` accepts a cache without one (entries are then only
    checksummed: anyone who can write to the store can run code on readers).
    """

    url: str
    secret: str | None = None
    insecure: bool = False
    ttl_seconds: int = 7 * 24 * 3600
    chunk_bytes: int = 4 << 20
    connect_timeout: float = 2.0
    timeout: float = 10.0
    # A claim lives this long unless its holder refreshes it (a third of it).
    claim_seconds: float = 60.0
    # The longest a machine waits for another's compile before compiling itself.
    wait_seconds: float = 600.0
    poll_seconds: float = 0.2


def resolve_remote_cache(value: Any) -> RemoteCacheOptions | None:
    """`lower`'s `remote_cache` argument as options: a URL, options, None (then
    ``$FXDELEGATE_REMOTE_CACHE``) or False (off). Refuses a cache without a secret."""
    if value is False:
        return None
    if value is None:
        value = os.environ.get("FXDELEGATE_REMOTE_CACHE") or None
        if value is None:
            return None
    if isinstance(value, str):
        value = RemoteCacheOptions(value)
    if not isinstance(value, RemoteCacheOptions):
        raise InvalidArgumentError(
            "remote_cache must be a redis:// URL, a RemoteCacheOptions, None or False; "
            f"got {type(value).__name__}"
        )
    try:
        import redis  # noqa: F401  (fail before any work, not when the first region misses)
    except ImportError:
        raise InvalidArgumentError(
            "remote_cache needs the redis client: pip install 'fxdelegate[remote-cache]'"
        ) from None
    if not value.url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidArgumentError(
            f"remote_cache must be a redis://, rediss:// or unix:// URL, got {value.url!r}"
        )
    secret = value.secret if value.secret is not None else os.environ.get("FXDELEGATE_CACHE_SECRET")
    insecure = value.insecure or os.environ.get("FXDELEGATE_CACHE_INSECURE") == "1"
    if not secret and not insecure:
        raise InvalidArgumentError(
            "a remote compile cache needs a shared secret to sign and check its entries "
            "(they are native code every reader runs): set FXDELEGATE_CACHE_SECRET, or pass "
            "RemoteCacheOptions(url, secret=...); RemoteCacheOptions(url, insecure=True) or "
            "FXDELEGATE_CACHE_INSECURE=1 accepts unsigned entries"
        )
    for name in ("ttl_seconds", "chunk_bytes", "claim_seconds", "wait_seconds", "timeout"):
        if not getattr(value, name) > 0:
            raise InvalidArgumentError(f"RemoteCacheOptions.{name} must be > 0")
    return RemoteCacheOptions(**{**value.__dict__, "secret": secret or None, "insecure": insecure})


@dataclass
class RemoteEntry:
    payload: bytes
    meta: dict[str, Any]


class RemoteCache:
    """One lowering's connection to the remote store (see the module docstring)."""

    def __init__(self, options: RemoteCacheOptions) -> None:
        try:
            import redis
        except ImportError:
            raise InvalidArgumentError(
                "remote_cache needs the redis client: pip install 'fxdelegate[remote-cache]'"
            ) from None
        self.options = options
        self._redis = redis
        self._client = redis.Redis.from_url(
            options.url,
            socket_connect_timeout=options.connect_timeout,
            socket_timeout=options.timeout,
            retry_on_timeout=False,
        )
        self._key = options.secret.encode() if options.secret else None
        self._token = uuid.uuid4().hex  # names this process's claims
        self._warned: set[str] = set()
        self._logged: set[tuple[str, str]] = set()
        self.down = False
        self.published = 0
        self.fetched = 0

    # -- entries -------------------------------------------------------------------

    def get(self, key: str) -> RemoteEntry | None:
        """The checked entry for `key`, or None (absent, refused, or the store is down)."""
        raw = self._call(self._client.get, _entry(key))
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            header, signature = record["header"], record.get("hmac")
        except (ValueError, TypeError, KeyError):
            return self._refuse(key, "its header is not valid JSON")
        if self._key is not None:
            if not isinstance(signature, str):
                return self._refuse(key, "it is not signed")
            if not hmac.compare_digest(signature, self._sign(header)):
                return self._refuse(
                    key, "its signature does not match (another secret, or altered)"
                )
        try:
            if header["format"] != ENTRY_FORMAT:
                return self._refuse(key, f"its format is {header['format']!r}")
            if header["key"] != key:
                return self._refuse(key, f"it was stored for another key ({header['key'][:16]})")
            count, write = int(header["chunks"]), str(header["write"])
            size, digest = int(header["size"]), str(header["sha256"])
        except (KeyError, TypeError, ValueError):
            return self._refuse(key, "its header is incomplete")
        names = [_chunk(key, write, i) for i in range(count)]
        chunks = self._call(self._client.mget, names) if names else []
        if chunks is None:
            return None
        if any(c is None for c in chunks):
            return self._refuse(key, "some of its chunks are missing")
        payload = b"".join(chunks)
        if len(payload) != size or hashlib.sha256(payload).hexdigest() != digest:
            return self._refuse(key, "its payload is truncated or altered")
        self.fetched += 1
        return RemoteEntry(payload, dict(header.get("meta", {})))

    def has(self, key: str) -> bool:
        return bool(self._call(self._client.exists, _entry(key)))

    def put(self, key: str, payload: bytes, meta: dict[str, Any]) -> bool:
        """Publish `payload` under `key`: chunks first, the signed header last."""
        if self.down:
            return False
        write = uuid.uuid4().hex[:16]
        step = self.options.chunk_bytes
        pieces = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
        header = {
            "format": ENTRY_FORMAT,
            "key": key,
            "write": write,
            "chunks": len(pieces),
            "size": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "meta": meta,
            "created": time.time(),
        }
        record: dict[str, Any] = {"header": header}
        if self._key is not None:
            record["hmac"] = self._sign(header)
        ttl = int(self.options.ttl_seconds)

        def publish() -> bool:
            pipe = self._client.pipeline(transaction=False)
            for i, piece in enumerate(pieces):
                pipe.set(_chunk(key, write, i), piece, ex=ttl)
            pipe.execute()
            # Only a complete set of chunks gets a header: readers never see half an entry.
            self._client.set(_entry(key), json.dumps(record, sort_keys=True), ex=ttl)
            return True

        done = bool(self._call(publish))
        self.published += done
        return done

    # -- claims: one compile per fleet ---------------------------------------------------

    def claim(self, key: str) -> bool:
        """Take the right to compile `key`; False when another machine holds it."""
        ms = int(self.options.claim_seconds * 1000)
        return bool(self._call(self._client.set, _claim(key), self._token, nx=True, px=ms))

    def release(self, key: str) -> None:
        self._call(self._client.eval, _RELEASE, 1, _claim(key), self._token)

    def is_claimed(self, key: str) -> bool:
        return bool(self._call(self._client.exists, _claim(key)))

    @contextmanager
    def holding(self, keys: list[str]) -> Iterator[None]:
        """Keep `keys` claimed while the block runs (a compile can outlast a claim)."""
        stop = threading.Event()
        ms = int(self.options.claim_seconds * 1000)

        def refresh() -> None:
            while not stop.wait(self.options.claim_seconds / 3):
                for key in keys:
                    self._call(self._client.eval, _REFRESH, 1, _claim(key), self._token, ms)

        thread = threading.Thread(target=refresh, name="fxdelegate-claims", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            for key in keys:
                self.release(key)

    # -- the store as a whole ----------------------------------------------------------

    def stats(self) -> dict[str, int]:
        entries = chunks = size = 0
        for name in self._client.scan_iter(match=PREFIX + "*", count=500):
            name = name.decode() if isinstance(name, bytes) else name
            if name.startswith(PREFIX + "entry:"):
                entries += 1
            elif name.startswith(PREFIX + "chunk:"):
                chunks += 1
                size += int(self._client.strlen(name))
        return {"entries": entries, "chunks": chunks, "bytes": size}

    def clear(self) -> int:
        removed = 0
        for name in self._client.scan_iter(match=PREFIX + "*", count=500):
            removed += int(self._client.delete(name))
        return removed

    # -- helpers -------------------------------------------------------------------------

    def _sign(self, header: dict[str, Any]) -> str:
        assert self._key is not None
        blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._key, blob, hashlib.sha256).hexdigest()

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            return None
        try:
            return fn(*args, **kwargs)
        except (self._redis.RedisError, OSError) as exc:
            self.down = True
            self._warn(
                "down",
                f"the remote compile cache at {_safe_url(self.options.url)} failed "
                f"({type(exc).__name__}: {str(exc)[:200]}); compiling locally for the rest "
                "of this lowering",
            )
            return None

    def _refuse(self, key: str, why: str) -> None:
        message = f"ignored remote compile-cache entry {key[:16]}: {why}; compiling it locally"
        if (key, why) not in self._logged:  # a refused entry is looked at more than once
            self._logged.add((key, why))
            log.warning(message)
        self._warn(f"refused:{why}", message, logged=True)
        return None

    def _warn(self, kind: str, message: str, logged: bool = False) -> None:
        """One warning per kind of fault per lowering (and one log line per fault)."""
        if not logged:
            log.warning(message)
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, RemoteCacheWarning, stacklevel=3)


def _entry(key: str) -> str:
    return f"{PREFIX}entry:{key}"


def _chunk(key: str, write: str, index: int) -> str:
    return f"{PREFIX}chunk:{key}:{write}:{index}"


def _claim(key: str) -> str:
    return f"{PREFIX}claim:{key}"


def _safe_url(url: str) -> str:
    """The URL without a password."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
