"""Dataset versions of the thought store: list, show, diff, verify; releases: publish, verify.

Plain functions over ThoughtStore's public API; the manifest is read through store.manifest() only.
A release (publish) is a folder, local or on any fsspec URI:
  data/train-00000-of-0000N.parquet   one row per ok thought, image embedded as an HF Image struct
  README.md                           dataset card (HF hub front matter)
  release.json                        name, dataset version, fingerprint of the content
  checksums.sha256                    sha256sum format over every other file, written last
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from g2u_tasks.records import Item, canonical_json, items_table
from g2u_tasks.store.release_card import release_json, render_card
from g2u_tasks.store.thought_store import BlobCorruptError, ThoughtStore

Progress = Callable[[int, int], None]  # (done, total)

RELEASE_FORMAT = "g2u-release/1"
CHECKSUMS = "checksums.sha256"
RELEASE_JSON = "release.json"
CARD = "README.md"
MAX_SHARD_BYTES = 256 * 2**20
ROWS_PER_GROUP = 100
IO_THREADS = 8
DEFAULT_LICENCE = "other"

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_HF_DTYPES = {pa.string(): "string", pa.int64(): "int64", pa.int32(): "int32", pa.float64(): "float64"}
# Released columns after the image(s), with their Arrow types.
RELEASE_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("thought_id", pa.string()), ("benchmark", pa.string()), ("item_id", pa.string()),
    ("image_sha256", pa.string()), ("family", pa.string()), ("family_version", pa.string()),
    ("prompt", pa.string()), ("prompt_source", pa.string()), ("generator", pa.string()),
    ("generator_model", pa.string()), ("generator_revision", pa.string()), ("generator_params", pa.string()),
    ("conditioning", pa.string()), ("gen_text", pa.string()),
    ("seed", pa.int64()), ("key_json", pa.string()), ("blob_sha256", pa.string()), ("width", pa.int32()),
    ("height", pa.int32()), ("psnr", pa.float64()), ("ssim", pa.float64()), ("dataset_version", pa.int64()),
    ("question", pa.string()), ("options", pa.string()), ("answer", pa.string()), ("category", pa.string()),
    ("question_type", pa.string()),
]
ITEM_FIELDS = ("question", "options", "answer", "category", "question_type")
_CHECK_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
_LOCAL_PATH = re.compile(r"^(/|~|\.{1,2}/|[A-Za-z]:[\\/]|file://)")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHARD = re.compile(r"^data/train-\d{5}-of-\d{5}\.parquet$")


# ---- versions ------------------------------------------------------------------------------
def _location(store: ThoughtStore, rel: str) -> str:
    """Where `rel` lives, in a form store.fs accepts."""
    if hasattr(store, "location"):
        return store.location(rel)
    return f"{store.root}/{rel}"


def history_entry(store: ThoughtStore, version: int) -> dict[str, Any]:
    """The commit of `version`, read without the log after it (a damaged newer commit is no obstacle)."""
    for entry in store.history(version):
        if entry["version"] == version:
            return entry
    raise ValueError(f"dataset version {version} has no commit information in {store.root}")


def thoughts_at(store: ThoughtStore, version: int) -> pl.DataFrame:
    """One row per thought visible at `version`: its ok row when it has one, else its first row."""
    return (
        store.manifest(version)
        .with_columns((pl.col("status") != "ok").alias("_not_ok"))
        .sort("_not_ok", maintain_order=True)
        .unique("thought_id", keep="first", maintain_order=True)
        .drop("_not_ok")
    )


def ok_thoughts(store: ThoughtStore, version: int) -> pl.DataFrame:
    history_entry(store, version)
    return thoughts_at(store, version).filter(pl.col("status") == "ok")


_LABEL = (
    pl.when(pl.col("generator_model").is_null())
    .then(pl.col("generator"))
    .otherwise(pl.col("generator") + ":" + pl.col("generator_model"))
).alias("label")


def _joined(values: Iterable[Any]) -> str:
    return ",".join(sorted({str(v) for v in values if v is not None}))


VERSIONS_SCHEMA = {
    "version": pl.Int64, "date": pl.Datetime("us", "UTC"), "operation": pl.String, "rows": pl.Int64,
    "rows_added": pl.Int64, "rows_removed": pl.Int64, "failed": pl.Int64, "generators": pl.String,
    "families": pl.String, "benchmarks": pl.String,
}


def list_versions(store: ThoughtStore) -> pl.DataFrame:
    """One row per dataset version: ok thoughts visible then, what the commit added, what it holds."""
    out, prev = [], set()
    for entry in store.history():
        seen = thoughts_at(store, entry["version"])
        ok = seen.filter(pl.col("status") == "ok")
        ids = set(ok["thought_id"].to_list())
        out.append({
            "version": entry["version"],
            "date": entry["timestamp"],
            "operation": (entry.get("metadata") or {}).get("g2u.operation") or entry.get("operation"),
            "rows": len(ids),
            "rows_added": len(ids - prev),
            "rows_removed": len(prev - ids),
            "failed": seen.height - ok.height,
            "generators": _joined(ok.select(_LABEL)["label"]),
            "families": _joined(ok["family"]),
            "benchmarks": _joined(ok["benchmark"]),
        })
        prev = ids
    return pl.DataFrame(out, schema=VERSIONS_SCHEMA)


def show_version(store: ThoughtStore, version: int) -> dict[str, Any]:
    """Summary dict plus tables: counts (benchmark × family × status), generators, prompts, fidelity."""
    entry = history_entry(store, version)
    seen = thoughts_at(store, version)
    ok = seen.filter(pl.col("status") == "ok")
    summary = {
        "version": version,
        "date": entry["timestamp"],
        "operation": entry.get("operation"),
        "metadata": entry.get("metadata") or {},
        "manifest_rows": store.manifest(version).height,
        "thoughts": seen.height,
        "ok": ok.height,
        "failed": seen.height - ok.height,
        "items": ok.select("benchmark", "item_id").unique().height,
        "blob_bytes": int(ok["blob_bytes"].sum() or 0),
        "benchmarks": sorted(set(ok["benchmark"].to_list())),
        "families": sorted(set(ok["family"].to_list())),
        "generators": sorted(set(ok.select(_LABEL)["label"].to_list())),
    }
    return {
        "summary": summary,
        "counts": seen.group_by("benchmark", "family", "status").len("n").sort("benchmark", "family", "status"),
        "generators": ok.group_by("generator", "generator_model", "generator_revision", "generator_params")
        .len("n").sort("generator", "generator_model", nulls_last=True),
        "prompts": ok.group_by("family", "family_version", "prompt_source").len("n")
        .sort("family", "family_version", "prompt_source"),
        "fidelity": ok.group_by("family").agg(
            pl.len().alias("n"), pl.col("psnr").mean().alias("psnr_mean"), pl.col("ssim").mean().alias("ssim_mean"),
        ).sort("family"),
    }


def diff_versions(store: ThoughtStore, v1: int, v2: int) -> dict[str, Any]:
    """Ok thoughts added (in v2, not v1) and removed (in v1, not v2), by thought_id."""
    a, b = ok_thoughts(store, v1), ok_thoughts(store, v2)
    added = b.join(a.select("thought_id"), on="thought_id", how="anti")
    removed = a.join(b.select("thought_id"), on="thought_id", how="anti")
    change = pl.concat([
        added.select("benchmark", "family", pl.lit(1).alias("added"), pl.lit(0).alias("removed")),
        removed.select("benchmark", "family", pl.lit(0).alias("added"), pl.lit(1).alias("removed")),
    ])
    by = change.group_by("benchmark", "family").agg(pl.col("added").sum(), pl.col("removed").sum())
    return {
        "v1": v1, "v2": v2, "added": added.height, "removed": removed.height,
        "by_benchmark_family": by.sort("benchmark", "family").cast({"added": pl.Int64, "removed": pl.Int64}),
        "added_ids": sorted(added["thought_id"].to_list()),
        "removed_ids": sorted(removed["thought_id"].to_list()),
    }


# ---- verify a version -----------------------------------------------------------------------
@dataclass
class VerifyReport:
    version: int
    checked: int = 0  # ok thoughts checked
    blobs: int = 0  # distinct blobs read
    missing: list[dict[str, str]] = field(default_factory=list)  # thought_id, blob_uri, blob_sha256
    mismatched: list[dict[str, str]] = field(default_factory=list)  # ... + actual_sha256
    invalid: list[dict[str, str]] = field(default_factory=list)  # ok rows without a usable blob reference

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.invalid)


def _hash_file(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """Streamed sha256 of a file; None when it does not exist."""
    try:
        with fs.open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def verify_version(store: ThoughtStore, version: int, on_progress: Progress | None = None) -> VerifyReport:
    """Every blob of an ok thought exists and its bytes hash to blob_sha256 (each blob read once)."""
    ok = ok_thoughts(store, version)
    report = VerifyReport(version=version, checked=ok.height)
    by_blob: dict[tuple[str, str], list[str]] = {}
    for tid, uri, sha in ok.select("thought_id", "blob_uri", "blob_sha256").iter_rows():
        if not uri or not sha:
            report.invalid.append({"thought_id": tid, "blob_uri": uri, "blob_sha256": sha, "error": "no blob reference"})
            continue
        by_blob.setdefault((uri, sha), []).append(tid)

    def check(key: tuple[str, str]) -> tuple[tuple[str, str], str | None, str | None]:
        try:
            return key, _hash_file(store.fs, _location(store, key[0])), None
        except ValueError as exc:  # not a root-relative path
            return key, None, str(exc)

    total = len(by_blob)
    report.blobs = total
    with ThreadPoolExecutor(IO_THREADS) as pool:
        for done, ((uri, sha), actual, error) in enumerate(pool.map(check, list(by_blob)), 1):
            for tid in by_blob[(uri, sha)]:
                row = {"thought_id": tid, "blob_uri": uri, "blob_sha256": sha}
                if error:
                    report.invalid.append({**row, "error": error})
                elif actual is None:
                    report.missing.append(row)
                elif actual != sha:
                    report.mismatched.append({**row, "actual_sha256": actual})
            if on_progress:
                on_progress(done, total)
    return report


# ---- release rows ---------------------------------------------------------------------------
def _redact(value: Any) -> Any:
    """Local filesystem paths reduced to '<local>/<last part>' (no machine layout in a release)."""
    if isinstance(value, str) and _LOCAL_PATH.match(value):
        return "<local>/" + os.path.basename(value.rstrip("/\\"))
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _redact_json(text: str | None, key: str | None = None) -> str | None:
    if text is None:
        return None
    obj = json.loads(text)
    if key is None:
        return canonical_json(_redact(obj))
    if isinstance(obj, dict) and key in obj:
        obj[key] = _redact(obj[key])
    return canonical_json(obj)


def discover_items(store: ThoughtStore) -> pl.DataFrame | None:
    """Item fields from every `<root>/runs/*/items.parquet`; None when there is none."""
    paths = sorted(store.fs.glob(_location(store, "runs") + "/*/items.parquet"))
    frames = []
    for path in paths:
        frame = pl.read_parquet(io.BytesIO(store.fs.cat_file(path)))
        if {"benchmark", "item_id", "image_sha256"} <= set(frame.columns):
            frames.append(frame.select("benchmark", "item_id", "image_sha256",
                                       *[pl.col(c).cast(pl.String) if c in frame.columns else pl.lit(None, pl.String).alias(c)
                                         for c in ITEM_FIELDS]))
    if not frames:
        return None
    return pl.concat(frames).unique(["benchmark", "item_id", "image_sha256"], keep="last", maintain_order=True)


def items_and_sources(items: list[Item]) -> tuple[pl.DataFrame, dict[str, bytes]]:
    """Item fields and each item's edited (last) image keyed by image_sha256, from loaded benchmarks."""
    frame = pl.from_arrow(items_table(items))
    return frame, {it.image_sha256: it.images[-1] for it in items if it.images}


