"""Spec-driven loading: `load_benchmark_spec(name, source)` -> `Item`s (benchmarks.md §3, §6).

The spec (g2u_tasks/benchmark_specs.py) picks the format; rows are renamed with the spec's
`hf_columns` (HF exports only), converted by one small step per benchmark, and turned into Items by
the generic loader (g2u_tasks/benchmarks.py). Columns the Item has no field for stay in `Item.extra`.

Fields in `Item.extra` the metrics rely on (str unless noted), with their source in the VLMEvalKit
TSV / in the HF export:

- MME: image_path = `image_path` / `question_id` (the image file name); HF item_id = row position.
- HallusionBench: l2-category = `l2-category` / category + "_" + subcategory. set_id, figure_id,
  question_id = fields 3, 4, 5 of the index split on "_" (HF: index built as
  category_subcategory_visual_input_set_id_figure_id_question_id, so the same rule applies).
- MMVet: (Item.category) = `category`, comma-joined / `capability` list joined with ",".
- MMStar: l2-category = `l2-category` / `l2_category`; HF options parsed out of the question
  (`split_embedded_options`), the original text kept as raw_question.
- MMBench_DEV_EN: g_index = int(index) mod 10^6; split, l2-category = columns (same in HF).
- AI2D_TEST: A-D columns / `options` list -> A.., `answer` = 0-based option position -> letter.
- MathVista_MINI: mathvista_question_type = `question_type`; answer_type, precision, unit = columns
  (HF precision float -> text such as "1.0"); answer_option = `answer_option` / letter of `answer` in
  `choices`; answer_text = the gold choice text (multi_choice only); task = `task` / `metadata.task`;
  skills (list[str]) = `skills` list string / `metadata.skills`; HF raw_question = `question`
  (Item.question is the query, as in VLMEvalKit), image_path = `image`.
- KIVA, Spatial457, custom: image_path = first path of `final_image_path_ori`, else the
  `<ori_Bench>/<index>.jpg` or `.png` found (no ori_Bench: the benchmark name); ori_Bench kept.
  Spatial457 HF: image_path = `image_filename`.
- QSpatial: answer_value, answer_unit = columns, else parsed from answer "(1.5, 'meters')";
  qspatial_question_type = `question_type`; image_path kept.
- POPE: (Item.category) = `category`, possibly comma-joined ("popular,random"); HF question_id,
  image_source kept.
- MMMU_DEV_VAL: split = `split` / first part of id "validation_Art_12" (category = the middle);
  mmmu_question_type = `question_type` (HF only).

Item fields: MathVista multi_choice -> question_type "mcq", options = choices, answer = answer_option;
free_form integer/float -> "numeric"; other free_form -> "open". QSpatial answer = answer_value
(text of a float). MMMU open questions keep options {} and the gold text (MMMU_preproc is the
scorer's job). Custom TSVs (authors' MyVQABench): the image is the FIRST path of
`final_image_path_ori` (relative to the images root, default `<dir of the TSV>/images`, i.e. LMUData
layout), else a base64 `image` cell (VisThink), else `<root>/<img_root_map(ori_Bench)>/<index>.jpg|.png`.
"""
from __future__ import annotations

import base64
import dataclasses
import posixpath
import re
from typing import Any, Callable, Mapping

import fsspec

from g2u_tasks.benchmarks.table import BenchmarkSpec, resolve
from g2u_tasks.benchmarks.loaders import _text as cell_text
from g2u_tasks.benchmarks.loaders import load_benchmark, parse_list_cell
from g2u_tasks.records import Item

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CIRCULAR_STEP = 1_000_000  # MMBench copies: index + k * 10^6
_IMAGE_TAG = re.compile(r"<image (\d+)>")
_QSPATIAL_ANSWER = re.compile(r"^\(\s*([-+0-9.eE]+)\s*,\s*['\"]?(.*?)['\"]?\s*\)$")
_MMBENCH_V11 = ("MMBench_DEV_EN_V11", "MMBench_TEST_EN_V11", "MMBench_DEV_CN_V11", "MMBench_TEST_CN_V11")
_MMBENCH = ("MMBench_DEV_EN", "MMBench_TEST_EN", "MMBench_DEV_CN", "MMBench_TEST_CN", "MMBench_DEV_KO", "MMBench",
            "MMBench_CN", "MMBench_V11", "MMBench_CN_V11")


