"""Benchmark loaders: VLMEvalKit TSV, Parquet and JSONL files into `Item`s.

One bad row never stops a load: image problems go to `Item.image_error`, other row problems to
`Item.extra["load_error"]` (starting "row N:", N counting data rows from 1), and the `items` suite
quarantines both. A row too broken to parse (an unbalanced quote in a TSV, a JSONL line that is no
JSON object) still becomes an Item, with item_id "row-N", so that it reaches the quarantine too.
Only a missing file, an unknown format, an unreadable header or a file without a `question` column
raises.

Image references (path or URL values in Parquet/JSONL) are read under `ImagesConfig`: paths only
inside the benchmark file's folder or the configured roots, http(s) only when allowed (size and
time capped), no other scheme unless it is the benchmark file's own filesystem, and a pixel budget
checked on the image header before any pixel is decoded.
"""
from __future__ import annotations

import base64
import binascii
import bisect
import csv
import dataclasses
import functools
import heapq
import io
import itertools
import json
import math
import os
import posixpath
import re
import sys
import time
from typing import Any, Callable, Iterator, Mapping

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from g2u_tasks import images as imaging
from g2u_tasks.config import ImagesConfig
from g2u_tasks.records import QUESTION_TYPES, Item, images_sha256, sha256_hex

ID_COLUMNS = ("index", "item_id", "id", "question_id")  # first present wins
IMAGE_COLUMNS = ("image", "images")
POINTER_MAX_CHARS = 64  # VLMEvalKit: an image cell this short is another row's index
_LETTER = re.compile(r"^[A-Z]$")
_MISSING_TEXT = {"", "nan", "NaN"}
URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")  # two letters at least: "C:\..." is a drive
_SHOWN = 120  # characters of a hostile value quoted in a reason


class ImageProblem(Exception):
    """One image of a row could not be read; the message names the problem."""


@dataclasses.dataclass
class _Broken:
    """A row that could not be parsed at all: its number and why."""

    number: int
    reason: str
    excerpt: str = ""


@dataclasses.dataclass
class _Rows:
    columns: list[str]
    rows: list[dict[str, Any]]
    numbers: list[int]  # row number (1-based, header excluded) of each parsed row
    broken: list[_Broken]
    read_cell: Callable[["ValueCell"], Any] | None = None  # Parquet/JSONL: a ValueCell's value


def image_policy(images: ImagesConfig | Mapping[str, Any] | None) -> ImagesConfig:
    """The policy as given, validated; the safe defaults when none is given."""
    if images is None:
        return ImagesConfig()
    return images if isinstance(images, ImagesConfig) else ImagesConfig.model_validate(dict(images))


# ---------------------------------------------------------------- entry point


def load_benchmark(name: str, source: str, **options: Any) -> list[Item]:
    """Every item of `iter_benchmark(name, source, **options)`, as a list."""
    return list(iter_benchmark(name, source, **options))


