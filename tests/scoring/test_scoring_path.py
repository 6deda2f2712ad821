"""One scoring path, end to end without Prefect: thoughts, a scripted OpenAI-compatible understander
(and judge) on 127.0.0.1, the scoring stage, the warehouse and `gain_ci`.

For every benchmark with open or numeric questions, `predictions.correct` per item must equal the
suite's own verdict on the same raw output, and `gain_ci` must equal the gain worked out here from
those verdicts on the paired items (baseline and condition both scored)."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from g2u_tasks.analysis import reports
from g2u_tasks.benchmarks.adapters import load_benchmark_spec
from g2u_tasks.benchmarks.table import get_spec
from g2u_tasks.config import RunConfig
from g2u_tasks.scoring.evaluate import row_from_item
from g2u_tasks.scoring.items import NO_JUDGE
from g2u_tasks.scoring.score import JudgePool, score_rows
from g2u_tasks.scoring.judge import JudgeSpec
from g2u_tasks.thoughts.stage import materialise_thoughts
from g2u_tasks.understanding.stage import run_understanding
from g2u_tasks.warehouse import database as warehouse
from g2u_tasks.warehouse.stage import load_run
from tests.loopback_chat import ChatServer

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"
BENCHMARKS = {  # name -> fixture file
    "MathVista_MINI": "MathVista_MINI.tsv", "MMVet": "MMVet.tsv", "QSpatial_plus": "QSpatial_plus.tsv",
    "Spatial457_occ": "Spatial457_occ.tsv", "MMMU_DEV_VAL": "MMMU_DEV_VAL.tsv",
}
CONDITION, MODE = "detail_enhancement", "concat"
KEY_ENV = "G2U_TEST_SCRIPTED_KEY"
UNSURE = "I am not sure."


def _items() -> dict[str, list]:
    return {n: load_benchmark_spec(n, str(FIX / f), images_root=str(FIX / "images")) for n, f in BENCHMARKS.items()}


def _gold_reply(item) -> str:
    """A reply each suite's rules (or the scripted judge) read as right."""
    if item.benchmark == "QSpatial_plus":
        return f"\\scalar{{{item.extra['answer_value']}}} \\distance_unit{{{item.extra['answer_unit']}}}"
    if item.question_type == "mcq":
        return f"The answer is {item.answer}"
    return str(item.answer)


def _script(items: dict[str, list]) -> dict[tuple[str, bool], str]:
    """(question, with a thought?) -> reply: baseline = the fixture's recorded prediction; with the
    thought, every item but the second gets the gold reply, the second an unusable one."""
    out = {}
    for name, its in items.items():
        recorded = pl.read_csv(FIX / "predictions" / BENCHMARKS[name], separator="\t", infer_schema=False)
        by_id = dict(zip(recorded["index"], recorded["prediction"]))
        for pos, it in enumerate(its):
            out[(it.question, False)] = by_id[it.item_id]
            out[(it.question, True)] = _gold_reply(it) if _gets_gold(pos) else UNSURE
    return out


def _gets_gold(position: int) -> bool:
    return position != 1


def _judge_reply(prompt: str) -> str:
    """A deterministic judge: grades 1 exactly when the prediction equals the gold text."""
    if prompt == "hello":
        return "hi"
    if "correctness score" in prompt:  # MM-Vet: "... question | ground truth | prediction | "
        _, gt, pred, _ = prompt.rsplit("\n", 1)[-1].rsplit(" | ", 3)
        return "1.0" if pred.strip() == gt.replace(" <OR> ", "<OR>").replace(" <AND> ", "<AND>").strip() else "0.0"
    if "strict, impartial evaluator" in prompt:  # Spatial457
        gt = prompt.split("[Ground Truth]: ", 1)[1].split("\n", 1)[0].strip()
        pred = prompt.split("[Prediction]: ", 1)[1].split("\n", 1)[0].strip()
        return f"<result>\n{int(gt.lower() == pred.lower())}\n</result>"
    if "Extracted answer:" in prompt:  # MathVista: the response's last word is the answer
        return prompt.rsplit("Model respone: ", 1)[1].rsplit("Extracted answer:", 1)[0].split()[-1].strip(".")
    return "Z"


