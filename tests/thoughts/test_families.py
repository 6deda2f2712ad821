from pathlib import Path

import pytest

from g2u_tasks.thoughts.families import BUILTINS, CONTROLS, IDENTITY, load_families, load_family
from g2u_tasks.records import Item


def _item(**kw):
    base = dict(benchmark="B", item_id="1", question="What colour is the cube?", options={"A": "red", "B": "blue"},
                answer="A", category="c", question_type="mcq", image_sha256="0" * 64, images=(b"x",))
    base.update(kw)
    return Item(**base)


def test_builtins_load_with_distinct_versions():
    fams = load_families(list(BUILTINS))
    assert [f.name for f in fams] == list(BUILTINS)
    assert len({f.version for f in fams}) == len(BUILTINS)
    assert all(len(f.version) == 8 for f in fams)


def test_controls_are_built_in_and_only_identity_skips_the_generator():
    assert set(CONTROLS) == {"identity", "reconstruction"} <= set(BUILTINS)
    assert [f.name for f in load_families(list(BUILTINS)) if not f.calls_generator] == [IDENTITY]
    recon = load_family("reconstruction")
    assert recon.reference == {"op": "identity", "params": {}}  # the reference generator reproduces exactly
    assert "{" not in recon.render(_item()) and "Reproduce" in recon.render(_item())


def test_render_fills_question_and_options():
    text = load_family("detail_enhancement").render(_item())
    assert "What colour is the cube?" in text and "A. red" in text and "B. blue" in text
    assert "{" not in text


def test_version_follows_template_text(tmp_path: Path):
    (tmp_path / "detail_enhancement.yaml").write_text("name: detail_enhancement\ntemplate: 'Zoom: {question}'\n")
    custom = load_family("detail_enhancement", tmp_path)
    assert custom.version != load_family("detail_enhancement").version  # a local file shadows the built-in
    assert custom.render(_item()) == "Zoom: What colour is the cube?"


def test_errors_name_the_family(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown edit family 'nope'.*identity"):
        load_family("nope")
    (tmp_path / "bad.yaml").write_text("name: bad\ntemplate: '{colour}'\n")
    with pytest.raises(ValueError, match="bad.yaml: family bad: .*colour"):  # refused when loaded
        load_family("bad", tmp_path)
    (tmp_path / "half.yaml").write_text("name: half\n")
    with pytest.raises(ValueError, match="half.yaml: missing keys \\['template'\\]"):
        load_family("half", tmp_path)
