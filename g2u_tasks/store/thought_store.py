"""Thought store: content-addressed blobs, a Delta manifest, run files.

Layout under the root (any fsspec URI: file://, bare local path, s3://):
  thoughts/blobs/<sha[:2]>/<sha>.png   written once
  thoughts/manifest/                   Delta table, THOUGHTS_SCHEMA, one commit per materialisation
  thoughts/pending/<batch>.jsonl       resume journal: a batch's finished rows not yet committed
  runs/<run_id>/<name>.parquet|.json
  runs/<run_id>/<name>/part-<index>.parquet   a table written batch by batch (predictions)

S3 endpoint, region and credentials come from the environment or a named profile (docs/STORE.md);
resolved credentials reach deltalake in memory only. A commit writes its rows as Parquet parts and
adds them in one transaction (store/delta_parts.py: memory bounded by a batch, not by the rows);
rows whose thought_id is already ok at the version it builds on are dropped, and a commit that lost
the race for the next version is retried against the new one, so concurrent writers never
duplicate an ok row.

The manifest is read with polars.read_delta only: with deltalake 1.6.6 + pyarrow 26,
DeltaTable.to_pyarrow_table()/to_pandas() can abort the process at exit.

Integrity: a blob's bytes are checked against the sha256 in its name whenever it is read; the
manifest is opened AT the requested version (so a damaged newer commit does not hide older ones)
and the commit file of that version is checked, because delta-rs silently accepts some damaged
commits (an empty file, a mangled action name, a lost line).
"""
from __future__ import annotations

import errno
import io
import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import fsspec
import polars as pl
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from g2u_tasks.records import THOUGHTS_SCHEMA, sha256_hex
from g2u_tasks.store import delta_parts

BLOBS_DIR = "thoughts/blobs"
MANIFEST_DIR = "thoughts/manifest"
PENDING_DIR = "thoughts/pending"
RUNS_DIR = "runs"
LOG_DIR = f"{MANIFEST_DIR}/_delta_log"
# Folders where _write_atomic leaves `<name>.tmp-<hex>` files when a writer is killed.
TEMP_DIRS = (BLOBS_DIR, PENDING_DIR, RUNS_DIR)
TEMP_GRACE_S = 3600.0  # a temp file younger than this may belong to a live writer
STATUSES = ("ok", "failed")
COMMIT_ATTEMPTS = 8  # bounded retry of conflicting commits
COMMIT_BACKOFF_S = 0.05  # first backoff; doubles per attempt, with jitter
SLICE_ROWS = 4096  # manifest rows a sliced read holds at once
log = logging.getLogger(__name__)

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_BLOB_RE = re.compile(rf"^{BLOBS_DIR}/([0-9a-f]{{2}})/([0-9a-f]{{64}})\.png$")
_TEMP_RE = re.compile(r"\.tmp-[0-9a-f]{32}$")
_CHOSEN_FROM = ("prompt_source", "family")  # what a template row's chosen_family is derived from
_PART_RE = re.compile(r"/part-\d{6}\.parquet$")
_COMMIT_RE = re.compile(r"(?:^|/)(\d{20})\.json$")
_DELTA_ACTIONS = {"commitInfo", "protocol", "metaData", "add", "remove", "cdc", "txn", "domainMetadata",
                  "checkpointMetadata", "sidecar"}
# Keys delta-rs itself puts in a history entry; anything else is custom commit metadata.
_HISTORY_KEYS = {
    "version", "timestamp", "operation", "operationParameters", "operationMetrics",
    "engineInfo", "clientVersion", "readVersion", "isBlindAppend", "userMetadata",
}


class StoreIntegrityError(RuntimeError):
    """Stored bytes are not what was written (bit rot, a torn write, a hand edit)."""


class BlobCorruptError(StoreIntegrityError):
    def __init__(self, blob_uri: str, actual_sha256: str):
        self.blob_uri, self.actual_sha256 = blob_uri, actual_sha256
        super().__init__(f"blob {blob_uri} is corrupt: its bytes hash to {actual_sha256}, not to the sha256 in "
                         "its name (`g2u dataset verify` lists the thoughts that use it)")