def release_rows(store: ThoughtStore, version: int, items: pl.DataFrame | None = None) -> pl.DataFrame:
    """The released columns (without images) of every ok thought at `version`, in a stable order.

    Keeps blob_uri and blob_bytes (used to read blobs; not released)."""
    ok = ok_thoughts(store, version).sort("benchmark", "item_id", "family", "seed", "thought_id")
    redacted = {
        "generator_model": [_redact(v) for v in ok["generator_model"].to_list()],
        "generator_revision": [_redact(v) for v in ok["generator_revision"].to_list()],
        "generator_params": [_redact_json(v) for v in ok["generator_params"].to_list()],
        "key_json": [_redact_json(v, "generator") for v in ok["key_json"].to_list()],
    }
    ok = ok.with_columns(*[pl.Series(c, v, dtype=pl.String) for c, v in redacted.items()],
                         pl.lit(version, pl.Int64).alias("dataset_version"))
    if items is not None and not items.is_empty():
        fields = items.select("benchmark", "item_id", "image_sha256",
                              *[pl.col(c).cast(pl.String) for c in ITEM_FIELDS if c in items.columns])
        fields = fields.unique(["benchmark", "item_id", "image_sha256"], keep="last", maintain_order=True)
        ok = ok.join(fields, on=["benchmark", "item_id", "image_sha256"], how="left", maintain_order="left")
    for c in ITEM_FIELDS:
        if c not in ok.columns:
            ok = ok.with_columns(pl.lit(None, pl.String).alias(c))
    return ok.select([c for c, _ in RELEASE_COLUMNS] + ["blob_uri", "blob_bytes"])


