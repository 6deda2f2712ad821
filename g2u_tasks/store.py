"""Thought store (DESIGN §4): content-addressed blobs, a Delta manifest, run files.

Layout under the root (any fsspec URI: file://, bare local path, s3://):
  thoughts/blobs/<sha[:2]>/<sha>.png   written once
  thoughts/manifest/                   Delta table, THOUGHTS_SCHEMA, one commit per batch
  runs/<run_id>/<name>.parquet|.json

The manifest is read with polars.read_delta only: with deltalake 1.6.6 + pyarrow 26,
DeltaTable.to_pyarrow_table()/to_pandas() can abort the process at exit (FACTS.md).
"""
from __future__ import annotations

import io
import json
import os
import re
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from g2u_tasks.records import THOUGHTS_SCHEMA, sha256_hex

BLOBS_DIR = "thoughts/blobs"
MANIFEST_DIR = "thoughts/manifest"
RUNS_DIR = "runs"
STATUSES = ("ok", "failed")

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
# Keys delta-rs itself puts in a history entry; anything else is custom commit metadata.
_HISTORY_KEYS = {
    "version", "timestamp", "operation", "operationParameters", "operationMetrics",
    "engineInfo", "clientVersion", "readVersion", "isBlindAppend", "userMetadata",
}


def _delta_options(fs_options: dict[str, Any], endpoint: str | None) -> dict[str, str]:
    """Translate s3fs-style options to deltalake (object_store) options."""
    client = fs_options.get("client_kwargs") or {}
    out: dict[str, str] = {}
    pairs = {
        "AWS_ACCESS_KEY_ID": fs_options.get("key"),
        "AWS_SECRET_ACCESS_KEY": fs_options.get("secret"),
        "AWS_SESSION_TOKEN": fs_options.get("token"),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": client.get("region_name") or fs_options.get("region"),
    }
    out.update({k: str(v) for k, v in pairs.items() if v})
    if endpoint and endpoint.startswith("http://"):
        out["AWS_ALLOW_HTTP"] = "true"
    out["aws_conditional_put"] = "etag"  # safe concurrent commits without a lock table
    return out


