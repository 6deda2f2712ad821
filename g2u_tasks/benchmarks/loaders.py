"""Benchmark loaders: VLMEvalKit TSV, Parquet and JSONL files into `Item`s (benchmarks.md §3, §6).

One bad row never stops a load: image problems go to `Item.image_error`, other row problems to
`Item.extra["load_error"]`. Only a missing file, an unknown format or a file without a
`question` column raises.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import posixpath
import re
from typing import Any, Callable

import fsspec
import polars as pl
from PIL import Image, UnidentifiedImageError

from g2u_tasks.records import QUESTION_TYPES, Item, images_sha256, sha256_hex

log = logging.getLogger(__name__)

ID_COLUMNS = ("index", "item_id", "id", "question_id")  # first present wins
IMAGE_COLUMNS = ("image", "images")
POINTER_MAX_CHARS = 64  # VLMEvalKit: an image cell this short is another row's index
_LETTER = re.compile(r"^[A-Z]$")
_MISSING_TEXT = {"", "nan", "NaN"}


class _ImageProblem(Exception):
    """One image of a row could not be read; the message names the problem."""


# ---------------------------------------------------------------- entry point


def load_benchmark(
    name: str,
    source: str,
    *,
    question_type: str | None = None,
    limit: int | None = None,
    storage_options: dict | None = None,
    prepare_rows: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
) -> list[Item]:
    """Items of benchmark `name` read from `source` (fsspec URI or local path; .tsv, .parquet, .jsonl).

    `prepare_rows`, if given, rewrites the raw rows (all of them, before `limit` for TSV) before items
    are made: renames, value conversions, derived columns (g2u_tasks/adapters.py)."""
    if question_type is not None and question_type not in QUESTION_TYPES:
        raise ValueError(f"benchmark {name!r}: question_type must be one of {QUESTION_TYPES}, got {question_type!r}")
    options = dict(storage_options or {})
    fs, path = fsspec.core.url_to_fs(source, **options)
    if not fs.exists(path):
        raise FileNotFoundError(f"benchmark {name!r}: source file not found: {source}")
    suffix = path.lower().rsplit(".", 1)[-1]
    if suffix not in ("tsv", "parquet", "jsonl"):
        raise ValueError(f"benchmark {name!r}: unsupported format {source!r} (expected .tsv, .parquet or .jsonl)")

    try:
        with fs.open(path, "rb") as f:
            if suffix == "tsv":
                columns, rows = _read_tsv(f)
            elif suffix == "parquet":
                columns, rows = _read_parquet(f, limit)
            else:
                columns, rows = _read_jsonl(f, limit, source)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"benchmark {name!r}: source file not found: {source}") from exc
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"benchmark {name!r}: cannot read {source}: {exc}") from exc
    if prepare_rows is not None:
        rows = prepare_rows(rows)
        if rows:  # columns follow the rewritten rows: originals still present, then new ones
            present = dict.fromkeys(k for row in rows for k in row)
            columns = [c for c in columns if c in present] + [k for k in present if k not in columns]
    if "question" not in columns:
        raise ValueError(f"benchmark {name!r}: {source} has no 'question' column; columns: {columns}")

    if suffix == "tsv":
        images_of = _tsv_image_reader(rows)
    else:
        images_of = _value_image_reader(fs, posixpath.dirname(path), options)
    rows = rows if limit is None else rows[: max(limit, 0)]
    letter_columns = sorted(c for c in columns if _LETTER.match(c))
    id_column = next((c for c in ID_COLUMNS if c in columns), None)

    items: list[Item] = []
    seen: set[str] = set()
    for position, row in enumerate(rows):
        item_id = _text(row.get(id_column)) if id_column else None
        item_id = item_id.strip() if item_id else str(position)
        images, problems = images_of(row)
        item = _make_item(name, item_id, row, columns, letter_columns, id_column, images, problems, question_type)
        if item_id in seen:
            _add_load_error(item, "duplicate item_id")
        seen.add(item_id)
        items.append(item)
    return items


# ---------------------------------------------------------------- readers: (columns, rows)


def _read_tsv(f: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """All cells as strings (None when empty); pandas `to_csv(sep='\\t')` quoting understood."""
    df = pl.read_csv(
        f.read(),
        separator="\t",
        quote_char='"',
        infer_schema=False,
        truncate_ragged_lines=True,
        encoding="utf8-lossy",
    )
    return df.columns, df.to_dicts()


def _read_parquet(f: Any, limit: int | None) -> tuple[list[str], list[dict[str, Any]]]:
    df = pl.read_parquet(f, n_rows=limit)
    return df.columns, df.to_dicts()


def _read_jsonl(f: Any, limit: int | None, source: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Line by line, so one malformed line (logged and skipped) or mixed cell types do not stop the load."""
    columns: dict[str, None] = {}
    rows: list[dict[str, Any]] = []
    for number, raw in enumerate(f, start=1):
        if limit is not None and len(rows) >= limit:
            break
        line = raw.decode("utf-8", errors="replace").strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            log.warning("%s line %d skipped: invalid JSON (%s)", source, number, exc)
            continue
        if not isinstance(row, dict):
            log.warning("%s line %d skipped: not a JSON object", source, number)
            continue
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return list(columns), rows


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
) -> Item:
    options, options_column = _options(row, letter_columns)
    answer = _text(row.get("answer"))
    answer = answer.strip() if answer is not None else None
    if options and answer is not None and answer not in options:
        matches = [k for k, v in options.items() if v.strip() == answer]
        answer = matches[0] if len(matches) == 1 else answer  # option text given instead of its letter
    qtype = question_type or infer_question_type(options, answer)
    if qtype == "yes_no" and answer is not None and answer.lower() in ("yes", "no"):
        answer = answer.capitalize()

    used = {id_column, "question", "answer", "category", "hint", options_column, *letter_columns, *IMAGE_COLUMNS}
    extra = {c: v for c in columns if c not in used and (v := _extra_text(row.get(c))) is not None}
    question = _text(row.get("question"))
    if question is None:
        extra["load_error"] = "missing question"
    return Item(
        benchmark=name,
        item_id=item_id,
        question=question or "",
        options=options,
        answer=answer,
        category=_text(row.get("category")),
        question_type=qtype,
        image_sha256=images_sha256(images) if images else "",
        images=tuple(images),
        hint=_text(row.get("hint")),
        extra=extra,
        image_error="; ".join(problems) or None,
    )