def load_benchmark_spec(
    name: str,
    source: str,
    *,
    format: str | None = None,
    limit: int | None = None,
    storage_options: dict | None = None,
    images_root: str | None = None,
    benchmark: str | None = None,
) -> list[Item]:
    """Items of benchmark `name` (a spec name or alias) from `source`.

    format: one of the spec's formats; default from the file suffix (.parquet/.jsonl -> hf-parquet,
    .tsv -> custom-tsv for specs that read it, else vlmevalkit-tsv). images_root: where relative image
    paths live (custom TSV, QSpatial_scannet). benchmark: the name stamped on items (default: the
    table's spelling of `name`, e.g. "Spatial457_L5")."""
    spec, spelled = resolve(name)
    fmt = format or detect_format(spec, source)
    if fmt not in spec.formats:
        raise ValueError(f"benchmark {spec.name!r}: format {fmt!r} not supported; supported: {spec.formats}")
    label = benchmark or spelled
    root = images_root if images_root is not None else posixpath.join(posixpath.dirname(source), "images")
    ctx = _Context(spec, fmt, label, root, dict(storage_options or {}), limit)
    items = load_benchmark(label, source, question_type=spec.question_type, limit=limit,
                           storage_options=storage_options, prepare_rows=ctx.prepare)
    return [ctx.finish(item) for item in items]


def detect_format(spec: BenchmarkSpec, source: str) -> str:
    suffix = source.lower().rsplit(".", 1)[-1]
    if suffix in ("parquet", "jsonl"):
        return "hf-parquet"
    return "custom-tsv" if "custom-tsv" in spec.formats else "vlmevalkit-tsv"