def release_schema(with_source: bool) -> pa.Schema:
    fields = [pa.field("image", IMAGE_TYPE)]
    if with_source:
        fields.append(pa.field("source_image", IMAGE_TYPE))
    fields += [pa.field(c, t) for c, t in RELEASE_COLUMNS]
    features = {f.name: {"_type": "Image"} if f.type == IMAGE_TYPE else {"dtype": _HF_DTYPES[f.type], "_type": "Value"}
                for f in fields}
    return pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": features}})})


# ---- publish ----------------------------------------------------------------------------------
@dataclass
class ReleaseResult:
    uri: str
    name: str
    dataset_version: int
    rows: int
    files: list[str]
    written: bool  # False when the same release was already there


def _join(path: str, rel: str) -> str:
    return f"{path.rstrip('/')}/{rel}"


def _target(store: ThoughtStore, name: str, to_uri: str | None,
            storage_options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str, str]:
    """(filesystem, path without protocol, URI to show) of the release folder."""
    if to_uri is None:
        uri, fs = _location(store, f"releases/{name}"), store.fs
    else:
        uri = to_uri.rstrip("/")
        protocol = fsspec.utils.get_protocol(uri)
        store_protocols = store.fs.protocol if isinstance(store.fs.protocol, tuple) else (store.fs.protocol,)
        if storage_options is None and protocol != "file" and protocol in store_protocols:
            fs = store.fs  # same object store: reuse the store's credentials
        else:
            fs, _ = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs, fs._strip_protocol(uri), uri


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fingerprint(name: str, version: int, licence: str, rows: pl.DataFrame, sources: Mapping[str, bytes] | None,
                 max_shard_bytes: int) -> str:
    h = hashlib.sha256(canonical_json([RELEASE_FORMAT, name, version, licence, max_shard_bytes]).encode())
    for row in rows.drop("blob_uri", "blob_bytes").iter_rows(named=True):
        h.update(canonical_json(row).encode())
    if sources is not None:
        for sha in rows["image_sha256"].unique().sort().to_list():
            h.update(f"{sha}:{_sha(sources[sha]) if sha in sources else '-'}".encode())
    return h.hexdigest()


