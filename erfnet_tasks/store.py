"""The content-addressed store behind the export, preprocessing and compile caches.

An entry is a folder ``<root>/<key>`` whose key is a hash of what went into it (content, never mtimes).
It holds its artifact and ``entry.json``: the artifact's file name and sha256 plus whatever the
builder recorded. ``fetch_or_build`` returns an entry whose artifact still hashes to its record, or
builds it: into a staging folder renamed into place (an entry appears whole or not at all), under an
exclusive ``flock`` on ``<root>/.<key>.lock`` so two workers sharing the cache never build the same
entry at once (the second one finds the first one's entry). Retention removes entries unused for a
while: a hit touches ``entry.json``.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fsutil import read_json, sha256_file, write_json_atomic

log = logging.getLogger(__name__)

RECORD_NAME = "entry.json"
KEY_LENGTH = 24


def content_key(parts: Sequence[object]) -> str:
    """A store key from the things an entry is a function of (hashes, versions, flags)."""
    return hashlib.sha256("\n".join(map(str, parts)).encode()).hexdigest()[:KEY_LENGTH]


@dataclass(frozen=True)
class Entry:
    folder: Path
    artifact: Path  # the entry's file, verified by its sha256
    sha256: str
    meta: dict[str, Any]  # what the builder recorded beside it
    hit: bool  # taken from the store, not built by this call


# A builder writes its artifact into the (empty) staging folder it is given and returns the artifact's
# path there with what to record beside it.
Builder = Callable[[Path], tuple[Path, dict[str, Any]]]


class Store:
    def __init__(self, root: Path, what: str) -> None:
        self.root = Path(root)
        self.what = what  # "the export cache", for messages

    def folder(self, key: str) -> Path:
        return self.root / key

    @contextmanager
    def locked(self, key: str) -> Iterator[Path]:
        """The entry's folder, held exclusively (against other processes and hosts on the same file system)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{key}.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield self.folder(key)
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def get(self, key: str) -> Entry | None:
        """The entry if its artifact still hashes to the sha256 it recorded, else None (rebuild it)."""
        folder = self.folder(key)
        record_path = folder / RECORD_NAME
        if not record_path.is_file():
            return None
        data = read_json(record_path, f"a record of {self.what}")
        name = data.get("artifact") if isinstance(data, dict) else None
        artifact = folder / str(name)
        if (
            not isinstance(data, dict)
            or not name
            or not artifact.is_file()
            or sha256_file(artifact) != data.get("sha256")
        ):
            log.warning("%s entry %s does not match its recorded sha256: rebuilding it", self.what, folder)
            return None
        os.utime(record_path)  # marks the entry used now: retention removes only unused ones
        return Entry(folder, artifact, str(data["sha256"]), dict(data.get("meta") or {}), hit=True)

    def fetch_or_build(self, key: str, build: Builder) -> Entry:
        with self.locked(key) as folder:
            found = self.get(key)
            if found is not None:
                return found
            staging = folder.with_name(folder.name + ".building")
            shutil.rmtree(staging, ignore_errors=True)  # a killed build's (we hold the lock)
            staging.mkdir(parents=True)
            built, meta = build(staging)
            name = Path(built).relative_to(staging).as_posix()
            digest = sha256_file(built)
            write_json_atomic(staging / RECORD_NAME, {"artifact": name, "sha256": digest, "meta": meta})
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staging, folder)
            return Entry(folder, folder / name, digest, meta, hit=False)
