import pytest
from PIL import Image

from g2u_tasks.config import load_config
from g2u_tasks.thoughts.families import load_family
from g2u_tasks.understanding.prompts import build_prompt, question_text
from g2u_tasks.records import Item


def _item(**kw):
    base = dict(benchmark="B", item_id="1", question="Which shape?", options={"A": "circle", "B": "square"},
                answer="A", category=None, question_type="mcq", image_sha256="0" * 64, images=(b"x",), hint="Look")
    base.update(kw)
    return Item(**base)


def test_mcq_text_follows_vlmevalkit_template():
    assert question_text(_item()) == (
        "Hint: Look\nQuestion: Which shape?\nOptions:\nA. circle\nB. square\n"
        "Please select the correct answer from the options above. \n"
    )
    yn = _item(question="Is it red? Please answer yes or no.", options={}, question_type="yes_no", hint=None)
    assert question_text(yn) == "Is it red? Please answer yes or no."


def test_modes_place_the_thought():
    a, b, t = (Image.new("RGB", (4, 4), c) for c in ("red", "green", "blue"))
    fam = load_family("detail_enhancement")
    imgs, _ = build_prompt(_item(), [a, b], "baseline")
    assert imgs == [a, b]
    imgs, text = build_prompt(_item(), [a, b], "concat", t, fam)
    assert imgs == [a, b, t] and text.startswith("The last image is a visual thought")
    imgs, _ = build_prompt(_item(), [a, b], "replace", t, fam)
    assert imgs == [a, t]  # the thought stands in for the edited (last) image
    with pytest.raises(ValueError, match="B/1: mode concat needs a thought"):
        build_prompt(_item(), [a], "concat")


def test_config_overrides_and_errors(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(
        "benchmarks: [{name: X, source: x.tsv}]\nunderstander: {backend: transformers, model: m}\n"
    )
    cfg = load_config(cfg_path, ["seeds=[0, 1]", "understander.params.max_new_tokens=4", "benchmarks.0.limit=3"])
    assert cfg.seeds == [0, 1] and cfg.understander.params == {"max_new_tokens": 4} and cfg.benchmarks[0].limit == 3
    assert cfg.store == "file://.g2u/store"
    assert cfg.fingerprint() != load_config(cfg_path).fingerprint()
    with pytest.raises(ValueError, match="mode"):
        load_config(cfg_path, ["modes=[baseline, sideways]"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(cfg_path, ["seeds"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_example_configs_validate():
    from pathlib import Path

    examples = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
    assert len(examples) >= 5
    for path in examples:
        cfg = load_config(path)
        assert cfg.benchmarks and cfg.understander.backend in {"transformers", "openai", "bagel", "janus"}, path
