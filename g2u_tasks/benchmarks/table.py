"""The twelve benchmarks of the paper (plus a generic `custom` entry) as one declarative table.

Each `BenchmarkSpec` says how a benchmark is read (`formats`, `hf_columns`), what its items are
(`question_type`), how a free-form prediction becomes an answer (`extraction`), which scorer
applies (`metric_suite`) and whether an LLM judge is needed (`judge`). Sources: shared/benchmarks.md (project notes)
(VLMEvalKit at ca9a644 plus the authors' MyVQABench/VisThink classes).

Vocabularies
- formats: "vlmevalkit-tsv" (VLMEvalKit TSV, base64 `image`, pointers, list cells), "hf-parquet"
  (Hugging Face export; also read from .jsonl), "custom-tsv" (the authors' MyVQABench TSV: images
  given as `final_image_path_ori` paths or found as `<images root>/<ori_Bench>/<index>.jpg|png`).
- question_type: one of records.QUESTION_TYPES, or None = decided per item (`question_types` lists
  the ones that occur).
- extraction: "vlmevalkit" (YOrN_Extraction for yes/no, can_infer for MCQ; judge only as fallback),
  "authors" (the authors' own can_infer, benchmarks.md §5.3), "judge" (an LLM judge grades or
  extracts every row), "qspatial" (last \\scalar{…} and \\distance_unit{…}), "ocr" (substring match).
- metric_suite: the scorer's name (implemented in the metrics module, one function each).
- judge: "required" | "optional" (only for rows the rules can't parse) | "none".
- hf_columns: HF export column -> our column ("a.b" reads field b of struct a). Targets "index",
  "question", "answer", "category", "hint", "image", "images", "options" feed the Item itself; any
  other target lands in `Item.extra` under that name. Value conversions are in g2u_tasks/adapters.py.

Loading: `g2u_tasks.benchmarks.adapters.load_benchmark_spec(name, source)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from g2u_tasks.records import QUESTION_TYPES

FORMATS = ("vlmevalkit-tsv", "hf-parquet", "custom-tsv")
EXTRACTIONS = ("vlmevalkit", "authors", "judge", "qspatial", "ocr")
METRIC_SUITES = (
    "mme", "hallusionbench", "mmvet", "mcq", "mmbench_circular", "mathvista",
    "kiva", "spatial457", "qspatial", "pope", "mmmu",
)
JUDGE_LEVELS = ("required", "optional", "none")

GPT35 = "gpt-3.5-turbo-0125"  # VLMEvalKit "chatgpt-0125", the run.py default for Y/N and MCQ


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    aliases: tuple[str, ...]
    formats: tuple[str, ...]
    question_type: str | None
    question_types: tuple[str, ...]
    extraction: str
    metric_suite: str
    judge: str
    judge_model: str | None
    hf_id: str | None
    hf_columns: Mapping[str, str] = field(default_factory=dict)
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hf_columns", MappingProxyType(dict(self.hf_columns)))
        problems = [f"unknown format {f!r}" for f in self.formats if f not in FORMATS]
        problems += [f"unknown question type {t!r}" for t in self.question_types if t not in QUESTION_TYPES]
        if self.question_type is not None and self.question_types != (self.question_type,):
            problems.append("question_types must be (question_type,) when question_type is set")
        for value, allowed in ((self.extraction, EXTRACTIONS), (self.metric_suite, METRIC_SUITES),
                               (self.judge, JUDGE_LEVELS)):
            if value not in allowed:
                problems.append(f"{value!r} not in {allowed}")
        if (self.judge == "none") != (self.judge_model is None):
            problems.append("judge_model must be set exactly when a judge is used")
        if problems:
            raise ValueError(f"benchmark spec {self.name!r}: " + "; ".join(problems))

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


_TSV_HF = ("vlmevalkit-tsv", "hf-parquet")

SPECS: tuple[BenchmarkSpec, ...] = (
    BenchmarkSpec(
        "MME", (), _TSV_HF, "yes_no", ("yes_no",), "vlmevalkit", "mme", "optional", GPT35, "lmms-lab/MME",
        {"question_id": "image_path", "image": "image", "question": "question", "answer": "answer",
         "category": "category"},
        "acc + acc+ per category (pairs grouped by image_path), perception /2000, cognition /800. "
        "HF rows get item_id = row position.",
    ),
    BenchmarkSpec(
        "HallusionBench", (), _TSV_HF, "yes_no", ("yes_no",), "vlmevalkit", "hallusionbench", "optional",
        GPT35, "lmms-lab/HallusionBench",
        {"category": "category", "subcategory": "subcategory", "visual_input": "visual_input",
         "set_id": "set_id", "figure_id": "figure_id", "question_id": "question_id", "question": "question",
         "gt_answer": "answer", "gt_answer_details": "gt_answer_details", "sample_note": "sample_note",
         "filename": "filename", "image": "image"},
        "aAcc/fAcc/qAcc; keys from index fields 3,4,5. HF (image split): gt_answer 1/0 -> Yes/No, "
        "index = category_subcategory_visualinput_set_figure_question, l2-category = category_subcategory.",
    ),
    BenchmarkSpec(
        "MMVet", ("MM-Vet",), _TSV_HF, "open", ("open",), "judge", "mmvet", "required", "gpt-4-1106-preview",
        "lmms-lab/MMVet",
        {"question_id": "index", "image": "image", "question": "question", "answer": "answer",
         "capability": "category", "image_source": "image_source"},
        "GPT-4 scores 0-1 per item (5 tries, else 0); x100 overall and per capability. "
        "HF capability list -> comma-joined category.",
    ),
    BenchmarkSpec(
        "MMStar", (), _TSV_HF, "mcq", ("mcq",), "vlmevalkit", "mcq", "optional", GPT35, "Lin-Chen/MMStar",
        {"index": "index", "question": "question", "image": "image", "answer": "answer", "category": "category",
         "l2_category": "l2-category", "meta_info": "meta_info"},
        "report_acc fractions. HF: options parsed out of the question ('...\\nOptions: A: x, B: y, ...').",
    ),
    BenchmarkSpec(
        "MMBench_DEV_EN", ("MMBench", "MMBench_DEV_EN_V11", "MMBench_V11"), _TSV_HF, "mcq", ("mcq",),
        "vlmevalkit", "mmbench_circular", "optional", GPT35, "HuggingFaceM4/MMBench",
        {"index": "index", "question": "question", "hint": "hint", "A": "A", "B": "B", "C": "C", "D": "D",
         "answer": "answer", "category": "category", "image": "image", "source": "source",
         "l2-category": "l2-category", "comment": "comment", "split": "split"},
        "Circular: copies have index + k*10^6, g_index = index mod 10^6; a group scores 1 only if every "
        "copy is right. 'MMBench' (test) has no answers.",
    ),
    BenchmarkSpec(
        "AI2D_TEST", ("AI2D", "AI2D_TEST_NO_MASK"), _TSV_HF, "mcq", ("mcq",), "vlmevalkit", "mcq", "optional",
        GPT35, "lmms-lab/ai2d",
        {"question": "question", "options": "options", "answer": "answer", "image": "image"},
        "Vanilla MCQ (fractions). HF: options list -> A.., answer = 0-based option position -> letter.",
    ),
    BenchmarkSpec(
        "MathVista_MINI", ("MathVista",), _TSV_HF, None, ("mcq", "numeric", "open"), "judge", "mathvista",
        "required", "gpt-4o-mini-2024-07-18", "AI4Math/MathVista",
        {"pid": "index", "query": "question", "question": "raw_question", "decoded_image": "image",
         "image": "image_path", "choices": "choices", "unit": "unit", "precision": "precision",
         "answer": "answer", "question_type": "mathvista_question_type", "answer_type": "answer_type",
         "metadata.task": "task", "metadata.skills": "skills", "metadata": "metadata"},
        "Pre-fetch (can_infer / exact number) then gpt-4o-mini extraction; float compared exactly, "
        "list answers never correct. multi_choice -> mcq with answer = answer_option letter.",
    ),
    BenchmarkSpec(
        "KIVA", (), ("custom-tsv",), None, ("mcq", "yes_no"), "authors", "kiva", "required", GPT35, None, {},
        "Authors' MyVQABench: own can_infer, judge fallback (3 tries, then 'A'); only the first image is sent.",
    ),
    BenchmarkSpec(
        "Spatial457", ("Spatial457_occ", "Spatial457_L5"), ("custom-tsv", "hf-parquet"), None,
        ("yes_no", "numeric", "open"), "judge", "spatial457", "required", GPT35, "RyanWW/Spatial457",
        {"question_index": "index", "image": "image", "image_filename": "image_path", "question": "question",
         "answer": "answer", "program": "program"},
        "Authors' subsets are private MyVQABench TSVs; every row gets one 1/0 judge call.",
    ),
    BenchmarkSpec(
        "QSpatial", ("QSpatial_plus", "QSpatial_scannet"), ("hf-parquet", "vlmevalkit-tsv"), "numeric",
        ("numeric",), "qspatial", "qspatial", "none", None, "andrewliao11/Q-Spatial-Bench",
        {"question": "question", "answer_value": "answer_value", "answer_unit": "answer_unit",
         "question_type": "qspatial_question_type", "image_path": "image_path", "image": "image"},
        "delta_2 (headline) and delta_1.5 in cm. TSV = VLMEvalKit's DataFrame dump with answer "
        "'(value, unit)'. QSpatial_scannet images come from image_path under the images root.",
    ),
    BenchmarkSpec(
        "POPE", (), _TSV_HF, "yes_no", ("yes_no",), "vlmevalkit", "pope", "optional", GPT35, "lmms-lab/POPE",
        {"id": "index", "question_id": "question_id", "question": "question", "answer": "answer",
         "image_source": "image_source", "image": "image", "category": "category"},
        "Proposed substitute. F1 (positive = Yes), acc, precision, recall; comma-joined categories split.",
    ),
    BenchmarkSpec(
        "MMMU_DEV_VAL", ("MMMU",), _TSV_HF, None, ("mcq", "numeric", "open"), "vlmevalkit", "mmmu", "optional",
        GPT35, "MMMU/MMMU",
        {"id": "index", "question": "question", "options": "options", "answer": "answer",
         "question_type": "mmmu_question_type", "explanation": "explanation", "img_type": "img_type",
         "topic_difficulty": "topic_difficulty", "subfield": "subfield",
         **{f"image_{k}": f"image_{k}" for k in range(1, 8)}},
        "Proposed substitute. Multi-image, <image k> tags; open questions become A = gold, "
        "B = 'Other Answers' at scoring; report_acc per split. HF image_1..7 -> images.",
    ),
    BenchmarkSpec(
        "custom", ("VisThink",), ("custom-tsv",), None, ("mcq", "yes_no", "open", "numeric"), "authors", "kiva",
        "required", GPT35, None, {},
        "Authors' KIVA/VisThink-style TSV: final_image_path_ori (relative to the images root) or "
        "base64 image or <ori_Bench>/<index>.jpg|png.",
    ),
)


def _index(specs: tuple[BenchmarkSpec, ...]) -> dict[str, tuple[BenchmarkSpec, str]]:
    """lower-cased name -> (spec, the name as spelled in the table); duplicates are an error."""
    out: dict[str, tuple[BenchmarkSpec, str]] = {}
    for spec in specs:
        for spelled in spec.names:
            key = spelled.lower()
            if key in out:
                raise ValueError(f"benchmark name {spelled!r} is used twice")
            out[key] = (spec, spelled)
    return out


_BY_NAME = _index(SPECS)


def known_names() -> list[str]:
    return [n for spec in SPECS for n in spec.names]


def resolve(name: str) -> tuple[BenchmarkSpec, str]:
    """(spec, canonical spelling of `name`); names and aliases match case-insensitively."""
    hit = _BY_NAME.get(name.strip().lower())
    if hit is None:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(known_names())}")
    return hit


def get_spec(name: str) -> BenchmarkSpec:
    return resolve(name)[0]


def spec_row(spec: BenchmarkSpec) -> dict:
    """A spec as plain JSON-able data (CLI, reports)."""
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "formats": list(spec.formats),
        "question_type": spec.question_type,
        "question_types": list(spec.question_types),
        "extraction": spec.extraction,
        "metric_suite": spec.metric_suite,
        "judge": spec.judge,
        "judge_model": spec.judge_model,
        "hf_id": spec.hf_id,
        "hf_columns": dict(spec.hf_columns),
        "notes": spec.notes,
    }
