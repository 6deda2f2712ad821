"""Per-benchmark loader hooks: the row step (before Items) and item step (after Items) that a
benchmark declaration names (g2u_tasks/benchmarks/table.py).

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

- lmms-eval UniG2U (unig2u_*): raw_question = the dataset's `question` (Item.question is the
  standard task's prompt text); source_id = `id`; MMSI category = `question_type`; ChartQA
  category = `type`; VisualPuzzles choices = `options` (kept out of Item.options: lmms-eval puts them
  in the prompt text). Item ids are row positions (lmms-eval's doc_id).

Item fields: MathVista multi_choice -> question_type "mcq", options = choices, answer = answer_option;
free_form integer/float -> "numeric"; other free_form -> "open". QSpatial answer = answer_value
(text of a float). MMMU open questions keep options {} and the gold text (MMMU_preproc is the
scorer's job).
"""
from __future__ import annotations

import dataclasses
import posixpath
import re
from typing import Any, Callable, Protocol

from g2u_tasks.benchmarks.loaders import cell_text
from g2u_tasks.benchmarks.loaders import parse_list_cell
from g2u_tasks.records import Item

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CIRCULAR_STEP = 1_000_000  # MMBench copies: index + k * 10^6
_IMAGE_TAG = re.compile(r"<image (\d+)>")
_QSPATIAL_ANSWER = re.compile(r"^\(\s*([-+0-9.eE]+)\s*,\s*['\"]?(.*?)['\"]?\s*\)$")


class LoadContext(Protocol):
    """What a hook may read of the loading context (g2u_tasks.benchmarks.adapters)."""

    hf: bool
    images_root: str


RowStep = Callable[[list[dict], LoadContext], list[dict]]
ItemStep = Callable[[Item, LoadContext], Item]


# ---------------------------------------------------------------- helpers


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


def as_list(value: Any) -> list[str]:
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


def _hf_only(step: RowStep) -> RowStep:
    """A row step that converts HF exports only; VLMEvalKit TSV rows pass through unchanged."""
    def run(rows: list[dict], ctx: LoadContext) -> list[dict]:
        return step(rows, ctx) if ctx.hf else rows
    run.__name__, run.__doc__ = step.__name__, step.__doc__
    return run


def mme_rows(rows: list[dict], ctx: LoadContext) -> list[dict]:
    if ctx.hf:  # question_id (now image_path) repeats for the pair: ids are row positions
        for position, row in enumerate(rows):
            row["index"] = str(position)
    return rows


@_hf_only
def hallusion_rows(rows: list[dict], ctx: LoadContext) -> list[dict]:
    for row in rows:
        answer = cell_text(row.get("answer"))
        row["answer"] = {"1": "Yes", "0": "No"}.get((answer or "").strip(), answer)
        parts = [cell_text(row.get(k)) or "" for k in
                 ("category", "subcategory", "visual_input", "set_id", "figure_id", "question_id")]
        row["index"] = "_".join(parts)
        row["l2-category"] = f"{parts[0]}_{parts[1]}"
    return rows


@_hf_only
def mmvet_rows(rows: list[dict], ctx: LoadContext) -> list[dict]:
    for row in rows:
        if isinstance(row.get("category"), (list, tuple)):
            row["category"] = ",".join(str(c) for c in row["category"])
    return rows


@_hf_only
def mmstar_rows(rows: list[dict], ctx: LoadContext) -> list[dict]:
    for row in rows:
        question = cell_text(row.get("question")) or ""
        parsed = split_embedded_options(question)
        if parsed is None:
            _add_error(row, "no 'Options: A: ...' block in question")
            continue
        row["raw_question"], (row["question"], options) = question, parsed
        _set_options(row, list(options.values()))
    return rows


@_hf_only
def ai2d_rows(rows: list[dict], ctx: LoadContext) -> list[dict]:
    for row in rows:
        texts = as_list(row.pop("options", None))
        _set_options(row, texts)
        answer = (cell_text(row.get("answer")) or "").strip()
        if answer.isdigit() and int(answer) < len(texts):
            row["answer"] = LETTERS[int(answer)]
        elif answer not in LETTERS[: len(texts)]:
            _add_error(row, f"answer {answer!r} is not an option position")
    return rows


