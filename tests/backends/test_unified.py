"""Unified backends: a tiny random-weight Janus built offline (BAGEL: test_tiny_bagel.py)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from g2u_tasks.config import ModelSpec
from g2u_tasks.thoughts.families import load_family
from g2u_tasks.backends.generators import GenerateRequest, get_generator
from g2u_tasks.backends.tiny_models import MODEL_CARD
from g2u_tasks.backends.understanders import UnderstandRequest, get_understander
from g2u_tasks.backends.common import fit_to_size
from g2u_tasks.backends.unified import get_unified

# ---------- tiny Janus (real architecture, random weights) ----------

JANUS_TOKENS = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}
JANUS_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image_placeholder>\n"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
CORPUS = [
    "User: Assistant: Answer with the letter of the correct option. A B C D yes no",
    "Zoom in on the red circle and show more detail. Expand the scene beyond the borders.",
    "How many objects are there? 0 1 2 3 4 5. What color is the car? red green blue.",
]
IMAGE_SIZE, PATCH = 32, 8  # 16 understanding tokens; VQ grid 4x4 -> 16 image tokens -> 32x32 pixels


def _janus_tokenizer():
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    special = ["<s>", "</s>", "<unk>", "<pad>", *JANUS_TOKENS.values()]
    tok = Tokenizer(BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=320, special_tokens=special, show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens=JANUS_TOKENS, padding_side="left")


def build_tiny_janus(path):
    from transformers import (GenerationConfig, JanusConfig, JanusForConditionalGeneration, JanusImageProcessorPil,
                              JanusProcessor, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig)

    tok = _janus_tokenizer()
    n_tokens = (IMAGE_SIZE // PATCH) ** 2
    processor = JanusProcessor(
        image_processor=JanusImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                               image_mean=[0.5] * 3, image_std=[0.5] * 3),
        tokenizer=tok, chat_template=JANUS_TEMPLATE, num_image_tokens=n_tokens)
    hidden = 64
    text = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2.0,
                               image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=hidden,
                               num_image_tokens=n_tokens)
    vq = JanusVQVAEConfig(embed_dim=8, num_embeddings=64, latent_channels=32, base_channels=32,
                          channel_multiplier=[1, 1, 1, 1], num_res_blocks=1, projection_dim=hidden,
                          image_token_embed_dim=hidden)
    config = JanusConfig(text_config=text, vision_config=vision, vq_config=vq,
                         image_token_id=tok.convert_tokens_to_ids(JANUS_TOKENS["image_token"]))
    torch.manual_seed(0)
    model = JanusForConditionalGeneration(config).eval()
    with torch.no_grad():  # default init (std 0.02) gives near-flat logits; make the inputs matter
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not name.startswith("model.vqmodel."):
                p.normal_(0.0, 0.3)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        guidance_scale=5.0, temperature=1.0,
        generation_kwargs={"boi_token_id": tok.convert_tokens_to_ids(JANUS_TOKENS["boi_token"])})
    model.save_pretrained(path)
    processor.save_pretrained(path)
    (path / MODEL_CARD).write_text(json.dumps({"random_weights": True, "architecture": "janus"}))
    return path


@pytest.fixture(scope="module")
def tiny_janus(tmp_path_factory):
    return str(build_tiny_janus(tmp_path_factory.mktemp("models") / "tiny-janus"))


def _scene(w, h, colour=(220, 30, 30)):
    img = Image.new("RGB", (w, h), (200, 220, 240))
    d = ImageDraw.Draw(img)
    d.ellipse((w // 4, h // 4, w // 2, h // 2), fill=colour)
    d.rectangle((2, 2, w // 5, h // 6), fill=(20, 120, 20))
    return img


def _req(img, seed=0, prompt="Zoom in on the red circle and show more detail."):
    return GenerateRequest(img, prompt, seed, load_family("detail_enhancement"))


def _same(a, b):
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_janus_processor_runs_without_torchvision(tiny_janus):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_janus)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        assert type(proc.image_processor).__name__ == "JanusImageProcessorPil"


def test_janus_answers_batch_deterministically(tiny_janus):
    und = get_understander(ModelSpec(backend="janus", model=tiny_janus, params={"max_new_tokens": 4, "batch_size": 2}))
    batch = [
        UnderstandRequest([_scene(96, 64)], "How many objects are there?"),
        UnderstandRequest([_scene(96, 64), _scene(40, 80)], "What color is the car? A B C D"),
        UnderstandRequest([_scene(50, 50)], "Answer yes or no."),
    ]
    first = und.answer(batch)
    assert len(first) == 3 and all(isinstance(a, str) for a in first)
    assert und.answer(batch) == first
    assert und.name == f"janus:{tiny_janus}" and "random weights" in und.notes


def test_janus_generates_source_aspect_deterministic_per_seed(tiny_janus):
    gen = get_generator(ModelSpec(backend="janus", model=tiny_janus, params={"batch_size": 3}))
    wide, tall = _scene(96, 64), _scene(40, 80)
    out = gen.generate([_req(wide, 0), _req(tall, 0), _req(wide, 1)])
    assert [o.size for o in out] == [(96, 64), (40, 80), (96, 64)]
    assert all(o.mode == "RGB" for o in out)
    again = gen.generate([_req(wide, 0)])[0]  # alone, not in a batch: same seed, same image
    assert _same(again, out[0])
    assert not _same(out[0], out[2])  # another seed, another image


def test_janus_sampling_matches_transformers_text_to_image(tiny_janus):
    gen = get_generator(ModelSpec(backend="janus", model=tiny_janus, params={"temperature": 0, "cfg_weight": 5.0}))
    texts = [gen._chat(0, "Zoom in on the red circle and show more detail."), gen._chat(0, "yes")]
    inputs = gen.processor(text=texts, padding=True, return_tensors="pt", generation_mode="image")
    ours = gen._sample_image_tokens(inputs, [0, 0])
    theirs = gen.model.generate(**inputs, generation_mode="image", do_sample=False, guidance_scale=5.0)
    assert torch.equal(ours, theirs)  # same CFG recipe, left-padded batch included (greedy)


def test_janus_source_image_only_conditions_when_in_context(tiny_janus):
    red, blue = _scene(64, 64, (220, 30, 30)), _scene(64, 64, (30, 30, 220))
    text_only = get_generator(ModelSpec(backend="janus", model=tiny_janus))
    a, b = text_only.generate([_req(red, 3), _req(blue, 3)])
    assert _same(a, b)  # text-to-image: the source's pixels play no part
    in_context = get_generator(ModelSpec(backend="janus", model=tiny_janus, params={"source_in_context": True}))
    c, d = in_context.generate([_req(red, 3), _req(blue, 3)])
    assert not _same(c, d)  # source as understanding tokens changes the sampled image


def test_one_resident_janus_serves_both_roles(tiny_janus):
    gen = get_generator(ModelSpec(backend="janus", model=tiny_janus, params={"cfg_weight": 3.0}))
    und = get_understander(ModelSpec(backend="janus", model=tiny_janus, params={"max_new_tokens": 2}))
    assert gen is not und and gen.resident is und.resident and gen.model is und.model
    assert gen.lock is und.lock  # one model, one lock: the two roles never run it at once
    other = get_generator(ModelSpec(backend="janus", model=tiny_janus, params={"dtype": "bfloat16"}))
    assert other.resident is not gen.resident and other.lock is not gen.lock  # a load param differs


def test_get_unified_keys_on_load_params_only():
    calls = []

    def loader(spec):
        calls.append(spec.params)
        return object()

    base = {"backend": "x", "model": "m"}
    a = get_unified(ModelSpec(**base, params={"dtype": "fp16", "max_new_tokens": 3}), loader)
    b = get_unified(ModelSpec(**base, params={"dtype": "fp16", "cfg_weight": 2}), loader)
    c = get_unified(ModelSpec(**base, params={"dtype": "fp32"}), loader)
    assert a is b and a is not c
    assert calls == [{"dtype": "fp16"}, {"dtype": "fp32"}]  # the loader never sees role params


def test_fit_to_size_modes():
    sq = Image.new("RGB", (32, 32), (255, 0, 0))
    for mode in ("crop", "pad", "stretch"):
        assert fit_to_size(sq, (96, 64), mode).size == (96, 64)
    padded = np.asarray(fit_to_size(sq, (96, 64), "pad"))
    assert padded[32, 0].tolist() == [0, 0, 0] and padded[32, 48].tolist() == [255, 0, 0]
    with pytest.raises(ValueError, match="fit mode"):
        fit_to_size(sq, (96, 64), "zoom")