class ThoughtStore:
    def __init__(self, root: str, storage_options: dict[str, Any] | None = None):
        opts = dict(storage_options or {})
        # Upper-case or aws_* keys are deltalake-only overrides; the rest go to fsspec.
        delta_extra = {k: str(v) for k, v in opts.items() if k.isupper() or k.startswith("aws_")}
        fs_opts = {k: v for k, v in opts.items() if k not in delta_extra}
        root = str(root)
        if "://" not in root or root.startswith("file://"):
            path = root[len("file://"):] if root.startswith("file://") else root
            self._local = os.path.abspath(os.path.expanduser(path or "."))
            self.root = "file://" + self._local
            self.fs = fsspec.filesystem("file")
            self._base = self._local
            self._delta_opts: dict[str, str] | None = None
        else:
            protocol, _, rest = root.partition("://")
            self._local = None
            self.root = f"{protocol}://{rest.strip('/')}"
            self.fs = fsspec.filesystem(protocol, **fs_opts)
            self._base = rest.strip("/")
            endpoint = fs_opts.get("endpoint_url") or (fs_opts.get("client_kwargs") or {}).get("endpoint_url")
            self._delta_opts = _delta_options(fs_opts, endpoint) if protocol in ("s3", "s3a") else {}
            self._delta_opts.update(delta_extra)

    # ---- paths -----------------------------------------------------------------
    def _fs_path(self, rel: str) -> str:
        return f"{self._base}/{rel}"

    def location(self, rel: str) -> str:
        """Where `rel` lives, as readers want it: absolute local path, or s3://… URI."""
        _check_rel(rel)
        if self._local is not None:
            return os.path.join(self._local, *rel.split("/"))
        return f"{self.root}/{rel}"

    @property
    def manifest_uri(self) -> str:
        return self.location(MANIFEST_DIR)

    @property
    def delta_storage_options(self) -> dict[str, str] | None:
        return dict(self._delta_opts) if self._delta_opts is not None else None

    def _write_atomic(self, rel: str, data: bytes) -> None:
        """Temp file + rename locally; object stores publish a PUT whole anyway."""
        if self._local is None:
            self.fs.pipe_file(self._fs_path(rel), data)
            return
        final = self.location(rel)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmp = f"{final}.tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    # ---- blobs -----------------------------------------------------------------
    @staticmethod
    def blob_uri(sha: str) -> str:
        return f"{BLOBS_DIR}/{sha[:2]}/{sha}.png"

    def put_blob(self, data: bytes) -> tuple[str, str]:
        """Store bytes under their sha256 (once); return (sha256, blob_uri relative to root)."""
        sha = sha256_hex(bytes(data))
        rel = self.blob_uri(sha)
        if not self.fs.exists(self._fs_path(rel)):
            self._write_atomic(rel, bytes(data))
        return sha, rel

    def has_blob(self, sha: str) -> bool:
        if not _SHA_RE.match(sha):
            raise ValueError(f"not a sha256 hex digest: {sha!r}")
        return self.fs.exists(self._fs_path(self.blob_uri(sha)))

    def read_blob(self, blob_uri: str) -> bytes:
        _check_rel(blob_uri)
        return self.fs.cat_file(self._fs_path(blob_uri))

    # ---- manifest --------------------------------------------------------------
    def _delta_table(self) -> DeltaTable | None:
        try:
            return DeltaTable(self.manifest_uri, storage_options=self._delta_opts)
        except TableNotFoundError:
            return None

    def version(self) -> int | None:
        dt = self._delta_table()
        return None if dt is None else dt.version()

    def manifest(self, version: int | None = None) -> pl.DataFrame:
        """Manifest rows at a Delta version (latest when None); empty frame if no manifest."""
        if self.version() is None:
            return pl.from_arrow(THOUGHTS_SCHEMA.empty_table())
        df = pl.read_delta(
            self.manifest_uri,
            version=version,
            storage_options=self._delta_opts,
            credential_provider=None,
        )
        return df.select(THOUGHTS_SCHEMA.names)

    def existing_ok(self, thought_ids: Iterable[str], version: int | None = None) -> pl.DataFrame:
        """First "ok" manifest row per requested thought_id."""
        ids = list(set(thought_ids))
        df = self.manifest(version)
        return (
            df.filter((pl.col("status") == "ok") & pl.col("thought_id").is_in(ids))
            .unique(subset="thought_id", keep="first", maintain_order=True)
        )

    def commit(
        self,
        rows: pa.Table,
        operation: str = "materialise",
        metadata: dict[str, str] | None = None,
    ) -> int | None:
        """One atomic Delta append of new rows; returns the new version, None if nothing new.

        Rows whose thought_id already has an "ok" row are dropped; within the batch one row
        per thought_id is kept (its first ok row, else its first row). Failed keys may retry.
        """
        missing = [n for n in THOUGHTS_SCHEMA.names if n not in rows.column_names]
        if missing:
            raise ValueError(f"thought rows lack columns: {', '.join(missing)}")
        table = rows.select(THOUGHTS_SCHEMA.names).cast(THOUGHTS_SCHEMA)
        table = self._drop_known(table)
        if table.num_rows == 0:
            return None
        custom = {"g2u.operation": operation, "g2u.rows": str(table.num_rows)}
        for key, value in (metadata or {}).items():
            key = key if key.startswith("g2u.") else f"g2u.{key}"  # never shadow delta's own keys
            custom[key] = str(value)
        write_deltalake(
            self.manifest_uri,
            table,
            mode="append",
            storage_options=self._delta_opts,
            commit_properties=CommitProperties(custom_metadata=custom),
        )
        return self.version()

    def _drop_known(self, table: pa.Table) -> pa.Table:
        ids = table.column("thought_id").to_pylist()
        statuses = table.column("status").to_pylist()
        if None in ids:
            raise ValueError("thought_id must not be null")
        bad = sorted({str(s) for s in statuses if s not in STATUSES})
        if bad:
            raise ValueError(f"status must be one of {STATUSES}, got {bad}")
        known_ok = set(self.existing_ok(ids)["thought_id"].to_list())
        chosen: dict[str, int] = {}
        for i, (tid, status) in enumerate(zip(ids, statuses)):
            if tid in known_ok:
                continue
            prev = chosen.get(tid)
            if prev is None or (status == "ok" and statuses[prev] != "ok"):
                chosen[tid] = i
        return table.take(pa.array(sorted(chosen.values()), type=pa.int64()))

    def history(self) -> list[dict[str, Any]]:
        """Dataset versions, oldest first: version, timestamp, operation, rows, metadata."""
        dt = self._delta_table()
        if dt is None:
            return []
        out = []
        for h in dt.history():
            out.append(
                {
                    "version": h["version"],
                    "timestamp": datetime.fromtimestamp(h["timestamp"] / 1000, tz=timezone.utc),
                    "operation": h.get("operation"),
                    "rows": (h.get("operationMetrics") or {}).get("num_added_rows"),
                    "metadata": {k: v for k, v in h.items() if k not in _HISTORY_KEYS},
                }
            )
        return sorted(out, key=lambda e: e["version"])

    # ---- run files -------------------------------------------------------------
    @staticmethod
    def _run_rel(run_id: str, name: str, ext: str) -> str:
        for part in (run_id, name):
            if not part or part in (".", "..") or "/" in part or "\\" in part:
                raise ValueError(f"bad run path component: {part!r}")
        return f"{RUNS_DIR}/{run_id}/{name}.{ext}"

    def run_path(self, run_id: str, name: str, ext: str = "parquet") -> str:
        """Location of runs/<run_id>/<name>.<ext> (absolute local path or s3:// URI)."""
        return self.location(self._run_rel(run_id, name, ext))

    def write_run_table(self, run_id: str, name: str, table: pa.Table) -> str:
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        self._write_atomic(self._run_rel(run_id, name, "parquet"), buf.getvalue().to_pybytes())
        return self.run_path(run_id, name)

    def read_run_table(self, run_id: str, name: str) -> pl.DataFrame:
        data = self.fs.cat_file(self._fs_path(self._run_rel(run_id, name, "parquet")))
        return pl.read_parquet(io.BytesIO(data))

    def write_run_json(self, run_id: str, name: str, obj: Any) -> str:
        text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        self._write_atomic(self._run_rel(run_id, name, "json"), text.encode("utf-8"))
        return self.run_path(run_id, name, "json")

    def read_run_json(self, run_id: str, name: str) -> Any:
        return json.loads(self.fs.cat_file(self._fs_path(self._run_rel(run_id, name, "json"))))


def _check_rel(rel: str) -> None:
    """Only paths relative to the root, without '..', are accepted."""
    if not rel or rel.startswith("/") or "://" in rel or ".." in rel.split("/"):
        raise ValueError(f"not a root-relative path: {rel!r}")