def mathvista_rows(rows: list[dict], ctx: LoadContext) -> list[dict]:
    for row in rows:
        if "question_type" in row:  # TSV column name
            row["mathvista_question_type"] = row.pop("question_type")
        if isinstance(row.get("precision"), float):
            row["precision"] = _float_text(row["precision"])
        choices = as_list(row.get("choices"))
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


def qspatial_rows(rows: list[dict], ctx: LoadContext) -> list[dict]:
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


@_hf_only
def mmmu_rows(rows: list[dict], ctx: LoadContext) -> list[dict]:
    for row in rows:
        item_id = cell_text(row.get("index")) or ""
        parts = item_id.split("_")  # e.g. validation_Art_Theory_12
        if len(parts) >= 3:
            row["split"], row["category"] = parts[0], "_".join(parts[1:-1])
        row["images"] = [v for k in range(1, 8) if (v := row.pop(f"image_{k}", None)) is not None]
        _set_options(row, as_list(row.pop("options", None)))
    return rows


UNIG2U_LAYOUTS = ("chartqa", "mmsi", "visualpuzzles")


def unig2u_rows(layout: str, pre: str = "", post: str = "") -> RowStep:
    """lmms-eval UniG2U sub-task rows: `question` becomes the standard task's prompt text (its
    doc_to_text with the YAML's default pre/post prompt), the dataset's own question kept as
    raw_question. chartqa: pre + question + post. mmsi: pre + stripped question + post (options are
    inside the question). visualpuzzles: "Question: " + stripped question, the four `choices` as
    "(A) ..." lines (or the in-image note when there are none), then a newline and `post`."""
    if layout not in UNIG2U_LAYOUTS:
        raise ValueError(f"unknown UniG2U layout {layout!r}; expected one of {UNIG2U_LAYOUTS}")

    def step(rows: list[dict], ctx: LoadContext) -> list[dict]:
        for row in rows:
            raw = cell_text(row.get("question"))
            if raw is None:
                continue  # the loader refuses the empty question
            row["raw_question"] = raw
            if layout == "chartqa":
                row["question"] = f"{pre}{raw}{post}"
            elif layout == "mmsi":
                row["question"] = f"{pre}{raw.strip()}{post}"
            else:
                row["question"] = _puzzle_question(row, raw) + "\n" + post
        return rows

    step.__name__ = f"unig2u_rows[{layout}]"
    return step


def _puzzle_question(row: dict, raw: str) -> str:
    text = "Question: " + raw.strip()
    if row.get("choices") is None:
        return text + "\nOptions: Choose from (A) (B) (C) (D) in the image."
    choices = as_list(row["choices"])
    if len(choices) != 4:  # upstream indexes exactly four options
        _add_error(row, f"expected 4 options, got {len(choices)}")
        return text
    return text + "\nOptions:" + "".join(f"\n({letter}) {c}" for letter, c in zip(LETTERS, choices))


# ---------------------------------------------------------------- item steps (after Items)


def mme_item(item: Item, ctx: LoadContext) -> Item:
    return item if item.extra.get("image_path") else _with_error(item, "missing image_path (acc+ groups by it)")


def hallusion_item(item: Item, ctx: LoadContext) -> Item:
    parts = item.item_id.split("_")
    if len(parts) < 6:
        return _with_error(item, "index has fewer than 6 '_'-separated fields (set/figure/question ids)")
    return _with_extra(item, set_id=parts[3], figure_id=parts[4], question_id=parts[5])


def mmbench_item(item: Item, ctx: LoadContext) -> Item:
    try:
        return _with_extra(item, g_index=str(int(item.item_id) % CIRCULAR_STEP))
    except ValueError:
        return _with_error(item, "index is not an integer (circular groups need one)")


def mathvista_item(item: Item, ctx: LoadContext) -> Item:
    if item.options:
        qtype = "mcq"
    else:
        qtype = "numeric" if item.extra.get("answer_type") in ("integer", "float") else "open"
    extra = {**item.extra, "skills": as_list(item.extra.get("skills"))}
    return dataclasses.replace(item, question_type=qtype, extra=extra)


def mmmu_item(item: Item, ctx: LoadContext) -> Item:
    tags = [int(k) for text in (item.question, *item.options.values()) for k in _IMAGE_TAG.findall(text)]
    if tags and max(tags) > len(item.images):
        return _with_error(item, f"<image {max(tags)}> but only {len(item.images)} image(s)")
    return item
