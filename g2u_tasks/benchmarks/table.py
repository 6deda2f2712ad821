"""The twelve benchmarks of the paper (plus a generic `custom` entry): one declaration each.

A `BenchmarkSpec` says how a benchmark is read (`formats`, `hf_columns`, its row and item hooks in
g2u_tasks/benchmarks/hooks.py), what its items are (`question_type`) and which scoring suite scores
it (`suite`, from g2u_tasks/scoring/suites.py: per-item scorer, aggregation, judge). Sources:
VLMEvalKit at ca9a644 plus the authors' MyVQABench/VisThink classes; the unig2u_* sub-tasks follow
lmms-eval's UniG2U tasks (their generation prompts are edit families in benchmarks/unig2u_families/).

Vocabularies
- formats: "vlmevalkit-tsv" (VLMEvalKit TSV, base64 `image`, pointers, list cells), "hf-parquet"
  (Hugging Face export; also read from .jsonl), "custom-tsv" (the authors' MyVQABench TSV: images
  given as `final_image_path_ori` paths or found as `<images root>/<ori_Bench>/<index>.jpg|png`).
- question_type: one of records.QUESTION_TYPES, or None = decided per item (`question_types` lists
  the ones that occur).
- hf_columns: HF export column -> our column ("a.b" reads field b of struct a). Targets "index",
  "question", "answer", "category", "hint", "image", "images", "options" feed the Item itself; any
  other target lands in `Item.extra` under that name.

Loading: `g2u_tasks.benchmarks.adapters.load_benchmark_spec(name, source)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from g2u_tasks.benchmarks import hooks as H
from g2u_tasks.records import QUESTION_TYPES
from g2u_tasks.scoring.suites import SUITES, ScoringSuite

FORMATS = ("vlmevalkit-tsv", "hf-parquet", "custom-tsv")
_TSV_HF = ("vlmevalkit-tsv", "hf-parquet")


@dataclass(frozen=True, kw_only=True)
class BenchmarkSpec:
    name: str
    formats: tuple[str, ...]
    suite: ScoringSuite
    aliases: tuple[str, ...] = ()
    question_type: str | None = None
    question_types: tuple[str, ...] = ()  # default: (question_type,)
    hf_id: str | None = None
    hf_columns: Mapping[str, str] = field(default_factory=dict)
    row_step: H.RowStep | None = None
    item_step: H.ItemStep | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hf_columns", MappingProxyType(dict(self.hf_columns)))
        if self.question_type is not None and not self.question_types:
            object.__setattr__(self, "question_types", (self.question_type,))
        problems = [f"unknown format {f!r}" for f in self.formats if f not in FORMATS]
        problems += [f"unknown question type {t!r}" for t in self.question_types if t not in QUESTION_TYPES]
        if not self.question_types:
            problems.append("question_types must list the question types that occur")
        if self.question_type is not None and self.question_types != (self.question_type,):
            problems.append("question_types must be (question_type,) when question_type is set")
        if not isinstance(self.suite, ScoringSuite):
            problems.append(f"suite must be a ScoringSuite, not {self.suite!r}")
        if problems:
            raise ValueError(f"benchmark spec {self.name!r}: " + "; ".join(problems))

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    # the suite's choices, under the names the CLI and reports show
    @property
    def metric_suite(self) -> str:
        return self.suite.name

    @property
    def extraction(self) -> str:
        return self.suite.extraction

    @property
    def judge(self) -> str:
        return self.suite.judge

    @property
    def judge_model(self) -> str | None:
        return self.suite.judge_model


UNIG2U_HF = "kkv233/unig2u_dataset"  # lmms-eval's UniG2U Parquet files (one per sub-task)
_MMSI_POST = "\n\nBased on your {}, answer with the option's letter from the given choices directly. " \
             "Enclose the option's letter within ``."
_MMSI_COLUMNS = {"id": "source_id", "images": "images", "question": "question", "answer": "answer",
                 "question_type": "category", "thought": "thought"}


def _unig2u(task: str, *, layout: str, suite: str, data_file: str, hf_columns: Mapping[str, str],
            pre: str = "", post: str = "", question_type: str | None = None,
            question_types: tuple[str, ...] = (), notes: str = "") -> BenchmarkSpec:
    """One lmms-eval UniG2U sub-task, named as its standard task; the two-stage task is the alias.
    Ids are row positions (lmms-eval's doc_id); the dataset's own `id` is kept as source_id."""
    return BenchmarkSpec(
        name=f"unig2u_{task}", aliases=(f"unig2u_{task}_visual_cot",), formats=("hf-parquet",),
        question_type=question_type, question_types=question_types, suite=SUITES[suite], hf_id=UNIG2U_HF,
        hf_columns=hf_columns, row_step=H.unig2u_rows(layout, pre, post),
        notes=f"lmms-eval UniG2U, file {data_file}; edit family unig2u_{task}. {notes}".strip())


SPECS: tuple[BenchmarkSpec, ...] = (
    BenchmarkSpec(
        name="MME", formats=_TSV_HF, question_type="yes_no", suite=SUITES["mme"], hf_id="lmms-lab/MME",
        hf_columns={"question_id": "image_path", "image": "image", "question": "question", "answer": "answer",
                    "category": "category"},
        row_step=H.mme_rows, item_step=H.mme_item,
        notes="acc + acc+ per category (pairs grouped by image_path), perception /2000, cognition /800. "
              "HF rows get item_id = row position.",
    ),
    BenchmarkSpec(
        name="HallusionBench", formats=_TSV_HF, question_type="yes_no", suite=SUITES["hallusionbench"],
        hf_id="lmms-lab/HallusionBench",
        hf_columns={"category": "category", "subcategory": "subcategory", "visual_input": "visual_input",
                    "set_id": "set_id", "figure_id": "figure_id", "question_id": "question_id",
                    "question": "question", "gt_answer": "answer", "gt_answer_details": "gt_answer_details",
                    "sample_note": "sample_note", "filename": "filename", "image": "image"},
        row_step=H.hallusion_rows, item_step=H.hallusion_item,
        notes="aAcc/fAcc/qAcc; keys from index fields 3,4,5. HF (image split): gt_answer 1/0 -> Yes/No, "
              "index = category_subcategory_visualinput_set_figure_question, l2-category = category_subcategory.",
    ),
    BenchmarkSpec(
        name="MMVet", aliases=("MM-Vet",), formats=_TSV_HF, question_type="open", suite=SUITES["mmvet"],
        hf_id="lmms-lab/MMVet",
        hf_columns={"question_id": "index", "image": "image", "question": "question", "answer": "answer",
                    "capability": "category", "image_source": "image_source"},
        row_step=H.mmvet_rows,
        notes="GPT-4 scores 0-1 per item (5 tries, else 0); x100 overall and per capability. "
              "HF capability list -> comma-joined category.",
    ),
    BenchmarkSpec(
        name="MMStar", formats=_TSV_HF, question_type="mcq", suite=SUITES["mcq"], hf_id="Lin-Chen/MMStar",
        hf_columns={"index": "index", "question": "question", "image": "image", "answer": "answer",
                    "category": "category", "l2_category": "l2-category", "meta_info": "meta_info"},
        row_step=H.mmstar_rows,
        notes="report_acc fractions. HF: options parsed out of the question ('...\\nOptions: A: x, B: y, ...').",
    ),
    BenchmarkSpec(
        name="MMBench_DEV_EN", aliases=("MMBench", "MMBench_DEV_EN_V11", "MMBench_V11"), formats=_TSV_HF,
        question_type="mcq", suite=SUITES["mmbench_circular"], hf_id="HuggingFaceM4/MMBench",
        hf_columns={"index": "index", "question": "question", "hint": "hint", "A": "A", "B": "B", "C": "C",
                    "D": "D", "answer": "answer", "category": "category", "image": "image", "source": "source",
                    "l2-category": "l2-category", "comment": "comment", "split": "split"},
        item_step=H.mmbench_item,
        notes="Circular: copies have index + k*10^6, g_index = index mod 10^6; a group scores 1 only if every "
              "copy is right. 'MMBench' (test) has no answers.",
    ),
    BenchmarkSpec(
        name="AI2D_TEST", aliases=("AI2D", "AI2D_TEST_NO_MASK"), formats=_TSV_HF, question_type="mcq",
        suite=SUITES["mcq"], hf_id="lmms-lab/ai2d",
        hf_columns={"question": "question", "options": "options", "answer": "answer", "image": "image"},
        row_step=H.ai2d_rows,
        notes="Vanilla MCQ (fractions). HF: options list -> A.., answer = 0-based option position -> letter.",
    ),
    BenchmarkSpec(
        name="MathVista_MINI", aliases=("MathVista",), formats=_TSV_HF, question_types=("mcq", "numeric", "open"),
        suite=SUITES["mathvista"], hf_id="AI4Math/MathVista",
        hf_columns={"pid": "index", "query": "question", "question": "raw_question", "decoded_image": "image",
                    "image": "image_path", "choices": "choices", "unit": "unit", "precision": "precision",
                    "answer": "answer", "question_type": "mathvista_question_type", "answer_type": "answer_type",
                    "metadata.task": "task", "metadata.skills": "skills", "metadata": "metadata"},
        row_step=H.mathvista_rows, item_step=H.mathvista_item,
        notes="Pre-fetch (can_infer / exact number) then gpt-4o-mini extraction; float compared exactly, "
              "list answers never correct. multi_choice -> mcq with answer = answer_option letter.",
    ),
    BenchmarkSpec(
        name="KIVA", formats=("custom-tsv",), question_types=("mcq", "yes_no"), suite=SUITES["kiva"],
        notes="Authors' MyVQABench: own can_infer, judge fallback (3 tries, then 'A'); only the first image is sent.",
    ),
    BenchmarkSpec(
        name="Spatial457", aliases=("Spatial457_occ", "Spatial457_L5"), formats=("custom-tsv", "hf-parquet"),
        question_types=("yes_no", "numeric", "open"), suite=SUITES["spatial457"], hf_id="RyanWW/Spatial457",
        hf_columns={"question_index": "index", "image": "image", "image_filename": "image_path",
                    "question": "question", "answer": "answer", "program": "program"},
        notes="Authors' subsets are private MyVQABench TSVs; every row gets one 1/0 judge call.",
    ),
    BenchmarkSpec(
        name="QSpatial", aliases=("QSpatial_plus", "QSpatial_scannet"), formats=("hf-parquet", "vlmevalkit-tsv"),
        question_type="numeric", suite=SUITES["qspatial"], hf_id="andrewliao11/Q-Spatial-Bench",
        hf_columns={"question": "question", "answer_value": "answer_value", "answer_unit": "answer_unit",
                    "question_type": "qspatial_question_type", "image_path": "image_path", "image": "image"},
        row_step=H.qspatial_rows,
        notes="delta_2 (headline) and delta_1.5 in cm. TSV = VLMEvalKit's DataFrame dump with answer "
              "'(value, unit)'. QSpatial_scannet images come from image_path under the images root.",
    ),
    BenchmarkSpec(
        name="POPE", formats=_TSV_HF, question_type="yes_no", suite=SUITES["pope"], hf_id="lmms-lab/POPE",
        hf_columns={"id": "index", "question_id": "question_id", "question": "question", "answer": "answer",
                    "image_source": "image_source", "image": "image", "category": "category"},
        notes="Proposed substitute. F1 (positive = Yes), acc, precision, recall; comma-joined categories split.",
    ),
    BenchmarkSpec(
        name="MMMU_DEV_VAL", aliases=("MMMU",), formats=_TSV_HF, question_types=("mcq", "numeric", "open"),
        suite=SUITES["mmmu"], hf_id="MMMU/MMMU",
        hf_columns={"id": "index", "question": "question", "options": "options", "answer": "answer",
                    "question_type": "mmmu_question_type", "explanation": "explanation", "img_type": "img_type",
                    "topic_difficulty": "topic_difficulty", "subfield": "subfield",
                    **{f"image_{k}": f"image_{k}" for k in range(1, 8)}},
        row_step=H.mmmu_rows, item_step=H.mmmu_item,
        notes="Proposed substitute. Multi-image, <image k> tags; open questions become A = gold, "
              "B = 'Other Answers' at scoring; report_acc per split. HF image_1..7 -> images.",
    ),
    BenchmarkSpec(
        name="custom", aliases=("VisThink",), formats=("custom-tsv",),
        question_types=("mcq", "yes_no", "open", "numeric"), suite=SUITES["kiva"],
        notes="Authors' KIVA/VisThink-style TSV: final_image_path_ori (relative to the images root) or "
              "base64 image or <ori_Bench>/<index>.jpg|png.",
    ),
    _unig2u("chartqa100", layout="chartqa", suite="unig2u_chartqa", data_file="chartqa100/chartqa100.parquet",
            post="\nAnswer the question with a single word.", question_types=("numeric", "open", "yes_no"),
            hf_columns={"type": "category", "question": "question", "answer": "answer", "image": "image"},
            notes="Relaxed accuracy (5% for numbers); split by type human_test / augmented_test."),
    _unig2u("mmsi_attribute_appr", layout="mmsi", suite="unig2u_mmsi_attribute_appr", question_type="mcq",
            data_file="mmsi_bench/attribute_appr.parquet", hf_columns=_MMSI_COLUMNS,
            pre="Pay close attention to the visual appearance attributes (color, shape, texture, orientation, "
                "count, visual features) in the images. Observe details carefully to identify and count "
                "objects.\n\n",
            post=_MMSI_POST.format("visual observation")),
    _unig2u("mmsi_attribute_meas", layout="mmsi", suite="unig2u_mmsi_attribute_meas", question_type="mcq",
            data_file="mmsi_bench/attribute_meas.parquet", hf_columns=_MMSI_COLUMNS,
            pre="Carefully observe the measurable attributes (size, length, width, height, distance, area, "
                "volume) in the images. Compare quantitative properties and estimate relative measurements.\n\n",
            post=_MMSI_POST.format("measurement analysis")),
    _unig2u("mmsi_motion_cam", layout="mmsi", suite="unig2u_mmsi_motion_cam", question_type="mcq",
            data_file="mmsi_bench/motion_cam.parquet", hf_columns=_MMSI_COLUMNS,
            pre="Analyze the consecutive first-person perspective images. Determine how the camera (viewpoint) "
                "is moving or rotating by observing changes in the scene and object positions relative to the "
                "viewer.\n\n",
            post=_MMSI_POST.format("analysis of camera motion")),
    _unig2u("mmsi_motion_obj", layout="mmsi", suite="unig2u_mmsi_motion_obj", question_type="mcq",
            data_file="mmsi_bench/motion_obj.parquet", hf_columns=_MMSI_COLUMNS,
            pre="Track objects across the consecutive images. Identify which objects are moving, their direction "
                "of motion, and relative speeds by comparing their positions between frames.\n\n",
            post=_MMSI_POST.format("analysis of object motion")),
    _unig2u("mmsi_msr", layout="mmsi", suite="unig2u_mmsi_msr", question_type="mcq",
            data_file="mmsi_bench/msr.parquet", hf_columns=_MMSI_COLUMNS,
            pre="Analyze the given images step by step. Consider the spatial relationships, object positions, "
                "and changes across images. Break down complex reasoning into clear steps before answering.\n\n",
            post=_MMSI_POST.format("multi-step reasoning")),
    _unig2u("VisualPuzzles_algorithmic", layout="visualpuzzles", suite="unig2u_visualpuzzles", question_type="mcq",
            data_file="visualpuzzles/algorithmic.parquet",
            post="Answer the question with the option's letter from the given choices directly.",
            hf_columns={"id": "source_id", "category": "category", "image": "image", "question": "question",
                        "options": "choices", "answer": "answer"},
            notes="The four options stay in the prompt text (extra choices), as lmms-eval writes them."),
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


def has_spec(name: str) -> bool:
    return name.strip().lower() in _BY_NAME


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