def iter_benchmark(
    name: str,
    source: str,
    *,
    question_type: str | None = None,
    limit: int | None = None,
    storage_options: dict | None = None,
    prepare_rows: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
    images: ImagesConfig | Mapping[str, Any] | None = None,
) -> Iterator[Item]:
    """Items of benchmark `name` read from `source` (fsspec URI or local path; .tsv, .parquet, .jsonl),
    in file order, each made (and its images read) only when iterated to.

    `prepare_rows`, if given, rewrites the raw rows (all of them, before `limit` for TSV) before items
    are made: renames, value conversions, derived columns (g2u_tasks/adapters.py); it keeps their
    order. Image cells stay in the file until their item is made (TSV: `TsvCell`; Parquet, JSONL:
    `ValueCell`, also any other binary Parquet column), so a hook sees them as such; a null cell is None. `images`: the image policy (RunConfig.images); None is the safe default."""
    if question_type is not None and question_type not in QUESTION_TYPES:
        raise ValueError(f"benchmark {name!r}: question_type must be one of {QUESTION_TYPES}, got {question_type!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"benchmark {name!r}: limit must be 0 or more, got {limit}")
    policy = image_policy(images)
    options = dict(storage_options or {})
    fs, path = fsspec.core.url_to_fs(source, **options)
    if not fs.exists(path):
        raise FileNotFoundError(f"benchmark {name!r}: source file not found: {source}")
    suffix = path.lower().rsplit(".", 1)[-1]
    if suffix not in ("tsv", "parquet", "jsonl"):
        raise ValueError(f"benchmark {name!r}: unsupported format {source!r} (expected .tsv, .parquet or .jsonl)")
    return _items(name, source, fs, path, suffix, question_type, limit, options, prepare_rows, policy)


def _items(name: str, source: str, fs: Any, path: str, suffix: str, question_type: str | None,
           limit: int | None, options: dict, prepare_rows: Callable | None, policy: ImagesConfig) -> Iterator[Item]:
    """The items of one open benchmark file; the file stays open while they are made (TSV image
    cells are read back from it)."""
    try:
        f = fs.open(path, "rb")
        if suffix == "tsv":
            table = _read_tsv(f)
        elif suffix == "parquet":
            table = _read_parquet(f, limit)
        else:
            table = _read_jsonl(f, limit)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"benchmark {name!r}: source file not found: {source}") from exc
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"benchmark {name!r}: cannot read {source}: {exc}") from exc
    images_source = None
    try:
        columns, rows, numbers = table.columns, table.rows, table.numbers
        if prepare_rows is not None:
            rows = prepare_rows(rows)
            if len(rows) != len(numbers):  # a hook that drops or adds rows: number what is left
                numbers = list(range(1, len(rows) + 1))
            if rows:  # columns follow the rewritten rows: originals still present, then new ones
                present = dict.fromkeys(k for row in rows for k in row)
                columns = [c for c in columns if c in present] + [k for k in present if k not in columns]
        if "question" not in columns:
            raise ValueError(f"benchmark {name!r}: {source} has no 'question' column; columns: {columns}")

        if suffix == "tsv":  # TSV image pointers may lead to any row, also one past the limit
            images_of = _tsv_image_reader(rows, policy, functools.partial(_tsv_cell, f))
        else:
            images_source = ImageSource(fs, posixpath.dirname(path), options, policy)
            images_of = _value_image_reader(images_source, table.read_cell)
        broken = table.broken
        if limit is not None:  # the first `limit` rows of the file, broken ones included
            kept = set(sorted([*numbers, *(b.number for b in broken)])[:limit])
            pairs = [(n, r) for n, r in zip(numbers, rows) if n in kept]
            numbers, rows = [n for n, _ in pairs], [r for _, r in pairs]
            broken = [b for b in broken if b.number in kept]
        letter_columns = sorted(c for c in columns if _LETTER.match(c))
        id_column = next((c for c in ID_COLUMNS if c in columns), None)
        first_row: dict[str, int] = {}

        def made() -> Iterator[tuple[int, Item]]:
            for number, row in zip(numbers, rows):
                if table.read_cell is not None:  # a deferred cell a hook moved out of the image columns
                    row = {k: table.read_cell(v) if isinstance(v, ValueCell) and k not in IMAGE_COLUMNS else v
                           for k, v in row.items()}
                errors = [e for e in [cell_text(row.get("load_error"))] if e]  # from the adapter's row hooks
                item_id, id_error = _item_id(row, id_column, number)
                if id_error:
                    errors.append(id_error)
                found, problems, notes = images_of(row)
                item = _make_item(name, item_id, row, columns, letter_columns, id_column, found, problems,
                                  question_type, errors, notes)
                if item_id in first_row:
                    errors.append(f"duplicate item_id {item_id!r} (first at row {first_row[item_id]})")
                first_row.setdefault(item_id, number)
                if errors:
                    item.extra["load_error"] = f"row {number}: " + "; ".join(errors)
                yield number, item

        unparsed = ((b.number, _broken_item(name, b, question_type)) for b in broken)
        for _, item in heapq.merge(made(), unparsed, key=lambda pair: pair[0]):
            yield item
    finally:
        if images_source is not None:
            images_source.close()
        f.close()