class ManifestLogError(StoreIntegrityError):
    """A Delta commit file of the manifest is damaged; versions before it stay readable."""

    def __init__(self, location: str, version: int, problem: str):
        self.location, self.version, self.problem = location, version, problem
        if version > 0:
            todo = (f"Versions 0..{version - 1} are still readable (pin one, e.g. `g2u dataset verify {version - 1}`). "
                    f"To make {version - 1} the latest again, move this file out of _delta_log (keep a copy); "
                    "the next materialisation regenerates the thoughts it held.")
        else:
            todo = "No earlier version exists: move the manifest folder aside and materialise again."
        super().__init__(f"manifest commit file {location} (dataset version {version}) is damaged: {problem}. {todo}")


class StoreFullError(OSError):
    """The device (or quota) under the store is full; nothing partial was left behind."""


@dataclass(frozen=True)
class TempFile:
    path: str  # relative to the store root
    size: int
    age_s: float | None  # None when the filesystem reports no modification time


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


class S3Access:
    """Endpoint, region and credentials of an S3 root, for s3fs and for deltalake.

    Non-secret settings come from storage_options (endpoint_url, region, profile, anon, ...), then
    the environment (AWS_ENDPOINT_URL[_S3], AWS_REGION / AWS_DEFAULT_REGION), then the profile.
    Credentials come from botocore's chain (environment, profile, SSO, instance role) and are
    handed to deltalake in memory only; `repr` never shows them."""

    def __init__(self, fs_options: dict[str, Any]):
        opts = dict(fs_options)
        client = dict(opts.pop("client_kwargs", None) or {})
        self.endpoint = opts.pop("endpoint_url", None) or client.pop("endpoint_url", None) or _env(
            "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        self.profile = opts.get("profile")
        self.anon = bool(opts.get("anon"))
        self._botocore = None  # resolved lazily, once; refreshable credentials refresh themselves
        self._region = (opts.pop("region", None) or client.get("region_name") or _env("AWS_REGION")
                        or self._session().get_config_variable("region"))  # AWS_DEFAULT_REGION, profile
        if self._region:
            client["region_name"] = self._region
        self.fs_options = {**opts, "client_kwargs": client}
        if self.endpoint:
            self.fs_options["endpoint_url"] = self.endpoint
        self._explicit = {k: opts[k] for k in ("key", "secret", "token") if opts.get(k)}

    def __repr__(self) -> str:
        return f"S3Access(endpoint={self.endpoint!r}, region={self._region!r}, profile={self.profile!r})"

    def _session(self):
        if self._botocore is None:
            import botocore.session  # s3fs depends on botocore

            self._botocore = botocore.session.Session(profile=self.profile)
        return self._botocore

    def _credentials(self) -> dict[str, str]:
        if self.anon:
            return {"AWS_SKIP_SIGNATURE": "true"}
        if self._explicit:  # programmatic use only: RunConfig refuses secrets in storage_options
            names = {"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY", "token": "AWS_SESSION_TOKEN"}
            return {names[k]: str(v) for k, v in self._explicit.items()}
        creds = self._session().get_credentials()
        if creds is None:
            return {}
        frozen = creds.get_frozen_credentials()
        out = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
        if frozen.token:
            out["AWS_SESSION_TOKEN"] = frozen.token
        return out

    def delta_options(self) -> dict[str, str]:
        """deltalake (object_store) options, credentials included; build per use, never persist."""
        out = {"aws_conditional_put": "etag"}  # atomic commits without a lock table
        if self.endpoint:
            out["AWS_ENDPOINT_URL"] = self.endpoint
            if self.endpoint.startswith("http://"):
                out["AWS_ALLOW_HTTP"] = "true"
        if self._region:
            out["AWS_REGION"] = self._region
        out.update(self._credentials())
        return out


class ThoughtStore:
    def __init__(self, root: str, storage_options: dict[str, Any] | None = None):
        opts = dict(storage_options or {})
        # Upper-case or aws_* keys are deltalake-only overrides; the rest go to fsspec.
        self._delta_extra = {k: str(v) for k, v in opts.items() if k.isupper() or k.startswith("aws_")}
        fs_opts = {k: v for k, v in opts.items() if k not in self._delta_extra}
        root = str(root)
        self._s3: S3Access | None = None
        if "://" not in root or root.startswith("file://"):
            path = root[len("file://"):] if root.startswith("file://") else root
            self._local = os.path.abspath(os.path.expanduser(path or "."))
            self.root = "file://" + self._local
            self.fs = fsspec.filesystem("file")
            self._base = self._local
        else:
            protocol, _, rest = root.partition("://")
            self._local = None
            self.root = f"{protocol}://{rest.strip('/')}"
            if protocol in ("s3", "s3a"):
                self._s3 = S3Access(fs_opts)
                fs_opts = self._s3.fs_options
            self.fs = fsspec.filesystem(protocol, **fs_opts)
            self._base = rest.strip("/")

    def __repr__(self) -> str:
        return f"ThoughtStore({self.root!r})"

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
        """Options for deltalake/polars readers of the manifest (in memory: may hold credentials)."""
        if self._local is not None:
            return None
        base = self._s3.delta_options() if self._s3 is not None else {}
        return {**base, **self._delta_extra}

    def _write_atomic(self, rel: str, data: bytes) -> None:
        """Temp file + rename locally; object stores publish a PUT whole anyway.

        A full device or quota becomes one StoreFullError naming the file; the temp file is removed."""
        try:
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
                    with suppress(OSError):  # best effort; `g2u dataset vacuum` removes leftovers
                        os.remove(tmp)
        except OSError as exc:
            if _is_no_space(exc):
                raise self._full(rel) from exc
            raise

    def _full(self, rel: str) -> StoreFullError:
        exc = StoreFullError(errno.ENOSPC, f"no space left on the device holding the thought store while writing "
                             f"{self.location(rel)}; nothing partial was kept. Free space under {self.root} and run "
                             "again: stored blobs and journaled thoughts are reused")
        exc.filename = self.location(rel)
        return exc

    # ---- blobs -----------------------------------------------------------------
    @staticmethod
    def blob_uri(sha: str) -> str:
        return f"{BLOBS_DIR}/{sha[:2]}/{sha}.png"

    def put_blob(self, data: bytes) -> tuple[str, str]:
        """Store bytes under their sha256 (once); return (sha256, blob_uri relative to root)."""
        sha = sha256_hex(bytes(data))
        rel = self.blob_uri(sha)
        path = self._fs_path(rel)
        # An existing blob is kept only if intact: writing the same name again repairs a corrupt one.
        if not self.fs.exists(path) or sha256_hex(self.fs.cat_file(path)) != sha:
            self._write_atomic(rel, bytes(data))
        return sha, rel

    def has_blob(self, sha: str) -> bool:
        if not _SHA_RE.match(sha):
            raise ValueError(f"not a sha256 hex digest: {sha!r}")
        return self.fs.exists(self._fs_path(self.blob_uri(sha)))

    def read_blob(self, blob_uri: str) -> bytes:
        """A blob's bytes, checked against the sha256 in its name (BlobCorruptError if they differ)."""
        m = _BLOB_RE.match(blob_uri or "")
        if not m or not m.group(2).startswith(m.group(1)):
            raise ValueError(f"not a blob uri ({BLOBS_DIR}/<sha[:2]>/<sha256>.png): {blob_uri!r}")
        data = self.fs.cat_file(self._fs_path(blob_uri))
        actual = sha256_hex(data)
        if actual != m.group(2):
            raise BlobCorruptError(blob_uri, actual)
        return data

    # ---- manifest --------------------------------------------------------------
    def _delta_table(self, version: int | None = None) -> DeltaTable | None:
        """The manifest opened AT `version` (latest when None), its commit file checked.

        None when there is no manifest and no version was asked for. Opening at a version reads
        the log only up to it, so a damaged newer commit does not hide older versions."""
        if version is not None and version < 0:
            raise ValueError(f"dataset version must be >= 0, got {version}")
        try:
            dt = DeltaTable(self.manifest_uri, version=version, storage_options=self.delta_storage_options)
        except TableNotFoundError:
            if version is None:
                return None
            raise ValueError(f"dataset version {version} does not exist in {self.root} (latest: None)") from None
        except DeltaError:
            self._diagnose_log(version)
            raise
        self._check_commit(dt.version())
        return dt

    def _log_versions(self) -> list[int]:
        try:
            names = self.fs.ls(self._fs_path(LOG_DIR), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in map(_COMMIT_RE.search, names) if m)

    def _read_commit(self, version: int) -> bytes | None:
        try:
            return self.fs.cat_file(self._fs_path(f"{LOG_DIR}/{version:020d}.json"))
        except FileNotFoundError:  # cleaned up after a checkpoint
            return None

    def _check_commit(self, version: int) -> None:
        data = self._read_commit(version)
        problem = None if data is None else _commit_problem(data)
        if problem:
            raise ManifestLogError(self.location(f"{LOG_DIR}/{version:020d}.json"), version, problem)

    def _diagnose_log(self, version: int | None) -> None:
        """After delta-rs failed to open the manifest: a clear error for a version that does not
        exist or a damaged commit file; returns (caller re-raises) when neither explains it."""
        versions = self._log_versions()
        if version is not None and (not versions or version > versions[-1]):
            latest = versions[-1] if versions else None
            raise ValueError(f"dataset version {version} does not exist in {self.root} (latest: {latest})") from None
        for v in reversed([v for v in versions if version is None or v <= version]):
            self._check_commit(v)

    def version(self) -> int | None:
        dt = self._delta_table()
        return None if dt is None else dt.version()

    def manifest(self, version: int | None = None, columns: list[str] | None = None) -> pl.DataFrame:
        """Manifest rows at a Delta version (latest when None); empty frame if no manifest.
        `columns`: only those (THOUGHTS_SCHEMA names), read from the files without the others.

        A pinned version is read exactly as committed (time travel); one that does not exist yet
        is an error, never a silent fallback to the latest."""
        names = THOUGHTS_SCHEMA.names if columns is None else [n for n in THOUGHTS_SCHEMA.names if n in columns]
        dt = self._delta_table(version)
        if dt is None:
            return pl.from_arrow(THOUGHTS_SCHEMA.empty_table()).select(names)
        stored = set(dt.schema().to_arrow().names)
        wanted = {*names, *(_CHOSEN_FROM if "chosen_family" in names else ())}
        df = pl.read_delta(
            self.manifest_uri,
            version=dt.version(),  # the version just checked, even if a writer commits meanwhile
            columns=[n for n in THOUGHTS_SCHEMA.names if n in stored and n in wanted],
            storage_options=self.delta_storage_options,
            credential_provider=None,
        )
        return _with_current_schema(df, names)

    def manifest_slices(self, version: int | None = None, where: pl.Expr | None = None,
                        slice_rows: int | None = None, columns: Iterable[str] | None = None) -> Iterator[pl.DataFrame]:
        """The manifest rows at a version (latest when None) that match `where`, about `slice_rows`
        (default SLICE_ROWS) at a time, read straight from the table's files: never all at once. Rows are dealt to
        slices by a hash of thought_id, so all rows of one thought_id are in one slice. `columns`: only
        those (THOUGHTS_SCHEMA names; `where` may read others), the rest never decoded."""
        dt = self._delta_table(version)
        if dt is None:
            return
        names = THOUGHTS_SCHEMA.names if columns is None else [n for n in THOUGHTS_SCHEMA.names if n in set(columns)]
        wanted_cols = {"thought_id", *names, *(_CHOSEN_FROM if "chosen_family" in names else ())}  # id: the slicing
        stored = set(dt.schema().to_arrow().names)
        wanted = pl.scan_delta(self.manifest_uri, version=dt.version(), storage_options=self.delta_storage_options,
                               credential_provider=None)
        if where is not None:
            wanted = wanted.filter(where)
        count = max(1, -(-wanted.select(pl.len()).collect(engine="streaming").item() // (slice_rows or SLICE_ROWS)))
        wanted = wanted.select([n for n in THOUGHTS_SCHEMA.names if n in stored and n in wanted_cols])
        for k in range(count):
            part = wanted.filter(pl.col("thought_id").hash() % count == k) if count > 1 else wanted
            yield _with_current_schema(part.collect(engine="streaming"), names)

    def existing_ok(self, thought_ids: Iterable[str], version: int | None = None) -> pl.DataFrame:
        """The requested thought_ids that have an "ok" manifest row (columns thought_id, status)."""
        ids = list(set(thought_ids))
        df = self.manifest(version, columns=["thought_id", "status"])
        return (
            df.filter((pl.col("status") == "ok") & pl.col("thought_id").is_in(ids))
            .unique(subset="thought_id", keep="first", maintain_order=True)
        )

    def commit(
        self,
        rows: pa.Table | pq.ParquetFile,
        operation: str = "materialise",
        metadata: dict[str, str] | None = None,
    ) -> int | None:
        """One atomic Delta commit of new rows; returns its version, None if nothing new.

        `rows`: a table, or a Parquet file of them (read batch by batch: never all in memory).
        Rows whose thought_id already has an "ok" row are dropped; within the batch one row
        per thought_id is kept (its first ok row, else its first row). Failed keys may retry.
        Safe with concurrent writers: the first commit creates the table (exactly one creator
        wins), later ones append; a lost race (another writer took the next version) is retried
        with backoff against the new version, so each key keeps at most one ok row."""
        names = rows.schema_arrow.names if isinstance(rows, pq.ParquetFile) else rows.column_names
        missing = [n for n in THOUGHTS_SCHEMA.names if n not in names]
        if missing:
            raise ValueError(f"thought rows lack columns: {', '.join(missing)}")
        keys = rows.read(columns=["thought_id", "status"]) if isinstance(rows, pq.ParquetFile) else \
            rows.select(["thought_id", "status"])
        keep = _one_row_per_key(keys)
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                return self._commit_once(rows, keys.column("thought_id"), keep, operation, metadata)
            except (CommitFailedError, DeltaError, OSError) as exc:
                if _is_no_space(exc):
                    raise self._full(MANIFEST_DIR) from exc
                if not _is_conflict(exc) or attempt == COMMIT_ATTEMPTS:
                    raise
                wait = COMMIT_BACKOFF_S * 2 ** (attempt - 1) * (1 + random.random())
                log.warning("manifest commit lost a race (attempt %d/%d), retrying in %.2fs: %s",
                            attempt, COMMIT_ATTEMPTS, wait, str(exc).splitlines()[0])
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _commit_once(self, rows: pa.Table | pq.ParquetFile, ids: pa.ChunkedArray, keep: np.ndarray,
                     operation: str, metadata: dict[str, str] | None) -> int | None:
        dt = self._delta_table()
        if dt is not None:  # drop keys already ok at the version this commit builds on
            known = self.existing_ok(ids.to_pylist(), dt.version())["thought_id"].to_list()
            if known:
                keep = keep & ~np.asarray(pc.is_in(ids, value_set=pa.array(known, pa.string())), dtype=bool)
        n_rows = int(keep.sum())
        if n_rows == 0:
            return None
        custom = {"g2u.operation": operation, "g2u.rows": str(n_rows)}
        for key, value in (metadata or {}).items():
            key = key if key.startswith("g2u.") else f"g2u.{key}"  # never shadow delta's own keys
            custom[key] = str(value)
        if dt is not None and delta_parts.lacks_columns(dt, THOUGHTS_SCHEMA):
            return delta_parts.append_evolving(dt, _kept_rows(rows, keep), custom)
        # the rows go to Parquet parts first, then one transaction adds them (delta_parts); a lost
        # race fails that transaction, and commit() retries against the new version
        folder = self._fs_path(MANIFEST_DIR)
        self.fs.makedirs(folder, exist_ok=True)
        actions = delta_parts.write_parts(self.fs, folder, THOUGHTS_SCHEMA, _kept_rows(rows, keep))
        try:
            return delta_parts.commit_parts(self.manifest_uri, dt, THOUGHTS_SCHEMA, actions,
                                            self.delta_storage_options, custom)
        except BaseException:
            delta_parts.remove_parts(self.fs, folder, [a.path for a in actions])
            raise

    def history(self, version: int | None = None) -> list[dict[str, Any]]:
        """Dataset versions up to `version` (latest when None), oldest first: version, timestamp,
        operation, rows, metadata. Read from the commit files themselves: delta-rs numbers the
        history of a table opened at an older version wrongly."""
        dt = self._delta_table(version)
        if dt is None:
            return []
        out = []
        for v in range(dt.version() + 1):
            data = self._read_commit(v)
            h = _commit_info(data) if data is not None else None
            if h is None:
                continue
            metrics = h.get("operationMetrics") or {}
            out.append(
                {
                    "version": v,
                    "timestamp": datetime.fromtimestamp(h["timestamp"] / 1000, tz=timezone.utc),
                    "operation": h.get("operation"),
                    "rows": metrics.get("num_added_rows", metrics.get("num_target_rows_inserted",
                                                                      _int(h.get("g2u.rows")))),
                    "metadata": {k: v for k, v in h.items() if k not in _HISTORY_KEYS},
                }
            )
        return out

    # ---- orphan temp files -----------------------------------------------------
    def temp_files(self) -> list[TempFile]:
        """`*.tmp-<hex>` files that killed writers left in blobs/, pending/ and runs/."""
        now, out = time.time(), []
        for folder in TEMP_DIRS:
            try:
                found = self.fs.find(self._fs_path(folder), detail=True)
            except FileNotFoundError:
                continue
            for path, info in found.items():
                if info.get("type", "file") == "file" and _TEMP_RE.search(path):
                    mtime = _mtime(info)
                    rel = path[len(self._base) + 1:] if path.startswith(self._base + "/") else path
                    out.append(TempFile(rel, int(info.get("size") or 0), None if mtime is None else now - mtime))
        return sorted(out, key=lambda t: t.path)

    def remove_temp_files(self, older_than_s: float = TEMP_GRACE_S,
                          dry_run: bool = False) -> tuple[list[TempFile], list[TempFile]]:
        """(removed, kept) temp files: only those older than the grace period go (a younger one may
        be a live writer's). Committed blobs and journal entries never match the temp-file name."""
        removed, kept = [], []
        for t in self.temp_files():
            if t.age_s is None or t.age_s < older_than_s:
                kept.append(t)
                continue
            if not dry_run:
                try:
                    self.fs.rm_file(self._fs_path(t.path))
                except FileNotFoundError:  # its writer or another vacuum got there first
                    pass
            removed.append(t)
        return removed, kept

    # ---- resume journal --------------------------------------------------------
    # One file per generated batch (one write and one fsync per batch, not per thought), one JSON row
    # a line, named after the batch's thought ids; written whole (temp file + rename) or not at all.
    @staticmethod
    def _pending_rel(thought_ids: list[str]) -> str:
        for tid in thought_ids:
            if not isinstance(tid, str) or not _SHA_RE.match(tid):
                raise ValueError(f"not a thought id: {tid!r}")
        return f"{PENDING_DIR}/{sha256_hex(' '.join(thought_ids).encode())}.jsonl"

    def put_pending(self, rows: list[dict[str, Any]]) -> None:
        """Journal a batch's finished ok rows (their blobs already stored) until a commit takes them."""
        if not rows:
            return
        self._write_atomic(self._pending_rel([r["thought_id"] for r in rows]), _jsonl(rows))

    def _pending_files(self) -> Iterator[tuple[str, list[dict[str, Any] | None]]]:
        """(path, rows) per journal file; a line that is not a JSON object reads as None."""
        try:
            paths = self.fs.ls(self._fs_path(PENDING_DIR), detail=False, refresh=True)
        except FileNotFoundError:
            return
        for path in sorted(p for p in paths if p.endswith(".jsonl")):
            try:
                lines = self.fs.cat_file(path).decode("utf-8").splitlines()
            except (OSError, UnicodeDecodeError):  # gone (a concurrent clear) or foreign
                continue
            yield path, [_json_object(line) for line in lines if line.strip()]

    def pending_rows(self, thought_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Journaled rows for these ids whose blob exists and matches its sha256 (others ignored)."""
        wanted = dict.fromkeys(thought_ids)
        found: dict[str, dict[str, Any]] = {}
        for _, rows in self._pending_files():
            for row in rows:
                tid = row.get("thought_id") if row else None
                if tid not in wanted or tid in found:
                    continue
                try:
                    sha = row["blob_sha256"]
                    if row.get("status") == "ok" and row.get("blob_uri") == self.blob_uri(sha):
                        self.read_blob(row["blob_uri"])  # exists and matches its sha256, or raises
                        row["created_at"] = datetime.fromisoformat(row["created_at"])
                        found[tid] = row
                except (OSError, ValueError, KeyError, TypeError, StoreIntegrityError):  # torn or foreign: regenerate
                    continue
        return [found[t] for t in wanted if t in found]

    def clear_pending(self, thought_ids: Iterable[str]) -> int:
        """Drop the journal entries of these ids (call once they are ok in the manifest): a file whose
        rows are all among them goes; one that also holds others is rewritten with those. Returns
        how many entries were dropped."""
        done = set(thought_ids)
        removed, gone = 0, []
        for path, rows in self._pending_files():
            keep = [r for r in rows if r is not None and r.get("thought_id") not in done]
            dropped = sum(r is not None for r in rows) - len(keep)
            if not dropped:
                continue
            removed += dropped
            if keep:
                self._write_atomic(path[len(self._base) + 1:], _jsonl(keep))
            else:
                gone.append(path)
        if self._local is None and gone:
            self.fs.rm(gone)  # one bulk delete; deleting a missing key is not an error on S3
        for path in gone if self._local is not None else ():
            with suppress(FileNotFoundError):  # a concurrent writer may clear the same file
                os.remove(path)
        return removed

    # ---- run files -------------------------------------------------------------
    @staticmethod
    def _run_rel(run_id: str, name: str, ext: str | None) -> str:
        """runs/<run_id>/<name>.<ext>; without ext, the folder runs/<run_id>/<name>."""
        for part in (run_id, name):
            if not part or part in (".", "..") or "/" in part or "\\" in part:
                raise ValueError(f"bad run path component: {part!r}")
        return f"{RUNS_DIR}/{run_id}/{name}" + (f".{ext}" if ext else "")

    def run_path(self, run_id: str, name: str, ext: str = "parquet") -> str:
        """Location of runs/<run_id>/<name>.<ext> (absolute local path or s3:// URI)."""
        return self.location(self._run_rel(run_id, name, ext))

    def write_run_table(self, run_id: str, name: str, table: pa.Table) -> str:
        self._write_atomic(self._run_rel(run_id, name, "parquet"), _parquet_bytes(table))
        return self.run_path(run_id, name)

    def read_run_table(self, run_id: str, name: str) -> pl.DataFrame:
        data = self.fs.cat_file(self._fs_path(self._run_rel(run_id, name, "parquet")))
        return pl.read_parquet(io.BytesIO(data))

    def remove_run_file(self, run_id: str, name: str, ext: str = "parquet") -> None:
        """Drop runs/<run_id>/<name>.<ext> if it exists."""
        with suppress(FileNotFoundError):
            self.fs.rm_file(self._fs_path(self._run_rel(run_id, name, ext)))

    # A table written batch by batch: runs/<run_id>/<name>/part-<index>.parquet, read in index order.
    def write_run_part(self, run_id: str, name: str, index: int, table: pa.Table) -> str:
        rel = f"{self._run_rel(run_id, name, None)}/part-{index:06d}.parquet"
        self._write_atomic(rel, _parquet_bytes(table))
        return self.location(rel)

    def clear_run_parts(self, run_id: str, name: str) -> None:
        """Drop every part of runs/<run_id>/<name>/ (and a single-file <name>.parquet of older runs)."""
        folder = self._fs_path(self._run_rel(run_id, name, None))
        with suppress(FileNotFoundError):
            self.fs.rm(folder, recursive=True)
        self.remove_run_file(run_id, name)

    def run_parts(self, run_id: str, name: str) -> list[str]:
        """Filesystem paths of the parts in index order; runs stored before parts existed have one
        <name>.parquet, which is then the only part."""
        folder = self._fs_path(self._run_rel(run_id, name, None))
        try:
            found = self.fs.ls(folder, detail=False, refresh=True)
        except FileNotFoundError:
            found = []
        parts = sorted(p for p in found if _PART_RE.search(p))
        if parts:
            return parts
        single = self._fs_path(self._run_rel(run_id, name, "parquet"))
        return [single] if self.fs.exists(single) else []

    def iter_run_parts(self, run_id: str, name: str, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """The parts one at a time (`columns`: only those of them that a part has)."""
        for path in self.run_parts(run_id, name):
            with self.fs.open(path, "rb") as f:
                picked = None
                if columns is not None:  # per part: an older part may lack a column a newer one has
                    have = set(pq.read_schema(f).names)
                    f.seek(0)
                    picked = [c for c in columns if c in have]
                yield pl.read_parquet(f, columns=picked)

    def write_run_json(self, run_id: str, name: str, obj: Any) -> str:
        text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        self._write_atomic(self._run_rel(run_id, name, "json"), text.encode("utf-8"))
        return self.run_path(run_id, name, "json")

    def read_run_json(self, run_id: str, name: str) -> Any:
        return json.loads(self.fs.cat_file(self._fs_path(self._run_rel(run_id, name, "json"))))


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    return buf.getvalue().to_pybytes()


def _kept_rows(rows: pa.Table | pq.ParquetFile, keep: np.ndarray) -> pa.RecordBatchReader:
    """The rows `keep` marks, in THOUGHTS_SCHEMA, as a stream of batches (a fresh one per call)."""
    def batches() -> Iterator[pa.RecordBatch]:
        offset = 0
        source = rows.iter_batches(batch_size=4096, columns=THOUGHTS_SCHEMA.names) if isinstance(
            rows, pq.ParquetFile) else rows.select(THOUGHTS_SCHEMA.names).to_batches(max_chunksize=4096)
        for batch in source:
            mask = keep[offset:offset + batch.num_rows]
            offset += batch.num_rows
            if mask.any():
                yield batch.filter(pa.array(mask)).cast(THOUGHTS_SCHEMA)

    return pa.RecordBatchReader.from_batches(THOUGHTS_SCHEMA, batches())


def _with_current_schema(df: pl.DataFrame, names: list[str] = THOUGHTS_SCHEMA.names) -> pl.DataFrame:
    """Manifest rows as THOUGHTS_SCHEMA's columns `names`: columns an older table (or version) lacks
    read as null; chosen_family of template rows defaults to their family."""
    wanted = {*names, *(_CHOSEN_FROM if "chosen_family" in names else ())}
    missing = [f for f in THOUGHTS_SCHEMA if f.name in wanted and f.name not in df.columns]
    if missing:
        empty = pl.from_arrow(pa.schema(missing).empty_table())
        df = df.with_columns(pl.lit(None, dtype=empty.schema[f.name]).alias(f.name) for f in missing)
    if "chosen_family" in names:
        template = (pl.col("prompt_source") == "template") & pl.col("chosen_family").is_null()
        df = df.with_columns(pl.when(template).then(pl.col("family")).otherwise(pl.col("chosen_family"))
                             .alias("chosen_family"))
    return df.select(names)


def _one_row_per_key(keys: pa.Table) -> np.ndarray:
    """Validate ids and statuses; mark one row per thought_id (first ok, else first)."""
    ids = keys.column("thought_id").to_pylist()
    statuses = keys.column("status").to_pylist()
    if None in ids:
        raise ValueError("thought_id must not be null")
    bad = sorted({str(s) for s in statuses if s not in STATUSES})
    if bad:
        raise ValueError(f"status must be one of {STATUSES}, got {bad}")
    chosen: dict[str, int] = {}
    for i, (tid, status) in enumerate(zip(ids, statuses)):
        prev = chosen.get(tid)
        if prev is None or (status == "ok" and statuses[prev] != "ok"):
            chosen[tid] = i
    keep = np.zeros(len(ids), dtype=bool)
    keep[list(chosen.values())] = True
    return keep


def _is_conflict(exc: Exception) -> bool:
    """A lost race with another writer (retry), not a broken write (raise)."""
    return isinstance(exc, CommitFailedError) or "already exists" in str(exc)


def _is_no_space(exc: BaseException) -> bool:
    """A full device or quota, as an OSError or as delta-rs's text."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "os error 28" in text


def _commit_info(data: bytes) -> dict[str, Any] | None:
    for line in data.splitlines():
        with suppress(ValueError):
            action = json.loads(line)
            if isinstance(action, dict) and isinstance(action.get("commitInfo"), dict):
                return action["commitInfo"]
    return None


def _commit_problem(data: bytes) -> str | None:
    """Why a Delta commit file cannot be what its writer committed; None when it looks whole."""
    lines = [line for line in data.splitlines() if line.strip()]
    if not lines:
        return "it is empty"
    info, added, counted = None, 0, True
    for i, line in enumerate(lines, 1):
        try:
            action = json.loads(line)
        except ValueError:
            return f"line {i} is not valid JSON (a torn write?)"
        if not (isinstance(action, dict) and len(action) == 1 and next(iter(action)) in _DELTA_ACTIONS
                and isinstance(next(iter(action.values())), dict)):
            return f"line {i} is not a Delta action"
        kind, body = next(iter(action.items()))
        if kind == "commitInfo":
            info = body
        elif kind == "add" and body.get("dataChange", True):
            try:
                added += int(json.loads(body.get("stats") or "")["numRecords"])
            except (ValueError, KeyError, TypeError):
                counted = False  # no row count in its stats: cannot compare
    if info is None:
        return "it has no commitInfo line"
    metrics = info.get("operationMetrics") or {}
    expected = metrics.get("num_added_rows", metrics.get("num_target_rows_inserted", _int(info.get("g2u.rows"))))
    if counted and isinstance(expected, int) and added < expected:
        return f"its data files hold {added} row(s) but its commitInfo records {expected} added (lines lost?)"
    return None


def _int(value: Any) -> int | None:
    with suppress(TypeError, ValueError):
        return int(value)
    return None


def _mtime(info: dict[str, Any]) -> float | None:
    """Modification time (epoch seconds) from an fsspec info dict: local `mtime`, S3 `LastModified`."""
    value = info.get("mtime") or info.get("LastModified") or info.get("created")
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if isinstance(value, (int, float)) else None


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    """Journal rows as JSON Lines."""
    return "".join(json.dumps(r, sort_keys=True, default=_json_default) + "\n" for r in rows).encode("utf-8")


def _json_object(line: str) -> dict[str, Any] | None:
    with suppress(ValueError):
        value = json.loads(line)
        return value if isinstance(value, dict) else None
    return None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _check_rel(rel: str) -> None:
    """Only paths relative to the root, without '..', are accepted."""
    if not rel or rel.startswith("/") or "://" in rel or ".." in rel.split("/"):
        raise ValueError(f"not a root-relative path: {rel!r}")
