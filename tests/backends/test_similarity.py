"""Semantic fidelity (embed_sim): a tiny offline CLIP through EmbeddingSimilarity and generate_batch."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from g2u_tasks.benchmarks.loaders import load_benchmark
from g2u_tasks.config import ModelSpec, RunConfig
from g2u_tasks.thoughts.families import load_families
from g2u_tasks.thoughts.materialise import generate_batch, plan_thoughts
from g2u_tasks.backends.registry import get_similarity
from g2u_tasks.store.thought_store import ThoughtStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from tests.diffusers_dummies import clip_tokenizer

    torch.manual_seed(0)
    tok = clip_tokenizer()
    cfg = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    path = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(cfg).eval().save_pretrained(path)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=proc, tokenizer=tok).save_pretrained(path)
    return str(path)


def _img(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8))


def test_similarity_identical_and_different(tiny_clip):
    spec = ModelSpec(backend="transformers", model=tiny_clip, params={"device": "cpu"})
    sim = get_similarity(spec)
    a, b = _img(0), _img(1)
    same, diff = sim.similarity([a, a], [a.copy(), Image.new("RGB", (48, 40), (255, 0, 0))])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= diff < 1.0
    assert sim.similarity([], []) == []
    assert sim.similarity([a], [b])[0] < 1.0
    # one resident instance per spec, through the one registry
    assert get_similarity(spec.model_copy()) is sim and sim.backend.device == "cpu"
    with pytest.raises(ValueError, match="unknown similarity backend 'clip'"):
        get_similarity(spec.model_copy(update={"backend": "clip"}))


def test_generate_batch_fills_embed_sim(tmp_path, tiny_clip):
    cfg = RunConfig.model_validate({
        "benchmarks": [{"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 2}],
        "understander": {"backend": "transformers", "model": "m"}, "families": ["identity", "detail_enhancement"],
        "similarity_model": {"backend": "transformers", "model": tiny_clip, "params": {"device": "cpu"}},
    })
    items = load_benchmark("DemoShapes", cfg.benchmarks[0].source, limit=2)
    planned = plan_thoughts(items, load_families(cfg.families), cfg)
    store = ThoughtStore(f"file://{tmp_path}/store")
    rows = generate_batch(store, cfg.generator, planned, cfg.similarity_model).to_pylist()
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert all(r["embed_sim"] is not None and -1.0 <= r["embed_sim"] <= 1.0 for r in rows)
    for r in rows:
        if r["family"] == "identity":
            assert r["embed_sim"] == pytest.approx(1.0, abs=1e-5)
    # without a spec the column stays null
    plain = generate_batch(store, cfg.generator, planned[:1]).to_pylist()
    assert plain[0]["embed_sim"] is None


def test_similarity_model_changes_the_fingerprint():
    base = {"benchmarks": [{"name": "D", "source": "x.tsv"}], "understander": {"backend": "transformers", "model": "m"}}
    a = RunConfig.model_validate(base)
    b = RunConfig.model_validate({**base, "similarity_model": {"backend": "transformers", "model": "clip"}})
    assert a.fingerprint() != b.fingerprint()