def _item_id(row: dict[str, Any], id_column: str | None, number: int) -> tuple[str, str | None]:
    """The row's id, or "row-N" and the reason when its id cell is empty or blank (never the
    position: it could collide with a real index). Files without an id column number rows from 0,
    counting broken rows too, so that a row's id does not change when another row breaks."""
    if id_column is None:
        return str(number - 1), None
    raw = row.get(id_column)
    text = cell_text(raw)
    if text is not None:
        return text.strip(), None
    if isinstance(raw, str) and raw and raw.strip() == "":
        return f"row-{number}", f"blank {id_column} {raw!r}"
    shown = "" if raw is None or (isinstance(raw, str) and not raw) else f" ({short_text(raw)})"
    return f"row-{number}", f"empty {id_column}{shown}"


def _broken_item(name: str, broken: _Broken, question_type: str | None) -> Item:
    extra = {"load_error": f"row {broken.number}: {broken.reason}"}
    if broken.excerpt:
        extra["raw_row"] = broken.excerpt
    return Item(benchmark=name, item_id=f"row-{broken.number}", question="", options={}, answer=None,
                category=None, question_type=question_type or "open", image_sha256="", images=(), extra=extra)


def short_text(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:_SHOWN] + ("..." if len(text) > _SHOWN else ""))


# ---------------------------------------------------------------- readers


_TSV = dict(delimiter="\t", quotechar='"', doublequote=True, strict=True)  # pandas to_csv(sep="\t")


@dataclasses.dataclass(frozen=True)
class TsvCell:
    """An image cell left in the TSV file until its item is made: cell `column` of the record that
    starts at byte `offset` (`_tsv_cell` reads it back)."""

    offset: int
    column: int


class _Lines:
    """A binary file's lines as text from byte `offset` on; `offset`/`line`: where the next line
    starts and its index; `first`: (where the line after it starts, text) of the first line read
    since `mark()`."""

    def __init__(self, f: Any, offset: int = 0, line: int = 0):
        self.f, self.offset, self.line = f, offset, line
        self.first: tuple[int, str] | None = None
        f.seek(offset)

    def mark(self) -> None:
        self.first = None

    def restart(self, offset: int, line: int) -> None:
        self.f.seek(offset)
        self.offset, self.line = offset, line

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        raw = self.f.readline()
        if not raw:
            raise StopIteration
        text = raw.decode("utf-8", errors="replace")
        if self.offset == 0 and text.startswith("\ufeff"):
            text = text[1:]
        if self.first is None:
            self.first = (self.offset + len(raw), text)
        self.offset += len(raw)
        self.line += 1
        return text


def _read_tsv(f: Any) -> _Rows:
    """Cells as strings (None when empty), pandas `to_csv(sep='\\t')` quoting, record by record: a
    row whose quoting is broken or whose cell count differs from the header's is one broken row,
    and parsing resumes on the next line, so the rows after it still load. Read as a stream: image
    cells longer than a pointer are kept as `TsvCell`s (their place in the file), not as text."""
    # base64 image cells are far longer than csv's default 128 KB cell limit
    size = f.seek(0, io.SEEK_END)
    csv.field_size_limit(max(csv.field_size_limit(), min(size + 1, 2**31 - 1, sys.maxsize)))
    records = _tsv_records(_Lines(f))
    header = next(records, None)
    if header is None:
        raise ValueError("empty TSV file")
    _, _, header_cells, header_error, _ = header
    if header_error or not header_cells:
        raise ValueError(f"the header line cannot be parsed ({header_error or 'empty'})")
    width = len(header_cells)
    deferred = {i for i, c in enumerate(header_cells) if c in IMAGE_COLUMNS}
    rows: list[dict[str, Any]] = []
    numbers: list[int] = []
    broken: list[_Broken] = []
    for number, (line, offset, cells, error, excerpt) in enumerate(records, start=1):
        if error is None and len(cells) != width:
            error = f"{len(cells)} cells, the header has {width}"
        elif error is None and _swallowed_rows(cells, width):
            error = "a quoted cell runs over several lines that look like rows (unbalanced quote)"
        if error is not None:
            broken.append(_Broken(number, f"malformed TSV row at line {line + 1}: {error}", excerpt))
            continue
        rows.append({c: (TsvCell(offset, i) if i in deferred and len(v.strip()) > POINTER_MAX_CHARS
                         else v if v != "" else None) for i, (c, v) in enumerate(zip(header_cells, cells))})
        numbers.append(number)
    return _Rows(header_cells, rows, numbers, broken)