def _shards(sizes: list[int], max_bytes: int) -> list[tuple[int, int]]:
    """[start, end) row ranges, each at most max_bytes of images (one row at least)."""
    out, start, acc = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and acc + size > max_bytes:
            out.append((start, i))
            start, acc = i, 0
        acc += size
    if sizes:
        out.append((start, len(sizes)))
    return out


def _image_path(sha: str, data: bytes) -> str:
    ext = ".png" if data.startswith(b"\x89PNG") else ".jpg" if data.startswith(b"\xff\xd8") else ""
    return f"{sha}{ext}"


def _arrow_part(part: pl.DataFrame, blobs: list[bytes], sources: Mapping[str, bytes] | None,
                schema: pa.Schema) -> pa.Table:
    cols: dict[str, Any] = {"image": [{"bytes": b, "path": _image_path(s, b)}
                                      for b, s in zip(blobs, part["blob_sha256"].to_list())]}
    if sources is not None:
        cols["source_image"] = [{"bytes": sources[s], "path": _image_path(s, sources[s])} if s in sources else None
                                for s in part["image_sha256"].to_list()]
    for c, _ in RELEASE_COLUMNS:
        cols[c] = part[c].to_list()
    return pa.table(cols, schema=schema)


def _write_shard(store: ThoughtStore, shard: pl.DataFrame, sources: Mapping[str, bytes] | None,
                 schema: pa.Schema, pool: ThreadPoolExecutor, tick: Callable[[int], None]) -> bytes:
    buf = pa.BufferOutputStream()
    stats = [f.name for f in schema if f.type != IMAGE_TYPE]
    with pq.ParquetWriter(buf, schema, write_statistics=stats) as writer:
        for start in range(0, shard.height, ROWS_PER_GROUP):
            part = shard.slice(start, ROWS_PER_GROUP)
            blobs = list(pool.map(lambda uri: _intact_blob(store, uri), part["blob_uri"].to_list()))
            bad = [tid for tid, sha, b in zip(part["thought_id"], part["blob_sha256"], blobs)
                   if b is None or _sha(b) != sha]
            if bad:
                raise ValueError(f"blob bytes do not match blob_sha256 for thought(s) {', '.join(bad[:5])}; "
                                 "run `g2u dataset verify` before publishing")
            writer.write_table(_arrow_part(part, blobs, sources, schema), row_group_size=ROWS_PER_GROUP)
            tick(part.height)
    return buf.getvalue().to_pybytes()


