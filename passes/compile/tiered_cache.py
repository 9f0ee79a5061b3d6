"""Where a compiled region comes from: the local folder, the remote store, or a compile.

Two tiers: the local folder first (:mod:`.local_cache`), then the remote
store (:mod:`.remote_cache`). A remote hit is written to the local folder; a
fresh compile is stored in both; a local hit the store lacks (the folder was
filled before the machine joined the fleet, or the store's copy expired) is
published, so that the fleet compiles a region once whichever way it was made.
"""

from __future__ import annotations

import os
import tempfile

from fxdelegate.runtime.backend import RegionArtifact

from .local_cache import CompileCache
from .remote_cache import RemoteCache

LOCAL_HIT = "local hit"
SHARED = "local hit, published"
REMOTE_HIT = "remote hit"
COMPILED = "compiled"
PUBLISHED = "compiled, published"


class RegionCache:
    def __init__(
        self,
        local: CompileCache | None,
        remote: RemoteCache | None,
        backend_id: str,
        workdir: str,
    ) -> None:
        self.local = local
        self.remote = remote
        self.backend_id = backend_id
        self.workdir = workdir  # where remote hits land when there is no local folder

    def lookup(self, key: str) -> tuple[RegionArtifact, str] | None:
        """The artifact for `key` and the tier it came from, or None."""
        if self.local is not None:
            entry = self.local.get(key)
            if entry is not None:
                shared = self._share(key, entry.package_path, entry.meta)
                artifact = self._artifact(key, entry.package_path, entry.meta)
                return artifact, SHARED if shared else LOCAL_HIT
        artifact = self.lookup_remote(key)
        return (artifact, REMOTE_HIT) if artifact is not None else None

    def lookup_remote(self, key: str) -> RegionArtifact | None:
        if self.remote is None:
            return None
        entry = self.remote.get(key)
        if entry is None:
            return None
        fd, path = tempfile.mkstemp(suffix=".pt2", dir=self.workdir)
        with os.fdopen(fd, "wb") as f:
            f.write(entry.payload)
        if self.local is not None:
            stored = self.local.put(key, path, entry.meta)
            os.unlink(path)
            path = stored.package_path
        return self._artifact(key, path, entry.meta)

    def store(self, key: str, artifact: RegionArtifact) -> str:
        """Keep a fresh compile in both tiers; says where it went. `artifact.package_path`
        then points into the local folder (when there is one)."""
        if artifact.package_path is None:
            return COMPILED
        meta = {
            "backend": self.backend_id,
            "package_key": artifact.package_key,
            # The backend's own meta (its device, say) comes back with a hit.
            "backend_meta": artifact.meta,
        }
        if self.local is not None:
            artifact.package_path = self.local.put(key, artifact.package_path, meta).package_path
        if self.remote is not None and not self.remote.down:
            with open(artifact.package_path, "rb") as f:
                if self.remote.put(key, f.read(), meta):
                    return PUBLISHED
        return COMPILED

    def _share(self, key: str, path: str, meta: dict) -> bool:
        """Publish a local entry the remote store lacks; True when it did."""
        if self.remote is None or self.remote.down or self.remote.has(key):
            return False
        with open(path, "rb") as f:
            return self.remote.put(key, f.read(), meta)

    def _artifact(self, key: str, path: str, meta: dict) -> RegionArtifact:
        return RegionArtifact(
            key,
            self.backend_id,
            package_path=path,
            package_key=meta.get("package_key"),
            meta=dict(meta.get("backend_meta", {})),
        )
