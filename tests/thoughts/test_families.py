from pathlib import Path

import pytest

from g2u_tasks.thoughts.families import BUILTINS, load_families, load_family
from g2u_tasks.records import Item


def _item(**kw):
    base = dict(benchmark="B", item_id="1", question="What colour is the cube?", options={"A": "red", "B": "blue"},
                answer="A", category="c", question_type="mcq", image_sha256="0" * 64, images=(b"x",))
    base.update(kw)
    return Item(**base)


def test_builtins_load_with_distinct_versions():
    fams = load_families(list(BUILTINS))
    assert [f.name for f in fams] == list(BUILTINS)
    assert len({f.version for f in fams}) == 4
    assert all(len(f.version) == 8 for f in fams)


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
    with pytest.raises(ValueError, match="family bad: .*colour"):
        load_family("bad", tmp_path).render(_item())
    (tmp_path / "half.yaml").write_text("name: half\n")
    with pytest.raises(ValueError, match="half.yaml: missing keys \\['template'\\]"):
        load_family("half", tmp_path)