def _intact_blob(store: ThoughtStore, uri: str) -> bytes | None:
    """A blob's bytes, or None when they do not match its name (reported per thought by the caller)."""
    try:
        return store.read_blob(uri)
    except BlobCorruptError:
        return None


def _read_release_json(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(_join(path, RELEASE_JSON)))
    except FileNotFoundError:
        return None


def _own_files(fs: fsspec.AbstractFileSystem, path: str) -> tuple[set[str], set[str]]:
    """(files a publish writes, other files) under an existing release folder, relative paths."""
    base = path.rstrip("/") + "/"
    present = {p[len(base):] for p in fs.find(path) if p.startswith(base)} if fs.exists(path) else set()
    own = {f for f in present if f in (CARD, RELEASE_JSON, CHECKSUMS) or _SHARD.match(f)}
    return own, present - own


def _prepare_target(fs: fsspec.AbstractFileSystem, path: str, uri: str, existing: dict[str, Any] | None,
                    fingerprint: str, overwrite: bool) -> set[str]:
    """Refuse to clobber another release or foreign files (unless overwrite); mark the folder
    incomplete (no checksums) and return the files an earlier publish left there."""
    if existing is not None and existing.get("fingerprint") != fingerprint and not overwrite:
        raise FileExistsError(f"{uri} holds another release ({existing.get('name')} of dataset version "
                              f"{existing.get('dataset_version')}); pass overwrite=True (--overwrite) to replace it")
    own, foreign = _own_files(fs, path)
    if foreign and not overwrite:
        raise FileExistsError(f"{uri} holds files that are not part of a release ({', '.join(sorted(foreign)[:3])}); "
                              "pass overwrite=True (--overwrite) to write into it")
    if CHECKSUMS in own:
        fs.rm_file(_join(path, CHECKSUMS))  # incomplete until the new checksums land
    return own


