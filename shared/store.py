"""Object storage for every service: one code path for `file://` folders and `s3://` buckets.

`Layout` is the only place that knows where things live, so no service builds a key by hand.
Every write is atomic: a reader sees the old object, or the whole new one, never a part.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlparse

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from shared.settings import Settings, get_settings

_UNSAFE_NAME = re.compile(r"[^\w.\-]+", re.UNICODE)


class StoreError(RuntimeError):
    """The store could not be reached or refused an operation."""


class Layout:
    """Where each kind of object lives, relative to the store root."""

    @staticmethod
    def raw(sha256: str, filename: str) -> str:
        return f"raw/{sha256}/{safe_filename(filename)}"

    @staticmethod
    def batch_upload(sha256: str, filename: str) -> str:
        """A file uploaded for a batch job: the only kind of key a batch job may name."""
        return f"raw/batch/{sha256}/{safe_filename(filename)}"

    @staticmethod
    def datasets_dir() -> str:
        return "datasets"

    @staticmethod
    def dataset_dir(dataset_id: str) -> str:
        return f"datasets/{dataset_id}"

    @staticmethod
    def dataset_clean(dataset_id: str) -> str:
        return f"datasets/{dataset_id}/clean.parquet"

    @staticmethod
    def dataset_rejected(dataset_id: str) -> str:
        return f"datasets/{dataset_id}/rejected.parquet"

    @staticmethod
    def dataset_manifest(dataset_id: str) -> str:
        return f"datasets/{dataset_id}/manifest.json"

    @staticmethod
    def dataset_status(dataset_id: str) -> str:
        return f"datasets/{dataset_id}/status.json"

    @staticmethod
    def dataset_request(dataset_id: str) -> str:
        """What an ingest was asked to do: resubmitting a failed one reads it."""
        return f"datasets/{dataset_id}/request.json"

    @staticmethod
    def distill_runs_dir(dataset_id: str) -> str:
        return f"datasets/{dataset_id}/distill"

    @staticmethod
    def distill_run(dataset_id: str, run_id: str, filename: str) -> str:
        return f"datasets/{dataset_id}/distill/{run_id}/{filename}"

    @staticmethod
    def teacher_cache(cache_key: str) -> str:
        return f"cache/teacher/{cache_key[:2]}/{cache_key}.json"

    @staticmethod
    def adapter(name: str, version: str, filename: str) -> str:
        return f"adapters/{name}/{version}/{filename}"

    @staticmethod
    def adapter_dir(name: str) -> str:
        return f"adapters/{name}"

    @staticmethod
    def adapter_alias(name: str) -> str:
        return f"adapters/{name}/alias.json"

    @staticmethod
    def train_runs_dir() -> str:
        return "train-runs"

    @staticmethod
    def train_run(train_run_id: str, filename: str) -> str:
        return f"train-runs/{train_run_id}/{filename}"

    @staticmethod
    def batches_dir() -> str:
        return "batches"

    @staticmethod
    def batch(job_id: str, filename: str) -> str:
        return f"batches/{job_id}/{filename}"

    @staticmethod
    def labelset_dir(name: str) -> str:
        return f"labelsets/{name}"

    @staticmethod
    def labelset(name: str, version: str, filename: str) -> str:
        return f"labelsets/{name}/{version}/{filename}"


def safe_filename(filename: str) -> str:
    """The base name of an uploaded file, reduced to characters safe in any store key."""
    base = PurePosixPath(filename.replace("\\", "/")).name
    cleaned = _UNSAFE_NAME.sub("_", base).strip("._")
    return cleaned or "upload"


class Store:
    """A folder or bucket addressed by keys such as `datasets/ds-1/manifest.json`."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        key: str | None = None,
        secret: str | None = None,
    ) -> None:
        parsed = urlparse(url)
        self.url = url.rstrip("/")
        self.protocol = parsed.scheme or "file"
        if self.protocol == "file":
            root = Path((parsed.netloc + parsed.path) or ".").expanduser().resolve()
            self.fs = fsspec.filesystem("file", auto_mkdir=True)
            self.root = root.as_posix()
        elif self.protocol == "s3":
            options: dict[str, Any] = {}
            if endpoint_url:
                options["endpoint_url"] = endpoint_url
            if key and secret:
                options.update(key=key, secret=secret)
            self.fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
            self.root = (parsed.netloc + parsed.path).rstrip("/")
        else:
            raise StoreError(f"unsupported store URL {url!r}: use file://PATH or s3://BUCKET")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Store:
        settings = settings or get_settings()
        return cls(
            settings.store_url,
            endpoint_url=settings.s3_endpoint_url,
            key=settings.s3_access_key.get_secret_value() if settings.s3_access_key else None,
            secret=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
        )

    def _path(self, key: str) -> str:
        key = key.strip("/")
        if not key or ".." in key.split("/"):
            raise StoreError(f"invalid store key {key!r}")
        return f"{self.root}/{key}"

    def uri(self, key: str) -> str:
        """The full URL of a key, for reports and logs."""
        return f"{self.protocol}://{self._path(key)}"

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def read_bytes(self, key: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StoreError(f"cannot read {self.uri(key)}: {exc}") from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write an object atomically (temporary name then rename, or a single S3 put)."""
        path = self._path(key)
        try:
            if self.protocol == "file":
                tmp = f"{path}.tmp-{uuid.uuid4().hex}"
                self.fs.pipe_file(tmp, data)
                self.fs.mv(tmp, path)
            else:
                self.fs.pipe_file(path, data)
        except OSError as exc:
            raise StoreError(f"cannot write {self.uri(key)}: {exc}") from exc

    def write_parts(self, key: str, parts: Iterable[bytes]) -> None:
        """Write an object from a stream of parts without holding it whole, still atomically:
        a temporary file renamed into place, or an S3 multipart upload completed at close."""
        path = self._path(key)
        target = f"{path}.tmp-{uuid.uuid4().hex}" if self.protocol == "file" else path
        try:
            if self.protocol == "file":
                self.fs.makedirs(self.fs._parent(path), exist_ok=True)
            with self.fs.open(target, "wb") as handle:
                for part in parts:
                    handle.write(part)
            if self.protocol == "file":
                self.fs.mv(target, path)
        except OSError as exc:
            if self.protocol == "file" and self.fs.exists(target):
                self.fs.rm(target)
            raise StoreError(f"cannot write {self.uri(key)}: {exc}") from exc

    def create(self, key: str, data: bytes) -> bool:
        """Write an object only if the key is free: an atomic claim; False when it was taken.

        Readers see the whole object or none: a local file is written aside and hard-linked
        into place (the link fails if the name exists); S3 puts it with `If-None-Match: *`.
        """
        path = self._path(key)
        try:
            if self.protocol == "file":
                tmp = f"{path}.tmp-{uuid.uuid4().hex}"
                self.fs.pipe_file(tmp, data)
                try:
                    os.link(tmp, path)
                finally:
                    os.unlink(tmp)
            else:
                self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot write {self.uri(key)}: {exc}") from exc
        return True

    @contextmanager
    def open_read(self, key: str) -> Iterator[IO[bytes]]:
        """A readable binary stream, for objects too large to hold twice in memory."""
        with self.fs.open(self._path(key), "rb") as handle:
            yield handle

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, value: Any) -> None:
        self.write_bytes(key, json.dumps(value, ensure_ascii=False, indent=2).encode("utf-8"))

    def read_parquet(self, key: str) -> pa.Table:
        with self.open_read(key) as handle:
            return pq.read_table(handle)

    def write_parquet(self, key: str, table: pa.Table) -> None:
        if self.protocol != "file":
            sink = io.BytesIO()
            pq.write_table(table, sink, compression="zstd")
            self.write_bytes(key, sink.getvalue())
            return
        # Locally, stream into a temporary file instead of holding the encoded bytes in memory.
        path = self._path(key)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            self.fs.makedirs(self.fs._parent(path), exist_ok=True)
            pq.write_table(table, tmp, compression="zstd")
            self.fs.mv(tmp, path)
        except OSError as exc:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise StoreError(f"cannot write {self.uri(key)}: {exc}") from exc

    def list(self, prefix: str) -> list[str]:
        """Keys below `prefix`, recursively, relative to the store root, sorted."""
        base = self._path(prefix)
        if not self.fs.exists(base):
            return []
        found = self.fs.find(base)
        offset = len(self.root) + 1
        return sorted(p[offset:] if p.startswith(self.root) else p for p in found)

    def children(self, prefix: str) -> list[str]:
        """Names of the immediate sub-folders of `prefix`."""
        base = self._path(prefix)
        if not self.fs.exists(base):
            return []
        entries = self.fs.ls(base, detail=True)
        return sorted(
            PurePosixPath(e["name"]).name for e in entries if e.get("type") == "directory"
        )

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