def _tsv_records(lines: _Lines) -> Iterator[tuple[int, int, list[str] | None, str | None, str]]:
    """(first line index, its byte offset, cells, None, excerpt) per record, or (line index, offset,
    None, reason, excerpt) for a line where no well-formed record starts; parsing then resumes at
    the next line. Blank lines are skipped."""
    while True:
        line, offset = lines.line, lines.offset
        lines.mark()
        try:
            cells = next(csv.reader(lines, **_TSV))
        except StopIteration:
            return
        except csv.Error as exc:
            next_offset, text = lines.first
            detail = "the quoted cell never closes" if "end of data" in str(exc) else str(exc)
            lines.restart(next_offset, line + 1)
            yield line, offset, None, f"unbalanced quote ({detail})", text[:_SHOWN]
            continue
        if cells:
            yield line, offset, cells, None, lines.first[1][:_SHOWN]


def _tsv_cell(f: Any, cell: TsvCell) -> str:
    """The text of a cell left in the file."""
    return next(csv.reader(_Lines(f, cell.offset), **_TSV))[cell.column]


def _swallowed_rows(cells: list[str], width: int) -> bool:
    """A record over several lines whose inner lines hold a full row's worth of tabs is an
    unbalanced quote that happened to close later, not a cell with line breaks."""
    inner_lines = (part for cell in cells if "\n" in cell or "\r" in cell for part in cell.splitlines()[1:-1])
    return any(part.count("\t") >= width - 1 for part in inner_lines)


@dataclasses.dataclass(frozen=True)
class ValueCell:
    """A Parquet or JSONL cell left in the file until its item is made: column `column` of the row
    at `at` (Parquet: the row's index in the file; JSONL: the byte offset of its line)."""

    at: int
    column: str


PARQUET_BATCH_ROWS = 256  # rows read at once while scanning a Parquet file


def _holds_binary(typ: pa.DataType) -> bool:
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or pa.types.is_fixed_size_binary(typ):
        return True
    return any(_holds_binary(typ.field(i).type) for i in range(typ.num_fields))


def _read_parquet(f: Any, limit: int | None) -> _Rows:
    """Batch by batch: image columns (and any other column holding binary) stay in the file as
    `ValueCell`s (None where null), read back a row group at a time by `_ParquetValues`."""
    pf = pq.ParquetFile(f)
    schema = pf.schema_arrow
    deferred = [n for n in schema.names if n in IMAGE_COLUMNS or _holds_binary(schema.field(n).type)]
    rows: list[dict[str, Any]] = []
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        if limit is not None:
            batch = batch.slice(0, max(0, limit - len(rows)))
        if batch.num_rows == 0:
            break
        start = len(rows)
        small = batch.drop_columns(deferred)
        cells = pl.from_arrow(small).to_dicts() if small.num_columns else [{} for _ in range(batch.num_rows)]
        nulls = {c: batch.column(c).is_null().to_pylist() for c in deferred}
        rows += [{c: cells[i][c] if c not in nulls else None if nulls[c][i] else ValueCell(start + i, c)
                  for c in schema.names} for i in range(batch.num_rows)]
    return _Rows(schema.names, rows, list(range(1, len(rows) + 1)), [], _ParquetValues(pf))


class _ParquetValues:
    """A `ValueCell`'s value, read with its row group's column (the row group kept for the next call:
    items are made in file order)."""

    def __init__(self, pf: pq.ParquetFile):
        self.pf = pf
        self.ends = list(itertools.accumulate(pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)))
        self.group: int | None = None
        self.columns: dict[str, list[Any]] = {}

    def __call__(self, cell: ValueCell) -> Any:
        group = bisect.bisect_right(self.ends, cell.at)
        if group != self.group:
            self.group, self.columns = group, {}
        if cell.column not in self.columns:
            table = self.pf.read_row_group(group, columns=[cell.column])
            self.columns[cell.column] = pl.from_arrow(table).to_series().to_list()
        return self.columns[cell.column][cell.at - (self.ends[group - 1] if group else 0)]


