"""A content-addressed cache of compiled regions, safe to share between processes.

Layout: ``<cache_dir>/<key[:2]>/<key>/`` holding ``package.pt2`` (the compiled
region, weights not included) and ``entry.json`` (its sha256, size, backend
and torch version). An entry is written in a private temporary folder and
renamed into place. The rename is atomic, so a reader sees a whole entry or
none. When two processes race, the second rename fails and that process
keeps using its own copy. On every read the package's checksum is verified.
A damaged entry is moved aside, deleted, and reported as a miss, and the
caller rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass

log = logging.getLogger("fxdelegate.cache")

ENTRY_FILE = "entry.json"
PACKAGE_FILE = "package.pt2"


def default_cache_dir() -> str:
    env = os.environ.get("FXDELEGATE_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fxdelegate")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class CacheEntry:
    key: str
    package_path: str
    meta: dict


class CompileCache:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = os.path.abspath(os.fspath(root))
        os.makedirs(self.root, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def _dir(self, key: str) -> str:
        return os.path.join(self.root, key[:2], key)

    def get(self, key: str) -> CacheEntry | None:
        """The valid entry for `key`, or None (a damaged entry is removed)."""
        folder = self._dir(key)
        if not os.path.isdir(folder):
            self.misses += 1
            return None
        try:
            with open(os.path.join(folder, ENTRY_FILE)) as f:
                meta = json.load(f)
            package = os.path.join(folder, PACKAGE_FILE)
            if meta.get("key") != key or _sha256(package) != meta.get("sha256"):
                raise ValueError("checksum mismatch")
            if not meta.get("package_key"):
                raise ValueError("entry does not name its compiled model")
        except (OSError, ValueError) as exc:
            log.warning(
                "discarding damaged compile-cache entry %s (%s); it will be rebuilt", key[:16], exc
            )
            self._discard(folder)
            self.misses += 1
            return None
        self.hits += 1
        return CacheEntry(key, package, meta)

    def put(self, key: str, package_path: str, meta: dict) -> CacheEntry:
        """Store a copy of `package_path` under `key`; returns the entry now in the cache."""
        parent = os.path.dirname(self._dir(key))
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{key[:16]}-", dir=parent)
        try:
            shutil.copyfile(package_path, os.path.join(staging, PACKAGE_FILE))
            record = {
                **meta,
                "key": key,
                "sha256": _sha256(os.path.join(staging, PACKAGE_FILE)),
                "size": os.path.getsize(package_path),
                "created": time.time(),
            }
            with open(os.path.join(staging, ENTRY_FILE), "w") as f:
                json.dump(record, f)
            try:
                os.rename(staging, self._dir(key))
            except OSError:
                # Another process stored the same key first; theirs is as good as ours.
                existing = self.get(key)
                if existing is not None:
                    return existing
                os.rename(staging, self._dir(key))
            return CacheEntry(key, os.path.join(self._dir(key), PACKAGE_FILE), record)
        finally:
            if os.path.isdir(staging):
                shutil.rmtree(staging, ignore_errors=True)

    def stats(self) -> dict[str, int]:
        """Entries and their bytes in the folder."""
        entries = size = 0
        for shard in os.scandir(self.root):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                package = os.path.join(entry.path, PACKAGE_FILE)
                if entry.is_dir() and os.path.isfile(package):
                    entries += 1
                    size += os.path.getsize(package)
        return {"entries": entries, "bytes": size}

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        removed = self.stats()["entries"]
        for shard in os.scandir(self.root):
            if shard.is_dir() and len(shard.name) == 2:
                shutil.rmtree(shard.path, ignore_errors=True)
        return removed

    def _discard(self, folder: str) -> None:
        trash = f"{folder}.discarded-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(folder, trash)
        except OSError:
            return  # someone else is already replacing it
        shutil.rmtree(trash, ignore_errors=True)