class Scripted(ChatServer):
    """Image-bearing requests answer as the understander (from the script), text-only ones as the judge."""

    def __init__(self, script: dict[tuple[str, bool], str]):
        super().__init__()
        self.script = script
        self.questions = sorted({q for q, _ in script}, key=len, reverse=True)

    def handle(self, body: dict, auth: str | None) -> str:
        content = body["messages"][-1]["content"]
        text = content[-1]["text"]
        if len(content) == 1:
            return _judge_reply(text)
        question = next(q for q in self.questions if q in text)
        return self.script[(question, "visual thought" in text)]


@pytest.fixture(scope="module")
def scripted():
    server = Scripted(_script(_items()))
    yield server
    server.close()


def _config(root: Path, base_url: str, judge: bool) -> RunConfig:
    return RunConfig.model_validate({
        "store": f"file://{root / 'store'}", "warehouse": str(root / ("judged.duckdb" if judge else "plain.duckdb")),
        "benchmarks": [{"name": n, "source": str(FIX / f)} for n, f in BENCHMARKS.items()],
        "families": [CONDITION], "modes": ["baseline", MODE], "seeds": [0],
        "generator": {"backend": "reference"},
        "understander": {"backend": "openai", "model": "scripted-vlm",
                         "params": {"base_url": base_url, "api_key_env": KEY_ENV, "backoff_s": 0.01, "timeout_s": 10}},
        "judge": {"base_url": base_url, "api_key_env": KEY_ENV, "max_retries": 0, "timeout_s": 10} if judge else None,
        "batch_size": 16,
    })


@pytest.fixture(scope="module")
def runs(scripted, tmp_path_factory):
    """The same run with and without a judge, through the core sequences (no Prefect): {judged?: (config, run id)}."""
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, "sk-test-scripted")
    root = tmp_path_factory.mktemp("scoring_path")
    out = {}
    try:
        for judge in (True, False):
            cfg = _config(root, scripted.base_url, judge)
            m = materialise_thoughts(cfg)
            run_id = run_understanding(cfg, m["dataset_version"], m)
            load_run(cfg, run_id, m["dataset_version"])
            out[judge] = (cfg, run_id)
    finally:
        mp.undo()
    return out


