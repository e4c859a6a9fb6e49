"""Exports received by an API process: checked cheaply, hashed and stored in parts, never parsed.

A hostile file (a zip bomb, a billion run-length-encoded rows) must not take an API's memory, so
the APIs only run `check_export` (a file's first megabyte, zip directory or Parquet footer) and
read the upload in 1 MiB parts from where the multipart parser spooled it to disk; the workers
parse it under the same limits (`read_export`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from shared.store import Layout, Store
from shared.tables import check_export

PART_BYTES = 1 << 20


@dataclass(frozen=True)
class Upload:
    """An export in the store, checked: where it is, its content hash and size."""

    key: str
    sha256: str
    size: int


def _parts(handle: IO[bytes]) -> functools.partial[bytes]:
    handle.seek(0)
    return functools.partial(handle.read, PART_BYTES)


def _digest(handle: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for part in iter(_parts(handle), b""):
        digest.update(part)
        size += len(part)
    return digest.hexdigest(), size


def store_upload(
    store: Store,
    handle: IO[bytes],
    filename: str,
    *,
    text_column: str | None,
    key_for: Callable[[str, str], str] = Layout.raw,
) -> Upload:
    """Check an uploaded export and copy it to `key_for(sha256, filename)` unless it is there.

    Raises `ExportFileError` before anything is written."""
    check_export(handle, filename, text_column=text_column)
    sha256, size = _digest(handle)
    key = key_for(sha256, filename)
    if not store.exists(key):
        store.write_parts(key, iter(_parts(handle), b""))
    return Upload(key, sha256, size)


def check_stored(store: Store, key: str, *, text_column: str | None) -> Upload:
    """Check an export already in the store the same way, read in parts."""
    with store.open_read(key) as handle:
        check_export(handle, key.rsplit("/", 1)[-1], text_column=text_column)
        sha256, size = _digest(handle)
    return Upload(key, sha256, size)