def _read_jsonl(f: Any, limit: int | None) -> _Rows:
    """Line by line: a malformed line is one broken row; mixed cell types do not stop the load. Image
    values other than short references stay in the file as `ValueCell`s (the line is parsed again)."""
    columns: dict[str, None] = {}
    table = _Rows([], [], [], [], functools.partial(_jsonl_cell, f))
    number = offset = 0
    for line_no, raw in enumerate(f, start=1):
        at, offset = offset, offset + len(raw)
        if limit is not None and number >= limit:
            break
        line = raw.decode("utf-8", errors="replace").strip()
        if not line:
            continue
        number += 1
        try:
            row = json.loads(line)
        except ValueError as exc:
            table.broken.append(_Broken(number, f"invalid JSON at line {line_no} ({exc})", line[:_SHOWN]))
            continue
        if not isinstance(row, dict):
            table.broken.append(_Broken(number, f"line {line_no} is not a JSON object", line[:_SHOWN]))
            continue
        for c in IMAGE_COLUMNS:
            value = row.get(c)
            if value is not None and not (isinstance(value, str) and len(value) <= POINTER_MAX_CHARS):
                row[c] = ValueCell(at, c)
        columns.update(dict.fromkeys(row))
        table.rows.append(row)
        table.numbers.append(number)
    table.columns = list(columns)
    return table


def _jsonl_cell(f: Any, cell: ValueCell) -> Any:
    f.seek(cell.at)
    return json.loads(f.readline())[cell.column]


# ---------------------------------------------------------------- items


def _make_item(
    name: str,
    item_id: str,
    row: dict[str, Any],
    columns: list[str],
    letter_columns: list[str],
    id_column: str | None,
    images: list[bytes],
    problems: list[str],
    question_type: str | None,
    errors: list[str],
    notes: list[str],
) -> Item:
    """The Item of one row; what is wrong with the row is appended to `errors`."""
    options, options_column = _options(row, letter_columns)
    answer = cell_text(row.get("answer"))
    answer = answer.strip() if answer is not None else None
    if options and answer is not None and answer not in options:
        matches = [k for k, v in options.items() if v.strip() == answer]
        answer = matches[0] if len(matches) == 1 else answer  # option text given instead of its letter
    qtype = question_type or infer_question_type(options, answer)
    if qtype == "yes_no" and answer is not None and answer.lower() in ("yes", "no"):
        answer = answer.capitalize()
    if qtype == "mcq" and options and answer is not None and answer not in options:
        errors.append(f"answer {short_text(answer)} is not among the options {', '.join(options)}")

    used = {id_column, "question", "answer", "category", "hint", "load_error", options_column, *letter_columns,
            *IMAGE_COLUMNS}
    extra = {c: v for c in columns if c not in used and (v := _extra_text(row.get(c))) is not None}
    if notes:
        extra["image_note"] = "; ".join(notes)
    question = cell_text(row.get("question"))
    if question is None:
        errors.append("empty question")
    return Item(
        benchmark=name,
        item_id=item_id,
        question=question or "",
        options=options,
        answer=answer,
        category=cell_text(row.get("category")),
        question_type=qtype,
        image_sha256=images_sha256(images) if images else "",
        images=tuple(images),
        hint=cell_text(row.get("hint")),
        extra=extra,
        image_error="; ".join(problems) or None,
    )


def infer_question_type(options: dict[str, str], answer: str | None) -> str:
    """mcq with options; yes_no for a Yes/No answer; numeric when the answer is a number; else open."""
    if options:
        return "mcq"
    if answer is None:
        return "open"
    if answer.strip().lower() in ("yes", "no"):
        return "yes_no"
    try:
        return "numeric" if math.isfinite(float(answer)) else "open"
    except ValueError:
        return "open"