def _frames(cfg: RunConfig, run_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    con = warehouse.connect(cfg.warehouse, read_only=True)
    try:
        preds = con.sql("SELECT * FROM predictions WHERE run_id = ?", params=[run_id]).pl()
        gain = reports.run_report(con, "gain_ci", run_id)
    finally:
        con.close()
    return preds, gain


def _suite_verdicts(name: str, preds: pl.DataFrame, judge: JudgeSpec | None) -> dict[tuple[str, str], bool | None]:
    """(item_id, condition) -> the suite's verdict, scoring the stored raw outputs directly."""
    items = {it.item_id: it for it in _items()[name]}
    suite = get_spec(name).suite
    out: dict[tuple[str, str], bool | None] = {}
    pool = JudgePool(judge)
    try:
        for condition in ("baseline", CONDITION):
            part = preds.filter((pl.col("benchmark") == name) & (pl.col("condition") == condition))
            rows = [row_from_item(items[i], raw) for i, raw in zip(part["item_id"], part["raw_output"])]
            score_rows(suite, rows, pool)
            out.update({(r.item_id, condition): r.hit for r in rows})
    finally:
        pool.close()
    return out


def _hand_gain_pp(verdicts: dict[tuple[str, str], bool | None]) -> tuple[float | None, int]:
    ids = {i for i, _ in verdicts}
    paired = [i for i in ids if verdicts.get((i, "baseline")) is not None and verdicts.get((i, CONDITION)) is not None]
    if not paired:
        return None, 0
    gain = sum(verdicts[(i, CONDITION)] - verdicts[(i, "baseline")] for i in paired) / len(paired)
    return 100 * gain, len(paired)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_correct_is_the_suite_verdict_and_gain_ci_is_paired(runs, scripted, name):
    cfg, run_id = runs[True]
    judge = JudgeSpec(**cfg.judge.model_dump())
    preds, gain = _frames(cfg, run_id)
    mine = preds.filter((pl.col("benchmark") == name) & pl.col("mode").is_in(["baseline", MODE]))
    assert mine.height == 2 * len(_items()[name])  # every item answered under both
    verdicts = _suite_verdicts(name, mine, judge)
    stored = {(r["item_id"], r["condition"]): r["correct"] for r in mine.iter_rows(named=True)}
    assert stored == verdicts
    assert mine["correct"].is_not_null().all() and mine["unscored_reason"].is_null().all()  # judge settles all
    gold_rows = [it.item_id for pos, it in enumerate(_items()[name]) if _gets_gold(pos)]
    if name != "MathVista_MINI":  # MathVista never credits a text/list answer (kept VLMEvalKit quirk)
        assert all(stored[(i, CONDITION)] for i in gold_rows)
    want, n_paired = _hand_gain_pp(verdicts)
    row = gain.filter((pl.col("benchmark") == name) & (pl.col("condition") == CONDITION) & (pl.col("mode") == MODE))
    assert row.height == 1 and row["gain_pp"][0] == pytest.approx(want, abs=0.005)  # reports round to 0.01
    if "n_paired" in row.columns:
        assert row["n_paired"][0] == n_paired


def test_without_a_judge_mmvet_is_unscored_and_excluded(runs):
    cfg, run_id = runs[False]
    preds, gain = _frames(cfg, run_id)
    mmvet = preds.filter(pl.col("benchmark") == "MMVet")
    assert mmvet.height and mmvet["correct"].is_null().all()
    assert set(mmvet["unscored_reason"]) == {NO_JUDGE}
    spatial = preds.filter(pl.col("benchmark") == "Spatial457_occ")  # every row needs the judge
    assert spatial["correct"].is_null().all()
    # the rules alone still settle Q-Spatial and MMMU, the same way as with a judge
    judged, _ = _frames(*runs[True])
    for name in ("QSpatial_plus", "MMMU_DEV_VAL"):
        a = preds.filter(pl.col("benchmark") == name).sort("item_id", "condition")["correct"]
        b = judged.filter(pl.col("benchmark") == name).sort("item_id", "condition")["correct"]
        assert a.to_list() == b.to_list() and a.is_not_null().all()
    # MathVista: pre-fetched items keep a verdict; the rest wait for a judge
    mv = preds.filter(pl.col("benchmark") == "MathVista_MINI")
    assert mv["correct"].is_not_null().any() and mv["correct"].is_null().any()
    assert (mv["correct"].is_null() == mv["unscored_reason"].is_not_null()).all()
    want, n_paired = _hand_gain_pp(_suite_verdicts("MathVista_MINI", mv, None))
    row = gain.filter((pl.col("benchmark") == "MathVista_MINI") & (pl.col("condition") == CONDITION)
                      & (pl.col("mode") == MODE))
    assert row["gain_pp"][0] == pytest.approx(want, abs=0.005)
    if "n_paired" in row.columns:
        assert row["n_paired"][0] == n_paired
    mmvet_gain = gain.filter(pl.col("benchmark") == "MMVet")
    assert mmvet_gain.is_empty() or mmvet_gain["gain_pp"].is_null().all()  # nothing scored: no gain claimed
    if "missing_not_scored" in mmvet_gain.columns:
        assert mmvet_gain["missing_not_scored"].to_list() == [mmvet.height // 2] * mmvet_gain.height
    con = warehouse.connect(cfg.warehouse, read_only=True)
    try:
        acc = con.execute("SELECT value, n, note FROM metrics WHERE run_id = ? AND benchmark = 'MMVet' "
                          "AND metric = 'accuracy' AND condition = 'baseline'", [run_id]).fetchone()
    finally:
        con.close()
    assert acc == (None, 0, f"{mmvet.height // 2} unscored row(s) excluded")
