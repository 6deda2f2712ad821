"""Each scoring suite's aggregation: per-item verdicts -> metrics, as VLMEvalKit ca9a644 (and the
authors' fork) computes them.

Input: one row per scored prediction with the columns benchmark, item_id, question, answer, options
(JSON), category, question_type, extra (JSON), prediction, extracted (str|None), hit (bool|None; None =
needs a judge that was not available), judged (bool), and for MM-Vet an optional float `score`
(the judge's 0-1 grade). Output: records {benchmark, metric, value, n, unit, status, note}.

A group holding any unresolved item (hit None) is never guessed: value None, status "not_computed".
Metric names follow the reference tables. A two-way table (row x column) is flattened to
"<column>/<row>", the Overall/none row keeping the bare column name; report_acc with several splits
gives "<group>/<split>".

| suite            | metrics (reference source)                                            | unit     |
|------------------|-----------------------------------------------------------------------|----------|
| mme              | perception, reasoning (+ alias cognition), <category> = acc + acc+    | sum      |
|                  | acc/<category>, acc+/<category>                                       | x100     |
| hallusionbench   | aAcc, fAcc, qAcc (+ /<category>, /<l2-category>), mean_aAcc_fAcc_qAcc | x100     |
| mmvet            | Overall, rec, ocr, know, gen, spat, math, <capability combos>         | x100     |
| mcq, mmmu, kiva, | report_acc: Overall, <l2-category> (MMBench abbreviations), <category>| fraction |
| spatial457       |                                                                       |          |
| mmbench_circular | report_acc over original rows, a group scoring 1 only if all rotations| fraction |
| mathvista        | Overall, <task>, <skill>; prefetch_rate                               | x100     |
| qspatial         | delta_2, delta_1_point_5, <question_type>_delta_2 / _delta_1_point_5  | fraction |
|                  | parse_errors                                                          | sum      |
| pope             | F1, acc, precision, recall, yes_ratio (+ /<split>)                    | x100     |
| unig2u_chartqa   | relaxed_overall, relaxed_human_split, relaxed_augmented_split (lmms-eval) | fraction |
| unig2u_mmsi_*    | the sub-task's metric (e.g. "Attribute (Appr.)") over its question type | fraction |
| unig2u_accuracy  | accuracy (lmms-eval VisualPuzzles)                                    | fraction |
| (evaluate)       | judge_fallback: n = items that needed the judge                       | sum      |
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

import polars as pl

from g2u_tasks.benchmarks.loaders import parse_list_cell
from g2u_tasks.scoring.extraction import qspatial_multiplier, qspatial_ratio

FRACTION, X100, SUM = "fraction", "x100", "sum"
MMB_ABBRS = {
    "coarse_perception": "CP",
    "finegrained_perception (instance-level)": "FP-S",
    "finegrained_perception (cross-instance)": "FP-C",
    "logic_reasoning": "LR",
    "relation_reasoning": "RR",
    "attribute_reasoning": "AR",
}
MME_PERCEPTION = ("OCR", "artwork", "celebrity", "color", "count", "existence", "landmark", "position",
                  "posters", "scene")
MME_REASONING = ("code_reasoning", "commonsense_reasoning", "numerical_calculation", "text_translation")
MMVET_CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")
CIRCULAR_OFFSET = 1_000_000


# ---- records and helpers -------------------------------------------------------------------------


def record(benchmark: str, metric: str, value: float | None, n: int, unit: str,
           status: str = "ok", note: str = "") -> dict[str, Any]:
    return {"benchmark": benchmark, "metric": metric, "value": None if value is None else float(value),
            "n": int(n), "unit": unit, "status": status, "note": note}


def judge_fallback_record(benchmark: str, n_needed: int, note: str) -> dict[str, Any]:
    """Items whose answer the rules could not settle; `note` says whether a judge resolved them."""
    return record(benchmark, "judge_fallback", float(n_needed), n_needed, SUM, "ok", note)


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    rows = frame.to_dicts()
    for r in rows:
        r["extra"] = _json_dict(r.get("extra"))
        r["options"] = _json_dict(r.get("options"))
    return rows


def _json_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if not value:
        return {}
    parsed = json.loads(value)
    return parsed if isinstance(parsed, dict) else {}


def _unresolved_note(k: int, n: int) -> str:
    return f"{k} of {n} item(s) need a judge that was not available"


def _mean_record(benchmark: str, metric: str, values: list[Any], unit: str, scale: float = 1.0) -> dict:
    """Mean of bools/floats (x scale); None anywhere -> not_computed; no values -> not_computed."""
    n = len(values)
    if n == 0:
        return record(benchmark, metric, None, 0, unit, "not_computed", "no items")
    missing = sum(v is None for v in values)
    if missing:
        return record(benchmark, metric, None, n, unit, "not_computed", _unresolved_note(missing, n))
    return record(benchmark, metric, sum(float(v) for v in values) / n * scale, n, unit)


def _present(rows: list[dict], key: str) -> bool:
    return any(r["extra"].get(key) is not None for r in rows)


def _flat(name: str, row_label: str | None) -> str:
    return name if row_label is None else f"{name}/{row_label}"


# ---- report_acc (utils/multiple_choice.py) -------------------------------------------------------


def report_acc(benchmark: str, rows: list[dict], hits: list[Any]) -> list[dict]:
    """Overall, then each l2-category (MMBench abbreviations), then each category; per split. Fractions."""
    has_split = _present(rows, "split")
    splits = [str(r["extra"].get("split")) if has_split else "none" for r in rows]
    split_names = sorted(set(splits))
    groups: dict[str, list[int]] = {"Overall": list(range(len(rows)))}
    for key in ("l2-category", "category"):
        labels = [r["extra"].get(key) if key != "category" else r.get("category") for r in rows]
        for label in sorted({str(x) for x in labels if x is not None}):
            name = MMB_ABBRS.get(label, label)
            groups[name] = [i for i, x in enumerate(labels) if x is not None and str(x) == label]  # later wins
    out = []
    for name, idx in groups.items():
        for sp in split_names:
            label = None if len(split_names) == 1 else sp
            out.append(_mean_record(benchmark, _flat(name, label), [hits[i] for i in idx if splits[i] == sp],
                                    FRACTION))
    return out


def mcq(frame: pl.DataFrame) -> list[dict]:
    """MMStar, AI2D (and MMMU, KIVA, Spatial457): `report_acc` over per-item hits."""
    rows = _rows(frame)
    return report_acc(_name(frame), rows, [r["hit"] for r in rows])


def mmbench_circular(frame: pl.DataFrame) -> list[dict]:
    """`mcq_circular_eval`: a group (g_index) scores 1 only if every rotation is right; report_acc on originals.

    A rotation known wrong settles the group at 0 even when others are unresolved (upstream's pre-fetch).
    """
    rows = _rows(frame)
    by_group: dict[int, list[Any]] = defaultdict(list)
    for r in rows:
        by_group[_g_index(r)].append(r["hit"])
    main = [r for r in rows if int(float(r["item_id"])) == _g_index(r)]
    hits = []
    for r in main:
        group = by_group[_g_index(r)]
        hits.append(False if any(h is False for h in group) else None if any(h is None for h in group) else True)
    return report_acc(_name(frame), main, hits)


def _g_index(row: dict) -> int:
    g = row["extra"].get("g_index")
    return int(float(g)) if g is not None else int(float(row["item_id"]) % CIRCULAR_OFFSET)


def _name(frame: pl.DataFrame) -> str:
    return str(frame["benchmark"][0]) if frame.height else ""


# ---- yes/no suites (utils/yorn.py) ---------------------------------------------------------------


def mme(frame: pl.DataFrame) -> list[dict]:
    """`MME_rating`: per category acc + acc+ (x100 each, max 200); perception / reasoning sums."""
    rows, bench = _rows(frame), _name(frame)
    if rows and not _present(rows, "image_path"):
        return [record(bench, "perception", None, len(rows), SUM, "not_computed",
                       "no image_path: acc+ needs the question pairs of each image")]
    by_cat: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_cat[str(r["category"])][str(r["extra"].get("image_path"))].append(r["hit"])
    scores: dict[str, dict] = {}
    detail: list[dict] = []
    for cat in sorted(by_cat):
        images = by_cat[cat]
        flat = [h for hs in images.values() for h in hs]
        acc = _mean_record(bench, f"acc/{cat}", flat, X100, 100.0)
        pairs = [None if None in hs[:2] else _pair_score(hs) for hs in images.values()]
        plus = _mean_record(bench, f"acc+/{cat}", pairs, X100, 100.0)
        plus["n"] = len(pairs)
        if any(len(hs) != 2 for hs in images.values()):
            plus["note"] = "an image without exactly 2 questions: acc+ uses its first two (or its only one)"
        detail += [acc, plus]
        ok = acc["status"] == plus["status"] == "ok"
        scores[cat] = record(bench, cat, acc["value"] + plus["value"] if ok else None, len(flat), SUM,
                             "ok" if ok else "not_computed", "" if ok else acc["note"] or plus["note"])
    totals = [_mme_total(bench, "perception", MME_PERCEPTION, scores),
              _mme_total(bench, "reasoning", MME_REASONING, scores)]
    totals.append({**totals[1], "metric": "cognition", "note": "alias of reasoning"})
    return totals + list(scores.values()) + detail


def _pair_score(hits: list[Any]) -> float:
    """val[0] * val[1] upstream (which fails on a lone question; we then use that question)."""
    return float(hits[0]) * float(hits[1]) if len(hits) >= 2 else float(hits[0])


def _mme_total(bench: str, name: str, cats: tuple[str, ...], scores: dict[str, dict]) -> dict:
    missing = [c for c in cats if c not in scores]
    n = sum(scores[c]["n"] for c in cats if c in scores)
    if missing:
        return record(bench, name, None, n, SUM, "not_computed", f"missing categories: {', '.join(missing)}")
    if any(scores[c]["value"] is None for c in cats):
        return record(bench, name, None, n, SUM, "not_computed", "a category needs a judge")
    return record(bench, name, sum(scores[c]["value"] for c in cats), n, SUM)


def hallusionbench(frame: pl.DataFrame) -> list[dict]:
    """`Hallusion_rating`: aAcc, fAcc (per figure), qAcc (per question) x100; Overall, category, l2-category."""
    rows, bench = _rows(frame), _name(frame)
    for r in rows:
        parts = str(r["item_id"]).split("_")
        for key, pos in (("set_id", 3), ("figure_id", 4), ("question_id", 5)):
            if r["extra"].get(key) is None and len(parts) > pos:
                r["extra"][key] = parts[pos]
    sections: list[tuple[str | None, list[dict]]] = [(None, rows)]
    for key in ("category", "l2-category"):
        labels = {str(_get(r, key)) for r in rows if _get(r, key) is not None}
        sections += [(lab, [r for r in rows if str(_get(r, key)) == lab]) for lab in sorted(labels)]
    out = []
    for label, sub in sections:
        a = _mean_record(bench, _flat("aAcc", label), [r["hit"] for r in sub], X100, 100.0)
        f = _group_all(bench, _flat("fAcc", label), sub, "figure_id")
        q = _group_all(bench, _flat("qAcc", label), sub, "question_id")
        out += [a, f, q]
        if label is None:
            trio = [a, f, q]
            ok = all(x["status"] == "ok" for x in trio)
            out.append(record(bench, "mean_aAcc_fAcc_qAcc", sum(x["value"] for x in trio) / 3 if ok else None,
                              len(sub), X100, "ok" if ok else "not_computed",
                              "mean of aAcc, fAcc, qAcc (OpenVLM leaderboard figure, inferred)"))
    return out


def _get(row: dict, key: str) -> Any:
    return row.get("category") if key == "category" else row["extra"].get(key)


def _group_all(bench: str, metric: str, rows: list[dict], id_key: str) -> dict:
    """Groups keyed "<l2-category>_<set_id>_<id>" score 1 only if all their questions are right."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        e = r["extra"]
        groups[f"{e.get('l2-category')}_{e.get('set_id')}_{e.get(id_key)}"].append(r["hit"])
    values = [False if False in hs else None if None in hs else True for hs in groups.values()]
    return _mean_record(bench, metric, values, X100, 100.0)


def pope(frame: pl.DataFrame) -> list[dict]:
    """`POPE_rating` after splitting comma-joined categories into rows: F1, acc, precision, recall (x100)."""
    rows, bench = _rows(frame), _name(frame)
    exploded = [(c, r) for r in rows for c in (str(r["category"]).split(",") if r["category"] is not None
                                               else [None])]
    out = _pope_block(bench, None, [r for _, r in exploded])
    for split in sorted({c for c, _ in exploded if c is not None}):
        out += _pope_block(bench, split, [r for c, r in exploded if c == split])
    return out


def _pope_block(bench: str, label: str | None, rows: list[dict]) -> list[dict]:
    n = len(rows)
    acc = _mean_record(bench, _flat("acc", label), [r["hit"] for r in rows], X100, 100.0)
    if acc["status"] != "ok":
        return [acc]
    truth = [r["answer"] == "Yes" for r in rows]
    pred = [r["extracted"] == "Yes" for r in rows]
    tp = sum(t and p for t, p in zip(truth, pred))
    fp = sum(p and not t for t, p in zip(truth, pred))
    fn = sum(t and not p for t, p in zip(truth, pred))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return [record(bench, _flat("F1", label), f1 * 100, n, X100), acc,
            record(bench, _flat("precision", label), precision * 100, n, X100),
            record(bench, _flat("recall", label), recall * 100, n, X100),
            record(bench, _flat("yes_ratio", label), sum(pred) / n * 100 if n else None, n, X100,
                   note="share of Yes predictions (not in POPE_rating)")]


# ---- judged free-form suites ---------------------------------------------------------------------


def mmvet(frame: pl.DataFrame) -> list[dict]:
    """`MMVet_acc`: mean judge score x100, Overall and per capability (substring of the category).

    Kept quirk: capability and combination totals share one table upstream, so an item whose category
    is a single capability (e.g. "rec") is counted twice in that capability's mean.
    """
    rows, bench = _rows(frame), _name(frame)
    grades = [_grade(r) for r in rows]
    if any(g is None for g in grades):
        k = sum(g is None for g in grades)
        names = ["Overall", *MMVET_CAPABILITIES]
        return [record(bench, m, None, len(rows), X100, "not_computed",
                       f"judge-only metric; {_unresolved_note(k, len(rows))}") for m in names]
    tot: dict[str, int] = defaultdict(int)
    total: dict[str, float] = defaultdict(float)
    combos: list[str] = []
    for r, g in zip(rows, grades):
        cate = str(r["category"] or "")
        combo = cate.replace(",", "_")
        if combo not in combos:
            combos.append(combo)
        for capa in MMVET_CAPABILITIES:
            if capa in cate:
                tot[capa] += 1
                total[capa] += g
        for key in ("Overall", combo):
            tot[key] += 1
            total[key] += g
    names = ["Overall", *MMVET_CAPABILITIES, *(c for c in combos if c not in MMVET_CAPABILITIES)]
    return [record(bench, k, total[k] / tot[k] * 100, tot[k], X100) if tot[k]
            else record(bench, k, None, 0, X100, "not_computed", "no items") for k in names]


def _grade(row: dict) -> float | None:
    score = row.get("score")
    if score is not None:
        return float(score)
    return None if row["hit"] is None or not row.get("judged") else float(row["hit"])


def mathvista(frame: pl.DataFrame) -> list[dict]:
    """`MathVista_acc`: acc x100 for Overall, each task and each skill; prefetch_rate for Overall."""
    rows, bench = _rows(frame), _name(frame)
    keyed: dict[str, list[Any]] = {"Overall": []}
    for r in rows:
        # as upstream, a skill listed twice (or equal to the task) counts twice
        for key in ["Overall", *_skills(r["extra"].get("skills")), str(r["extra"].get("task"))]:
            keyed.setdefault(key, []).append(r["hit"])
    out = [_mean_record(bench, k, hits, X100, 100.0) for k, hits in keyed.items()]
    prefetched = [not r["judged"] and r["extracted"] is not None for r in rows]
    out.append(_mean_record(bench, "prefetch_rate", prefetched, X100, 100.0))
    return out


def _skills(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(x) for x in value]
    if value is None:
        return ["None"]
    parsed = parse_list_cell(str(value))
    return [str(x) for x in parsed] if parsed is not None else [str(value)]


def qspatial(frame: pl.DataFrame) -> list[dict]:
    """Q-Spatial: share of items with max(pred/gt, gt/pred) < 2 (delta_2) and < 1.5; per question_type."""
    rows, bench = _rows(frame), _name(frame)
    ratios = [qspatial_ratio(None if r["extracted"] is None else float(r["extracted"]),
                             qspatial_gold_cm(r["extra"], r["answer"], r["item_id"])) for r in rows]
    d2 = [x < 2.0 for x in ratios]  # NaN compares False, as upstream
    d15 = [x < 1.5 for x in ratios]
    out = [_mean_record(bench, "delta_2", d2, FRACTION), _mean_record(bench, "delta_1_point_5", d15, FRACTION)]
    qtypes = [str(r["extra"].get("qspatial_question_type") or r["extra"].get("question_type") or r["category"])
              for r in rows]
    for qt in sorted(set(qtypes)):
        idx = [i for i, q in enumerate(qtypes) if q == qt]
        out.append(_mean_record(bench, f"{qt}_delta_2", [d2[i] for i in idx], FRACTION))
        out.append(_mean_record(bench, f"{qt}_delta_1_point_5", [d15[i] for i in idx], FRACTION))
    errors = sum(r["extracted"] is None for r in rows)
    out.append(record(bench, "parse_errors", errors, errors, SUM, note="predictions without scalar/unit boxes"))
    return out


_TUPLE = re.compile(r"""^\(\s*([-+\d.eE]+)\s*,\s*['"]?(.*?)['"]?\s*\)$""")


def qspatial_gold_cm(extra: dict, answer: Any, item_id: str = "") -> float:
    """Gold distance in cm from answer_value/answer_unit, else from the "(value, 'unit')" answer text."""
    if extra.get("answer_value") is not None and extra.get("answer_unit") is not None:
        return float(extra["answer_value"]) * qspatial_multiplier(extra["answer_unit"])
    match = _TUPLE.match(str(answer).strip())
    if not match:
        raise ValueError(f"Q-Spatial item {item_id}: cannot read the gold answer {answer!r}")
    return float(match.group(1)) * qspatial_multiplier(match.group(2))


# ---- lmms-eval UniG2U (tasks/unig2u/*/utils.py; `mean` over the items that report the metric) ----

CHARTQA_HUMAN = "human_test"  # ChartQA `type`: human_test, else the augmented split


def unig2u_chartqa(frame: pl.DataFrame) -> list[dict]:
    """relaxed_overall over all items; the human / augmented split by Item.category (ChartQA `type`)."""
    rows = _rows(frame)
    human = [r["hit"] for r in rows if r["category"] == CHARTQA_HUMAN]
    augmented = [r["hit"] for r in rows if r["category"] != CHARTQA_HUMAN]
    b = _name(frame)
    return [_mean_record(b, "relaxed_overall", [r["hit"] for r in rows], FRACTION),
            _mean_record(b, "relaxed_human_split", human, FRACTION),
            _mean_record(b, "relaxed_augmented_split", augmented, FRACTION)]


def unig2u_question_type(metric: str):
    """MMSI-Bench: lmms-eval aggregates only the metric its YAML lists, i.e. the items whose
    question_type (Item.category) is that name; other items of the file count nowhere."""
    def aggregate(frame: pl.DataFrame) -> list[dict]:
        rows = _rows(frame)
        return [_mean_record(_name(frame), metric, [r["hit"] for r in rows if r["category"] == metric], FRACTION)]
    aggregate.__name__ = f"unig2u_question_type[{metric}]"
    return aggregate


def unig2u_accuracy(frame: pl.DataFrame) -> list[dict]:
    """VisualPuzzles: accuracy = mean verdict over all items."""
    return [_mean_record(_name(frame), "accuracy", [r["hit"] for r in _rows(frame)], FRACTION)]