def _options(row: dict[str, Any], letter_columns: list[str]) -> tuple[dict[str, str], str | None]:
    """Options from A..Z columns, else from an `options` list/dict (or a list string); empty ones dropped."""
    options = {c: t for c in letter_columns if (t := cell_text(row.get(c))) is not None}
    if options or "options" not in row:
        return options, None
    value = row["options"]
    if isinstance(value, str):
        value = parse_list_cell(value) if value.strip().startswith("[") else _json_object(value)
    if isinstance(value, dict):
        pairs = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        pairs = list(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", value))
    else:
        pairs = []
    return {k: t for k, v in pairs if (t := cell_text(v)) is not None}, "options"


# ---------------------------------------------------------------- images

_Images = tuple[list[bytes], list[str], list[str]]  # images read, problems, notes (e.g. downscaled)


def _tsv_image_reader(rows: list[dict[str, Any]], policy: ImagesConfig,
                      read_cell: Callable[[TsvCell], str]) -> Callable[[dict[str, Any]], _Images]:
    """VLMEvalKit `image` cells: base64, a list string of base64, or (≤ 64 chars) another row's index.
    Long cells are `TsvCell`s, read back with `read_cell` when their item is made."""
    by_index: dict[str, Any] = {}
    for row in rows:
        index, cell = cell_text(row.get("index")), row.get("image")
        if index is not None and (isinstance(cell, TsvCell) or cell_text(cell) is not None):
            by_index.setdefault(index.strip(), cell)

    @functools.lru_cache(maxsize=64)  # rows pointing at one image are usually near each other
    def decode(cell: TsvCell | str) -> _Images:
        text = (read_cell(cell) if isinstance(cell, TsvCell) else cell).strip()
        parts = parse_list_cell(text) if text.startswith("[") else [text]
        if parts is None:
            return [], ["image 0: cannot parse image list cell"], []
        return _read_all(parts, _base64_bytes, policy)

    def read(row: dict[str, Any]) -> _Images:
        cell = row.get("image")
        if isinstance(cell, TsvCell):
            return decode(cell)
        cell = cell_text(cell)
        if cell is None:
            return [], ["image 0: no image in row"], []
        cell = cell.strip()
        if len(cell) > POINTER_MAX_CHARS:
            return decode(cell)
        target = by_index.get(cell)
        if target is None:
            return [], [f"image 0: dangling image pointer {cell!r} (no row has that index)"], []
        if not isinstance(target, TsvCell) and len(target.strip()) <= POINTER_MAX_CHARS:
            return [], [f"image 0: image pointer {cell!r} leads to another pointer"], []
        return decode(target)

    return read


class ImageSource:
    """Reads the image references of one benchmark file under an image policy.

    Paths resolve against the benchmark file's folder and must stay inside it or a configured root
    (symlinks followed before the check); `scheme://` references only on the filesystem of one of
    those folders and inside it; http(s) only when the policy allows it."""

    def __init__(self, fs: Any, base_dir: str, storage_options: dict, policy: ImagesConfig,
                 extra_roots: list[str] = ()):
        self.fs, self.base_dir, self.policy = fs, base_dir, policy
        self._roots = [(fs, base_dir)]
        for root in [*policy.roots, *extra_roots]:
            try:
                self._roots.append(fsspec.core.url_to_fs(root if URI_SCHEME.match(root) else os.path.abspath(root),
                                                         **storage_options))
            except (ValueError, ImportError, OSError) as exc:
                raise ValueError(f"images.roots: cannot use {root!r} ({exc})") from None
        self._roots = [(rfs, _real(rfs, rp)) for rfs, rp in self._roots]
        self._client = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def read(self, reference: str) -> bytes:
        ref = reference.strip()
        if "\x00" in ref:
            raise ImageProblem(f"image reference {short_text(ref)} refused: it contains a NUL character")
        scheme = URI_SCHEME.match(ref)
        if scheme and scheme.group(1).lower() in ("http", "https"):
            return self._fetch(ref)
        if scheme:
            return self._read_url(ref, scheme.group(1).lower())
        path = ref if posixpath.isabs(ref) else posixpath.join(self.base_dir, ref)
        return self._read_inside(self.fs, path, ref)

    def _read_url(self, ref: str, scheme: str) -> bytes:
        for root_fs, _ in self._roots:
            if scheme in _protocols(root_fs) and "://" in ref:
                return self._read_inside(root_fs, root_fs._strip_protocol(ref), ref)
        raise ImageProblem(
            f"image reference {short_text(ref)} refused: scheme {scheme!r} is not the benchmark file's "
            "filesystem nor that of a configured image root (images.roots); remote images are http(s) only"
        )

    def _read_inside(self, fs: Any, path: str, ref: str) -> bytes:
        local = _is_local(fs)
        real = _real(fs, path)
        lexical = os.path.normpath(path) if local else posixpath.normpath(path)
        if not any(_inside(real, root) for rfs, root in self._roots if _is_local(rfs) == local
                   and (local or _protocols(rfs) & _protocols(fs))):
            why = ("a symlink leads outside" if any(_inside(lexical, root) for _, root in self._roots)
                   else "it resolves outside")
            raise ImageProblem(f"image reference {short_text(ref)} refused: {why} the benchmark folder and "
                                "the configured image roots (images.roots)")
        try:
            if local:  # open exactly the path that was checked
                with open(real, "rb") as f:
                    return f.read()
            with fs.open(real, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ImageProblem(f"image file not found: {ref}") from None
        except OSError as exc:
            raise ImageProblem(f"cannot read image file {ref}: {exc}") from None

    def _fetch(self, url: str) -> bytes:
        policy = self.policy
        if not policy.allow_remote:
            raise ImageProblem(f"remote image {short_text(url)} refused: images.allow_remote is off")
        import httpx

        if self._client is None:  # trust_env off: no proxy or .netrc credentials sent to benchmark URLs
            self._client = httpx.Client(timeout=policy.remote_timeout_s, follow_redirects=True, max_redirects=3,
                                        trust_env=False, headers={"Accept-Encoding": "identity"})
        deadline = time.monotonic() + policy.remote_timeout_s
        cap = policy.remote_max_bytes
        try:
            with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ImageProblem(f"remote image {short_text(url)}: HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise ImageProblem(f"remote image {short_text(url)} refused: {declared} bytes is over "
                                        f"images.remote_max_bytes ({cap})")
                data = bytearray()
                for chunk in response.iter_raw():
                    data += chunk
                    if len(data) > cap:
                        raise ImageProblem(f"remote image {short_text(url)} refused: more than "
                                            f"images.remote_max_bytes ({cap}) bytes")
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("deadline")
                return bytes(data)
        except httpx.TimeoutException:
            raise ImageProblem(f"remote image {short_text(url)}: no complete answer within "
                                f"images.remote_timeout_s ({policy.remote_timeout_s:g} s)") from None
        except httpx.HTTPError as exc:
            raise ImageProblem(f"remote image {short_text(url)}: {type(exc).__name__}: {exc}") from None


def _protocols(fs: Any) -> set[str]:
    return {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)


def _is_local(fs: Any) -> bool:
    return "file" in _protocols(fs)


def _real(fs: Any, path: str) -> str:
    return os.path.realpath(path) if _is_local(fs) else posixpath.normpath(path)


def _inside(path: str, root: str) -> bool:
    base = root.rstrip("/" + os.sep)  # "/" itself becomes "": everything absolute is inside
    return path in (root, base) or path.startswith(base + "/") or path.startswith(base + os.sep)


def _value_image_reader(source: ImageSource,
                        read_cell: Callable[[ValueCell], Any]) -> Callable[[dict[str, Any]], _Images]:
    """Parquet/JSONL: bytes, {bytes, path} structs, base64 strings or references (ImageSource);
    `ValueCell`s are read from the file first."""

    def to_bytes(value: Any) -> bytes:
        if isinstance(value, ValueCell):
            value = read_cell(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, dict):
            data = value.get("bytes")
            if data is not None:
                return _base64_bytes(data) if isinstance(data, str) else to_bytes(data)
            if value.get("path"):
                return source.read(str(value["path"]))
            raise ImageProblem("image struct has neither bytes nor path")
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("data:") and ";base64," in text:  # inline bytes, not a reference
                return _base64_bytes(text.split(",", 1)[1])
            # base64 never holds '.', ':' or '\', and an encoded image is longer than 64 characters
            if len(text) <= POINTER_MAX_CHARS or any(ch in text for ch in ".:\\"):
                return source.read(text)
            return _base64_bytes(text)
        raise ImageProblem(f"unsupported image value of type {type(value).__name__}")

    def read(row: dict[str, Any]) -> _Images:
        value = next((row[c] for c in IMAGE_COLUMNS if row.get(c) is not None), None)
        if isinstance(value, ValueCell):
            value = read_cell(value)
        if value is None:
            return [], ["image 0: no image in row"], []
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        return _read_all(values, to_bytes, source.policy)

    return read


def _read_all(values: list[Any], to_bytes: Callable[[Any], bytes], policy: ImagesConfig) -> _Images:
    """The images that could be read, one message per image that could not, and notes."""
    images: list[bytes] = []
    problems: list[str] = []
    notes: list[str] = []
    for i, value in enumerate(values):
        try:
            if value is None:
                raise ImageProblem("missing")
            data, note = _checked_image(to_bytes(value), policy)
            images.append(data)
            if note:
                notes.append(f"image {i}: {note}")
        except ImageProblem as exc:
            problems.append(f"image {i}: {exc}")
    if not values:
        problems.append("image 0: empty image list")
    return images, problems, notes


def _base64_bytes(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageProblem(f"invalid base64 ({exc})") from None


def _checked_image(data: bytes, policy: ImagesConfig) -> tuple[bytes, str | None]:
    """The image bytes (downscaled when over budget and so configured) and a note; the pixel
    budget is decided on the header, before any pixel is decoded."""
    try:
        imaging.check_pixels(data, policy.max_pixels)
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        return data, None
    except imaging.ImageTooLarge as exc:
        if policy.oversize != "downscale":
            raise ImageProblem(f"{exc}; refused (images.oversize: refuse)") from None
        try:
            return imaging.downscale(data, policy.max_pixels)
        except imaging.ImageTooLarge as again:
            raise ImageProblem(str(again)) from None
        except Exception as err:  # PIL raises many types for corrupt data
            raise ImageProblem(f"cannot decode image ({type(err).__name__}: {err})") from None
    except UnidentifiedImageError:
        raise ImageProblem("cannot identify image file") from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ImageProblem(f"cannot decode image ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------- cells


def parse_list_cell(text: str) -> list[str | None] | None:
    """A list cell such as `['a', "b's"]` or `["x", null]`; None when the text is not such a list.

    JSON first, then a small parser for Python-style quoted strings (no eval)."""
    s = text.strip()
    if not (s.startswith("[") and s.endswith("]")):
        return None
    try:
        value = json.loads(s)
        if isinstance(value, list):
            return [None if v is None else v if isinstance(v, str) else json.dumps(v) for v in value]
    except ValueError:
        pass
    return _parse_python_list(s[1:-1])


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


def _parse_python_list(body: str) -> list[str | None] | None:
    out: list[str | None] = []
    i, n = 0, len(body)
    while True:
        while i < n and body[i].isspace():
            i += 1
        if i >= n:
            return out
        if body[i] in "'\"":
            quote, i, chars = body[i], i + 1, []
            while i < n and body[i] != quote:
                if body[i] == "\\" and i + 1 < n:
                    chars.append(_ESCAPES.get(body[i + 1], "\\" + body[i + 1]))
                    i += 2
                else:
                    chars.append(body[i])
                    i += 1
            if i >= n:
                return None  # unterminated string
            out.append("".join(chars))
            i += 1
        else:
            end = body.find(",", i)
            end = n if end < 0 else end
            token = body[i:end].strip()
            out.append(None if token in ("None", "null", "nan") else token)
            i = end
        while i < n and body[i].isspace():
            i += 1
        if i < n and body[i] != ",":
            return None  # junk after an element
        i += 1


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def cell_text(value: Any) -> str | None:
    """A cell as text; None for null, NaN, empty or 'nan'."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        value = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    elif isinstance(value, (list, tuple, dict)):
        value = json.dumps(_jsonable(value), ensure_ascii=False)
    elif not isinstance(value, str):
        value = str(value)
    return None if value.strip() in _MISSING_TEXT else value


def _extra_text(value: Any) -> str | None:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes sha256={sha256_hex(bytes(value))[:12]}>"
    return cell_text(value)


def _jsonable(value: Any) -> Any:
    """Nested value with binary blobs replaced by a short marker (keeps `extra` small)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