def _add_load_error(item: Item, message: str) -> None:
    previous = item.extra.get("load_error")
    item.extra["load_error"] = f"{previous}; {message}" if previous else message


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
    options = {c: t for c in letter_columns if (t := _text(row.get(c))) is not None}
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
    return {k: t for k, v in pairs if (t := _text(v)) is not None}, "options"


# ---------------------------------------------------------------- images


def _tsv_image_reader(rows: list[dict[str, Any]]) -> Callable[[dict[str, Any]], tuple[list[bytes], list[str]]]:
    """VLMEvalKit `image` cells: base64, a list string of base64, or (≤ 64 chars) another row's index."""
    by_index: dict[str, str] = {}
    for row in rows:
        index, cell = _text(row.get("index")), _text(row.get("image"))
        if index is not None and cell is not None:
            by_index.setdefault(index.strip(), cell)
    decoded: dict[str, tuple[list[bytes], list[str]]] = {}

    def read(row: dict[str, Any]) -> tuple[list[bytes], list[str]]:
        cell = _text(row.get("image"))
        if cell is None:
            return [], ["image 0: no image in row"]
        cell = cell.strip()
        if len(cell) <= POINTER_MAX_CHARS:
            target = by_index.get(cell)
            if target is None:
                return [], [f"image 0: dangling image pointer {cell!r} (no row has that index)"]
            if len(target.strip()) <= POINTER_MAX_CHARS:
                return [], [f"image 0: image pointer {cell!r} leads to another pointer"]
            cell = target.strip()
        if cell not in decoded:
            parts = parse_list_cell(cell) if cell.startswith("[") else [cell]
            if parts is None:
                decoded[cell] = [], ["image 0: cannot parse image list cell"]
            else:
                decoded[cell] = _read_all(parts, _base64_bytes)
        return decoded[cell]

    return read


def _value_image_reader(
    fs: Any, base_dir: str, storage_options: dict
) -> Callable[[dict[str, Any]], tuple[list[bytes], list[str]]]:
    """Parquet/JSONL: bytes, {bytes, path} structs, base64 strings or paths relative to the data file."""

    def read_file(path: str) -> bytes:
        try:
            if "://" in path:
                with fsspec.open(path, "rb", **storage_options) as f:
                    return f.read()
            full = path if posixpath.isabs(path) else posixpath.join(base_dir, path)
            with fs.open(full, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise _ImageProblem(f"image file not found: {path}") from None
        except OSError as exc:
            raise _ImageProblem(f"cannot read image file {path}: {exc}") from None

    def to_bytes(value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, dict):
            data = value.get("bytes")
            if data is not None:
                return _base64_bytes(data) if isinstance(data, str) else to_bytes(data)
            if value.get("path"):
                return read_file(str(value["path"]))
            raise _ImageProblem("image struct has neither bytes nor path")
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("data:") and ";base64," in text:
                return _base64_bytes(text.split(",", 1)[1])
            # base64 never holds '.' or '\', and an encoded image is longer than 64 characters
            if len(text) <= POINTER_MAX_CHARS or "." in text or "\\" in text:
                return read_file(text)
            return _base64_bytes(text)
        raise _ImageProblem(f"unsupported image value of type {type(value).__name__}")

    def read(row: dict[str, Any]) -> tuple[list[bytes], list[str]]:
        value = next((row[c] for c in IMAGE_COLUMNS if row.get(c) is not None), None)
        if value is None:
            return [], ["image 0: no image in row"]
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        return _read_all(values, to_bytes)

    return read


def _read_all(values: list[Any], to_bytes: Callable[[Any], bytes]) -> tuple[list[bytes], list[str]]:
    """The images that could be read, and one message per image that could not."""
    images: list[bytes] = []
    problems: list[str] = []
    for i, value in enumerate(values):
        try:
            if value is None:
                raise _ImageProblem("missing")
            data = to_bytes(value)
            _verify_image(data)
            images.append(data)
        except _ImageProblem as exc:
            problems.append(f"image {i}: {exc}")
    if not values:
        problems.append("image 0: empty image list")
    return images, problems


def _base64_bytes(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _ImageProblem(f"invalid base64 ({exc})") from None


def _verify_image(data: bytes) -> None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except UnidentifiedImageError:
        raise _ImageProblem("cannot identify image file") from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise _ImageProblem(f"cannot decode image ({type(exc).__name__}: {exc})") from None


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


def _text(value: Any) -> str | None:
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
    return _text(value)


def _jsonable(value: Any) -> Any:
    """Nested value with binary blobs replaced by a short marker (keeps `extra` small)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
