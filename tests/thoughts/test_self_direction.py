"""Self-directed imagination: the model picks the edit family and writes the instruction."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from g2u_tasks.thoughts import planning
from g2u_tasks.benchmarks.loaders import load_benchmark
from g2u_tasks.config import RunConfig
from g2u_tasks.thoughts.families import load_families
from g2u_tasks.backends.generators.reference import crop_zoom
from g2u_tasks.images import decode
from g2u_tasks.thoughts.materialise import plan_thoughts
from g2u_tasks.thoughts.planning import Plan, parse_plan
from g2u_tasks.thoughts.stage import generate_missing, self_directed_plans
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.understanding.understand import plan_understanding
from g2u_tasks.backends import registry
from tests.loopback_chat import ChatServer

REPO = Path(__file__).resolve().parents[2]
FAMILIES = load_families(["detail_enhancement", "context_expansion", "structural_visualisation", "identity"])
BENCH = {"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 4}
YESNO = {"name": "DemoYesNo", "source": str(REPO / "data/demo/DemoYesNo.tsv"), "limit": 1}


def _items():
    shapes = load_benchmark("DemoShapes", BENCH["source"], limit=4)
    return [*shapes, *load_benchmark("DemoYesNo", YESNO["source"], limit=1)]


# ---- parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize("text,family,instruction", [
    ('{"family": "detail_enhancement", "instruction": "Zoom in on the sign."}', "detail_enhancement",
     "Zoom in on the sign."),
    ('Sure! ```json\n{"Family": "Detail Enhancement", "Instruction": "zoom"}\n``` hope it helps', "detail_enhancement",
     "zoom"),
    ('{"plan": {"family": "CONTEXT-EXPANSION", "instruction": "outpaint left"}}', "context_expansion", "outpaint left"),
    ("{\u201cfamily\u201d: \u201cidentity\u201d, \u201cinstruction\u201d: \u201ckeep it\u201d}", "identity", "keep it"),
    ("family: structural visualisation\ninstruction: Draw the outlines.", "structural_visualisation",
     "Draw the outlines."),
    ("**Family**: detail_enhancement, **Instruction**: \"sharpen the text\"\n\nThanks", "detail_enhancement",
     "sharpen the text"),
    ('{"family": "sketch", "instruction": "x"} family: identity instruction: none needed', "identity", "none needed"),
    ('{"family": "detail_enhancement", "instruction": "a", "extra": [1, 2]} trailing {broken',
     "detail_enhancement", "a"),
    ("{'family': 'identity', 'instruction': 'as is'}", "identity", "as is"),  # not JSON: key/value text, never eval'd
    ('{"family": "<one name from the list>", "instruction": "<the edit instruction>"} {"family": "identity", '
     '"instruction": "keep"}', "identity", "keep"),  # an echoed example is skipped
])
def test_plans_parse_from_json_anywhere_or_key_value_text(text, family, instruction):
    assert parse_plan(text, FAMILIES) == (family, instruction, None)


@pytest.mark.parametrize("text,reason", [
    ("", "no JSON object"),
    ("I would zoom in.", "no JSON object"),
    ('{"family": "sketch", "instruction": "draw"}', "'sketch' is not one of"),
    ('{"family": "identity", "instruction": "   "}', "no edit instruction for family identity"),
    ('{"family": "identity"}', "no edit instruction"),
    ('{"family": 3, "instruction": "x"}', "3 is not one of"),
])
def test_unparseable_plans_fail_with_a_reason(text, reason):
    family, instruction, why = parse_plan(text, FAMILIES)
    assert family is None and instruction is None and reason in why


def test_planner_prompt_lists_the_families_with_descriptions():
    text = planning.planner_prompt(_items()[0], FAMILIES)
    assert "- detail_enhancement: Zoom into the region that matters" in text
    assert "- identity: Control condition" in text and "Which shape is shown?" in text
    assert '{"family": "<one name from the list>"' in text


# ---- keys -----------------------------------------------------------------------------------
def _cfg(**kw) -> RunConfig:
    base = {"benchmarks": [BENCH, YESNO], "families": [f.name for f in FAMILIES], "seeds": [0],
            "understander": {"backend": "transformers", "model": "m", "params": {"max_new_tokens": 4}}}
    return RunConfig.model_validate({**base, **kw})


def test_self_keys_never_collide_with_template_keys():
    items = _items()[:2]
    template = plan_thoughts(items, FAMILIES, _cfg())
    cfg = _cfg(prompt_source="self", seeds=[0, 1])
    jobs = planning.plan_jobs(items, FAMILIES, cfg)
    assert len({j.plan_id for j in jobs}) == 4  # one plan per item x seed
    fam = FAMILIES[0]  # the model chooses exactly what the template would have written
    plans = {j.plan_id: Plan(j.plan_id, "ok", fam.name, fam.render(j.item), "raw") for j in jobs}
    selfs = plan_thoughts(items, FAMILIES, cfg, plans)
    assert [p.spec.family for p in selfs] == ["self"] * 4 and {p.spec.chosen_family for p in selfs} == {fam.name}
    assert {p.spec.thought_id for p in selfs}.isdisjoint({p.spec.thought_id for p in template})
    assert len({p.spec.thought_id for p in selfs}) == 4
    # a different planner is a different plan; the understander's answer budget does not leak in
    planner = _cfg(prompt_source="planner", planner={"backend": "openai", "model": "x", "params": {"base_url": "u"}})
    assert {j.plan_id for j in planning.plan_jobs(items, FAMILIES, planner)}.isdisjoint({j.plan_id for j in jobs})
    # without a recorded plan an item x seed is a placeholder that is never generated
    missing = plan_thoughts(items, FAMILIES, cfg, {})
    assert all(p.plan.status == "missing" and not p.recordable for p in missing)


def test_planner_config_is_required_and_self_uses_the_understander():
    with pytest.raises(ValueError, match="needs a `planner`"):
        _cfg(prompt_source="planner")
    spec = planning.planner_spec(_cfg(prompt_source="self", plan_max_new_tokens=40))
    assert (spec.backend, spec.model, spec.params["max_new_tokens"]) == ("transformers", "m", 40)


# ---- self path with the tiny random understander: parse failures recorded -------------------------
def test_self_with_the_tiny_model_records_parse_failures(tiny_llava, tmp_path, monkeypatch):
    registry.clear()
    cfg = _cfg(prompt_source="self", seeds=[0, 1], plan_max_new_tokens=12,
               understander={"backend": "transformers", "model": str(tiny_llava), "params": {"max_new_tokens": 2}})
    store = ThoughtStore(f"file://{tmp_path}/store")
    items = _items()
    plans = self_directed_plans(cfg, store, items, FAMILIES)
    assert len(plans) == 10 and {p.decoding for p in plans.values()} == {"greedy"}
    planned = plan_thoughts(items, FAMILIES, cfg, plans)
    out = generate_missing(store, cfg.generator, planned, batch_size=4)
    n_failed = out["plans_parse_failed"]
    assert out["plans_ok"] + n_failed == 10 and out["failed"] == n_failed and out["generated"] == out["plans_ok"]
    rows = store.manifest().filter(pl.col("plan_status") == "parse_failed")
    assert rows.height == n_failed > 0
    assert set(rows["status"]) == {"failed"} and rows["blob_uri"].null_count() == n_failed
    assert all("plan parse failed" in e for e in rows["error"]) and rows["plan_raw"].null_count() == 0
    assert set(rows["family"]) == {"self"} and set(rows["prompt_source"]) == {"self"}
    # greedy decoding: the choice is the same for every seed
    by_item = rows.group_by("benchmark", "item_id").agg(pl.col("plan_raw").n_unique())
    assert set(by_item["plan_raw"]) == {1}

    # reruns reuse the recorded plans: no model call, nothing new committed
    def no_call(*a, **k):
        raise AssertionError("planner called again")

    monkeypatch.setattr(planning, "plan_batch", no_call)
    version = store.version()
    again = plan_thoughts(items, FAMILIES, cfg, self_directed_plans(cfg, store, items, FAMILIES))
    assert generate_missing(store, cfg.generator, again, batch_size=4)["failed"] == 0 and store.version() == version

    # the understanding pass quarantines the item x seed with the recorded reason
    tasks, missing = plan_understanding(items, again, ["baseline", "concat"], store.manifest(), "r")
    assert len(missing) == n_failed and all("no usable self thought" in m["reason"] for m in missing)
    assert all("plan parse failed" in m["reason"] for m in missing)
    assert sum(t.condition == "baseline" for t in tasks) == len(items)
    registry.clear()


# ---- planner path against a local OpenAI-compatible server ------------------------------------------
ANSWERS = {  # question fragment -> the planner's reply (several formats)
    "How many": '{"family": "Detail Enhancement", "instruction": "Zoom in on the circles."}',
    "colour": 'Here you go:\n```json\n{"family": "structural-visualisation", "instruction": "Outline the shapes."}'
              '\n```',
    "Which shape": "family: context_expansion\ninstruction: Show more of the scene around the shape.",
}


def _plan_reply(body: dict) -> str:
    question = body["messages"][0]["content"][-1]["text"].split("Question:\n", 1)[1]
    return next((a for k, a in ANSWERS.items() if k in question), "I cannot decide.")


@pytest.fixture
def planner():
    server = ChatServer(_plan_reply)
    yield server
    server.close()


def test_planner_endpoint_chooses_families_per_seed(planner, tmp_path, monkeypatch):
    monkeypatch.delenv("G2U_TEST_PLANNER_KEY", raising=False)
    registry.clear()
    params = {"base_url": planner.base_url, "api_key_env": "G2U_TEST_PLANNER_KEY", "backoff_s": 0.01, "timeout_s": 5}
    cfg = _cfg(prompt_source="planner", seeds=[0, 1], planner={"backend": "openai", "model": "gpt-x", "params": params})
    store = ThoughtStore(f"file://{tmp_path}/store")
    items = _items()
    plans = self_directed_plans(cfg, store, items, FAMILIES)
    assert len(planner.requests) == 10  # one call per item x seed
    body = planner.requests[0]
    assert body["model"] == "gpt-x" and body["max_tokens"] == cfg.plan_max_new_tokens
    assert body["messages"][0]["content"][0]["type"] == "image_url"  # the planner sees the image
    chosen = {(j.item.item_id, j.item.benchmark, j.seed): plans[j.plan_id].family
              for j in planning.plan_jobs(items, FAMILIES, cfg)}
    expected = {"0": "context_expansion", "1": "structural_visualisation", "2": "detail_enhancement",
                "3": "context_expansion"}
    for (item_id, bench, seed), fam in chosen.items():
        assert fam == (expected[item_id] if bench == "DemoShapes" else None)
    assert {p.decoding for p in plans.values()} == {"greedy"}
    assert {p.planner for p in plans.values()} == {"openai:gpt-x"}

    planned = plan_thoughts(items, FAMILIES, cfg, plans)
    out = generate_missing(store, cfg.generator, planned, batch_size=3)
    assert (out["generated"], out["failed"], out["plans_ok"], out["plans_parse_failed"]) == (8, 2, 8, 2)
    m = store.manifest()
    ok = m.filter(pl.col("status") == "ok")
    assert set(ok["family"]) == {"planner"} and set(ok["prompt_source"]) == {"planner"}
    assert set(ok["plan_status"]) == {"ok"} and set(ok["plan_decoding"]) == {"greedy"}
    row = ok.filter((pl.col("item_id") == "2") & (pl.col("seed") == 0)).row(0, named=True)
    assert row["chosen_family"] == "detail_enhancement" and row["prompt"] == "Zoom in on the circles."
    assert "Detail Enhancement" in row["plan_raw"] and row["psnr_gated"] is not None
    src = decode(items[2].images[-1])
    assert decode(store.read_blob(row["blob_uri"])).tobytes() == crop_zoom(src, keep=0.6, sharpen_percent=150).tobytes()
    failed = m.filter(pl.col("status") == "failed")
    assert set(failed["item_id"]) == {"0"} and set(failed["benchmark"]) == {"DemoYesNo"}
    assert set(failed["plan_status"]) == {"parse_failed"} and set(failed["plan_raw"]) == {"I cannot decide."}

    # the understanding pass: condition 'planner', the instruction travels with the task, no new calls
    recorded, todo = planning.split_recorded(m, items, FAMILIES, cfg)
    assert todo == [] and len(recorded) == 10
    tasks, missing = plan_understanding(items, plan_thoughts(items, FAMILIES, cfg, recorded),
                                        ["baseline", "replace_gated", "concat_conversation"], m, "r")
    edit = [t for t in tasks if t.mode != "baseline"]
    assert len(edit) == 8 * 2 and {t.condition for t in edit} == {"planner"}
    assert {t.instruction for t in edit if t.item.item_id == "2"} == {"Zoom in on the circles."}
    assert len(missing) == 2 and all("plan parse failed" in q["reason"] for q in missing)
    assert len(planner.requests) == 10
    registry.clear()


# ---- schema evolution: manifests written before the plan columns existed ---------------------------
def test_store_evolves_an_older_manifest(tmp_path):
    import pyarrow as pa
    from deltalake import write_deltalake

    from g2u_tasks.thoughts.materialise import generate_batch
    from g2u_tasks.records import THOUGHTS_SCHEMA

    store = ThoughtStore(f"file://{tmp_path}/store")
    cfg = _cfg(families=["identity"])
    items = _items()[:2]
    rows = generate_batch(store, cfg.generator, plan_thoughts(items, load_families(["identity"]), cfg))
    added = ["chosen_family", "plan_status", "plan_raw", "plan_id", "planner", "plan_decoding", "psnr_gated"]
    old = rows.select([n for n in THOUGHTS_SCHEMA.names if n not in added])
    write_deltalake(store.manifest_uri, old.slice(0, 1), mode="error")  # a table as an older release wrote it
    v0 = store.manifest(0)
    assert v0.columns == THOUGHTS_SCHEMA.names and v0["plan_status"].null_count() == 1
    assert v0["chosen_family"].to_list() == ["identity"]  # template rows: chosen_family = family
    plans = {j.plan_id: Plan(j.plan_id, "parse_failed", raw="??", reason="no JSON")
             for j in planning.plan_jobs(items, FAMILIES, _cfg(prompt_source="self"))}
    failed = generate_batch(store, cfg.generator, plan_thoughts(items, FAMILIES, _cfg(prompt_source="self"), plans))
    assert store.commit(pa.concat_tables([rows.slice(1), failed])) == 1
    m = store.manifest()
    assert m.height == 4 and set(m["plan_status"].drop_nulls()) == {"parse_failed"}
    assert m.filter(pl.col("prompt_source") == "template")["psnr_gated"].null_count() == 1  # the old row
    assert store.manifest(0).height == 1