def publish(store: ThoughtStore, version: int, name: str, to_uri: str | None = None,
            licence: str = DEFAULT_LICENCE, items: pl.DataFrame | None = None,
            source_images: Mapping[str, bytes] | None = None, *, storage_options: dict[str, Any] | None = None,
            overwrite: bool = False, max_shard_bytes: int = MAX_SHARD_BYTES,
            on_progress: Progress | None = None) -> ReleaseResult:
    """Write a self-describing release of `version` to `<root>/releases/<name>/` or `to_uri`.

    items: item fields (ITEMS_SCHEMA columns); default: the store's runs/*/items.parquet.
    source_images: image_sha256 -> bytes of the source image, adds a `source_image` column.
    Idempotent: the same content at the same place is left as it is (written=False); a different
    release already there is an error unless overwrite=True."""
    if not _NAME.match(name):
        raise ValueError(f"release name must match {_NAME.pattern}: {name!r}")
    entry = history_entry(store, version)
    if items is None:
        items = discover_items(store)
    rows = release_rows(store, version, items)
    if rows.is_empty():
        raise ValueError(f"dataset version {version} has no ok thought to publish")
    fs, path, uri = _target(store, name, to_uri, storage_options)
    fingerprint = _fingerprint(name, version, licence, rows, source_images, max_shard_bytes)

    existing = _read_release_json(fs, path)
    if existing is not None and existing.get("fingerprint") == fingerprint and _verify_at(fs, path, uri).ok:
        return ReleaseResult(uri, name, version, rows.height, existing.get("files", []), written=False)
    old_files = _prepare_target(fs, path, uri, existing, fingerprint, overwrite)

    sizes = [int(b or 0) + (len(source_images.get(s, b"")) if source_images else 0) + 1024
             for b, s in zip(rows["blob_bytes"].to_list(), rows["image_sha256"].to_list())]
    ranges = _shards(sizes, max_shard_bytes)
    schema = release_schema(source_images is not None)
    checksums: dict[str, str] = {}
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if on_progress:
            on_progress(done[0], rows.height)

    with ThreadPoolExecutor(IO_THREADS) as pool:
        for i, (start, end) in enumerate(ranges):
            rel = f"data/train-{i:05d}-of-{len(ranges):05d}.parquet"
            data = _write_shard(store, rows.slice(start, end - start), source_images, schema, pool, tick)
            fs.makedirs(_join(path, "data"), exist_ok=True)
            fs.pipe_file(_join(path, rel), data)
            checksums[rel] = _sha(data)
    shards = sorted(checksums)
    date = entry["timestamp"].isoformat()
    card = render_card(name=name, version=version, date=date, licence=licence, rows=rows, shards=shards,
                       schema=[(f.name, "image" if f.type == IMAGE_TYPE else str(f.type)) for f in schema],
                       has_items=items is not None and not rows["question"].is_null().all(),
                       has_source=source_images is not None)
    meta = release_json(format=RELEASE_FORMAT, name=name, dataset_version=version, date=date, rows=rows.height,
                        licence=licence, fingerprint=fingerprint, files=shards,
                        columns=[f.name for f in schema])
    for rel, text in ((CARD, card), (RELEASE_JSON, meta)):
        data = text.encode("utf-8")
        fs.pipe_file(_join(path, rel), data)
        checksums[rel] = _sha(data)
    for stale in old_files - set(checksums):
        if fs.exists(_join(path, stale)):
            fs.rm_file(_join(path, stale))
    listing = "".join(f"{sha}  {rel}\n" for rel, sha in sorted(checksums.items()))
    fs.pipe_file(_join(path, CHECKSUMS), listing.encode("utf-8"))
    return ReleaseResult(uri, name, version, rows.height, shards, written=True)


# ---- verify a release -------------------------------------------------------------------------
@dataclass
class ReleaseReport:
    uri: str
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # files present but not in checksums.sha256
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.unlisted or self.error)


def _read_checksums(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, str]:
    try:
        text = fs.cat_file(_join(path, CHECKSUMS)).decode("utf-8")
    except FileNotFoundError:
        return {}
    out = {}
    for line in text.splitlines():
        m = _CHECK_LINE.match(line.strip())
        if m:
            out[m.group(2)] = m.group(1)
    return out


def _verify_at(fs: fsspec.AbstractFileSystem, path: str, uri: str) -> ReleaseReport:
    report = ReleaseReport(uri)
    listed = _read_checksums(fs, path)
    if not listed:
        report.error = f"no {CHECKSUMS} (or an empty one) in {uri}"
        return report
    for rel, sha in sorted(listed.items()):
        actual = _hash_file(fs, _join(path, rel))
        report.checked += 1
        if actual is None:
            report.missing.append(rel)
        elif actual != sha:
            report.mismatched.append(rel)
    base = path.rstrip("/") + "/"
    present = {p[len(base):] for p in fs.find(path) if p.startswith(base)}
    report.unlisted = sorted(present - set(listed) - {CHECKSUMS})
    return report


def verify_release(uri: str, storage_options: dict[str, Any] | None = None) -> ReleaseReport:
    """Re-check every file of a release against its checksums.sha256."""
    fs, path = fsspec.core.url_to_fs(uri.rstrip("/"), **(storage_options or {}))
    return _verify_at(fs, path, uri)