@dataclasses.dataclass
class _Context:
    spec: BenchmarkSpec
    fmt: str
    label: str
    images_root: str
    storage_options: dict
    limit: int | None
    image_errors: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def hf(self) -> bool:
        return self.fmt == "hf-parquet"

    def prepare(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.hf:
            rows = [rename_columns(row, self.spec.hf_columns) for row in rows]
        step = _ROW_STEPS.get(self.spec.name)
        if step is not None:
            rows = step(rows, self)
        if self.fmt == "custom-tsv":
            rows = _custom_images(rows, self)
        return rows

    def finish(self, item: Item) -> Item:
        step = _ITEM_STEPS.get(self.spec.name)
        if step is not None:
            item = step(item, self)
        if item.item_id in self.image_errors:
            item = dataclasses.replace(item, image_error=self.image_errors[item.item_id])
        return item


# ---------------------------------------------------------------- helpers


def rename_columns(row: dict[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """Simultaneous rename; "a.b" reads field b of struct a. Unlisted columns pass through."""
    out = {k: v for k, v in row.items() if k not in mapping}
    for src, dst in mapping.items():
        head, _, tail = src.partition(".")
        if head not in row:
            continue
        value = row[head]
        if tail:
            value = value.get(tail) if isinstance(value, dict) else None
        if value is not None or dst not in out:
            out[dst] = value
    return out


def split_embedded_options(text: str) -> tuple[str, dict[str, str]] | None:
    """MMStar HF question 'stem\\nOptions: A: x, B: y, C: z' -> ('stem', {'A': 'x', 'B': 'y', 'C': 'z'}).

    Supported: the last "Options:" starts the block; options are "L: text" with consecutive letters
    from A, separated by ", " before the next "L:". An option text may hold commas, but not
    ", <next letter>:". None when there is no such block."""
    at = text.rfind("Options:")
    start = re.match(r"\s*A\s*:\s*", text[at + len("Options:"):]) if at >= 0 else None
    if start is None:
        return None
    body = text[at + len("Options:"):]
    options: dict[str, str] = {}
    pos = start.end()
    for i, letter in enumerate(LETTERS):
        following = re.compile(rf",\s*{LETTERS[i + 1]}\s*:\s*") if i + 1 < len(LETTERS) else None
        hit = following.search(body, pos) if following else None
        options[letter] = body[pos: hit.start() if hit else len(body)].strip()
        if hit is None:
            break
        pos = hit.end()
    return text[:at].rstrip(), options


def _as_list(value: Any) -> list[str]:
    """A list value or a list string (JSON or Python style) as strings; [] for None."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [t for v in value if (t := cell_text(v)) is not None]
    text = cell_text(value)
    if text is None:
        return []
    parsed = parse_list_cell(text)
    return [v for v in parsed if v is not None] if parsed is not None else [text]


def _float_text(value: Any) -> str | None:
    try:
        return repr(float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def _add_error(row_or_extra: dict[str, Any], message: str) -> None:
    previous = row_or_extra.get("load_error")
    row_or_extra["load_error"] = f"{previous}; {message}" if previous else message


def _with_extra(item: Item, **fields: Any) -> Item:
    return dataclasses.replace(item, extra={**item.extra, **fields})


def _with_error(item: Item, message: str) -> Item:
    extra = dict(item.extra)
    _add_error(extra, message)
    return dataclasses.replace(item, extra=extra)


def _set_options(row: dict[str, Any], texts: list[str]) -> None:
    for letter, text in zip(LETTERS, texts):
        row[letter] = text


# ---------------------------------------------------------------- row steps (before Items)


def _mme_rows(rows: list[dict], ctx: _Context) -> list[dict]:
    if ctx.hf:  # question_id (now image_path) repeats for the pair: ids are row positions
        for position, row in enumerate(rows):
            row["index"] = str(position)
    return rows


def _hallusion_rows(rows: list[dict], ctx: _Context) -> list[dict]:
    if not ctx.hf:
        return rows
    for row in rows:
        answer = cell_text(row.get("answer"))
        row["answer"] = {"1": "Yes", "0": "No"}.get((answer or "").strip(), answer)
        parts = [cell_text(row.get(k)) or "" for k in
                 ("category", "subcategory", "visual_input", "set_id", "figure_id", "question_id")]
        row["index"] = "_".join(parts)
        row["l2-category"] = f"{parts[0]}_{parts[1]}"
    return rows


def _mmvet_rows(rows: list[dict], ctx: _Context) -> list[dict]:
    if ctx.hf:
        for row in rows:
            if isinstance(row.get("category"), (list, tuple)):
                row["category"] = ",".join(str(c) for c in row["category"])
    return rows


def _mmstar_rows(rows: list[dict], ctx: _Context) -> list[dict]:
    if not ctx.hf:
        return rows
    for row in rows:
        question = cell_text(row.get("question")) or ""
        parsed = split_embedded_options(question)
        if parsed is None:
            _add_error(row, "no 'Options: A: ...' block in question")
            continue
        row["raw_question"], (row["question"], options) = question, parsed
        _set_options(row, list(options.values()))
    return rows


def _ai2d_rows(rows: list[dict], ctx: _Context) -> list[dict]:
    if not ctx.hf:
        return rows
    for row in rows:
        texts = _as_list(row.pop("options", None))
        _set_options(row, texts)
        answer = (cell_text(row.get("answer")) or "").strip()
        if answer.isdigit() and int(answer) < len(texts):
            row["answer"] = LETTERS[int(answer)]
        elif answer not in LETTERS[: len(texts)]:
            _add_error(row, f"answer {answer!r} is not an option position")
    return rows


def _mathvista_rows(rows: list[dict], ctx: _Context) -> list[dict]:
    for row in rows:
        if "question_type" in row:  # TSV column name
            row["mathvista_question_type"] = row.pop("question_type")
        if isinstance(row.get("precision"), float):
            row["precision"] = _float_text(row["precision"])
        choices = _as_list(row.get("choices"))
        if cell_text(row.get("mathvista_question_type")) != "multi_choice" or not choices:
            continue
        _set_options(row, choices)
        answer = cell_text(row.get("answer"))
        option = cell_text(row.get("answer_option"))
        if option is None and answer in choices:
            option = LETTERS[choices.index(answer)]
        row["answer_text"], row["answer_option"] = answer, option
        if option is None:
            _add_error(row, "multi_choice answer is not one of the choices")
        else:
            row["answer"] = option
    return rows


def _qspatial_rows(rows: list[dict], ctx: _Context) -> list[dict]:
    for position, row in enumerate(rows):
        if "question_type" in row:
            row["qspatial_question_type"] = row.pop("question_type")
        if row.get("index") is None:  # HF rows: VLMEvalKit numbers them 0..n-1
            row["index"] = str(position)
        value, unit = row.get("answer_value"), cell_text(row.get("answer_unit"))
        if value is None or unit is None:
            match = _QSPATIAL_ANSWER.match((cell_text(row.get("answer")) or "").strip())
            value, unit = (match.group(1), match.group(2)) if match else (None, None)
        row["answer_value"], row["answer_unit"] = _float_text(value), unit
        row["answer"] = row["answer_value"]
        if row["answer_value"] is None or not unit:
            _add_error(row, "no answer value/unit")
        if ctx.hf and row.get("image") is None and cell_text(row.get("image_path")):  # QSpatial_scannet
            row["image"] = posixpath.join(ctx.images_root, cell_text(row["image_path"]))
    return rows


def _mmmu_rows(rows: list[dict], ctx: _Context) -> list[dict]:
    if not ctx.hf:
        return rows
    for row in rows:
        item_id = cell_text(row.get("index")) or ""
        parts = item_id.split("_")  # e.g. validation_Art_Theory_12
        if len(parts) >= 3:
            row["split"], row["category"] = parts[0], "_".join(parts[1:-1])
        row["images"] = [v for k in range(1, 8) if (v := row.pop(f"image_{k}", None)) is not None]
        _set_options(row, _as_list(row.pop("options", None)))
    return rows


def _custom_images(rows: list[dict], ctx: _Context) -> list[dict]:
    """The authors' MyVQABench image lookup; errors kept per index for `finish`."""
    fs, root = fsspec.core.url_to_fs(ctx.images_root, **ctx.storage_options)
    for position, row in enumerate(rows):
        if ctx.limit is not None and position >= ctx.limit:
            break
        index = (cell_text(row.get("index")) or str(position)).strip()
        listed = _as_list(row.get("final_image_path_ori"))
        if listed:
            row["image_path"] = listed[0]
            candidates = [listed[0]]  # only the first image is sent
        elif cell_text(row.get("image")) is not None:
            continue  # base64 image cell (VisThink style)
        else:
            folder = img_root_map(cell_text(row.get("ori_Bench")) or ctx.label)
            candidates = [f"{folder}/{index}.jpg", f"{folder}/{index}.png"]
        row["image"] = None
        for path in candidates:
            full = path if posixpath.isabs(path) else posixpath.join(root, path)
            if fs.exists(full):
                with fs.open(full, "rb") as f:
                    row["image"] = base64.b64encode(f.read()).decode("ascii")
                row["image_path"] = path
                break
        if row["image"] is None:
            ctx.image_errors[index] = f"image 0: image file not found: {' or '.join(candidates)}"
    return rows


def img_root_map(dataset: str) -> str:
    """VLMEvalKit's image folder for a dataset name (vlmeval/dataset/image_base.py)."""
    for part, folder in (("MM_NIAH", "MMNIAH"), ("CRPE", "CRPE"), ("OCRVQA", "OCRVQA"), ("QSpatial", "QSpatial")):
        if part in dataset:
            return folder
    if dataset == "COCO_VAL":
        return "COCO"
    if dataset in _MMBENCH_V11:
        return "MMBench_V11"
    return "MMBench" if dataset in _MMBENCH else dataset


# ---------------------------------------------------------------- item steps (after Items)


def _mme_item(item: Item, ctx: _Context) -> Item:
    return item if item.extra.get("image_path") else _with_error(item, "missing image_path (acc+ groups by it)")


def _hallusion_item(item: Item, ctx: _Context) -> Item:
    parts = item.item_id.split("_")
    if len(parts) < 6:
        return _with_error(item, "index has fewer than 6 '_'-separated fields (set/figure/question ids)")
    return _with_extra(item, set_id=parts[3], figure_id=parts[4], question_id=parts[5])


def _mmbench_item(item: Item, ctx: _Context) -> Item:
    try:
        return _with_extra(item, g_index=str(int(item.item_id) % CIRCULAR_STEP))
    except ValueError:
        return _with_error(item, "index is not an integer (circular groups need one)")


def _mathvista_item(item: Item, ctx: _Context) -> Item:
    if item.options:
        qtype = "mcq"
    else:
        qtype = "numeric" if item.extra.get("answer_type") in ("integer", "float") else "open"
    extra = {**item.extra, "skills": _as_list(item.extra.get("skills"))}
    return dataclasses.replace(item, question_type=qtype, extra=extra)


def _mmmu_item(item: Item, ctx: _Context) -> Item:
    tags = [int(k) for text in (item.question, *item.options.values()) for k in _IMAGE_TAG.findall(text)]
    if tags and max(tags) > len(item.images):
        return _with_error(item, f"<image {max(tags)}> but only {len(item.images)} image(s)")
    return item


_ROW_STEPS: dict[str, Callable[[list[dict], _Context], list[dict]]] = {
    "MME": _mme_rows,
    "HallusionBench": _hallusion_rows,
    "MMVet": _mmvet_rows,
    "MMStar": _mmstar_rows,
    "AI2D_TEST": _ai2d_rows,
    "MathVista_MINI": _mathvista_rows,
    "QSpatial": _qspatial_rows,
    "MMMU_DEV_VAL": _mmmu_rows,
}
_ITEM_STEPS: dict[str, Callable[[Item, _Context], Item]] = {
    "MME": _mme_item,
    "HallusionBench": _hallusion_item,
    "MMBench_DEV_EN": _mmbench_item,
    "MathVista_MINI": _mathvista_item,
    "MMMU_DEV_VAL": _mmmu_item,
}
