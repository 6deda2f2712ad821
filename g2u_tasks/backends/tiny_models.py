"""Tiny offline models of real architectures (random weights) for tests and smoke runs.

Each builder saves model + processor (tiny byte-level BPE, 64 px images, 2-layer towers) loadable through
AutoModelForImageTextToText + AutoProcessor: LLaVA, Idefics3 (SmolVLM-style) and Gemma 3 build anywhere;
Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision and InternVL need torchvision (their processors hold a video processor).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable

MODEL_CARD = "g2u_model_card.json"

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>", IMAGE_TOKEN]

# Vision tower geometry: (64 / 16) ** 2 = 16 patches (+1 CLS, dropped by the "default" strategy).
IMAGE_SIZE = 64
PATCH_SIZE = 16
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2

# LLaVA-1.5 style: "USER: <image>\n<image>\nquestion ASSISTANT:". Content may be a string or typed parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% set c = message['content'] %}"
    "{% if c is not string %}"
    "{% set c = c | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') %}"
    "{% endif %}"
    "{{ c + '\n' }}"
    "{% else %}"
    "{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{{ message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
    "{% endif %}"
    "{{ ' ' if message['role'] != 'assistant' else '</s>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Small corpus for the byte-level BPE: answers (A-D, yes/no, digits) plus everyday English.
_CORPUS = """
USER: ASSISTANT: Answer with the letter of the correct option. A B C D A. B. C. D. (A) (B) (C) (D)
Answer yes or no. Yes yes No no. Is there a cat in the image? Yes. Is the sky blue? No.
How many objects are there? 0 1 2 3 4 5 6 7 8 9 10 11 12 20 42 100 1000 zero one two three four five
six seven eight nine ten. What color is the car? red green blue yellow black white orange purple brown gray.
The picture shows a person standing next to a small dog on a sunny day in the park near the river.
Look at the image carefully and describe what you see. Which option best describes the scene?
The first image shows the original photo and the second image shows a detailed close up view.
There are two people sitting at a table with a cup of coffee, a plate of food and a book.
A diagram of the process with arrows, boxes, labels, a chart, a map, a graph and a table of numbers.
Left right top bottom above below behind in front of inside outside between near far large small.
Count the number of apples, bananas, cars, birds, chairs, windows, trees, houses and boats.
Question: what is the main object? Options: A. a cat B. a dog C. a bird D. a horse. Answer: B
The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat by the door.
Please think step by step, then give the final answer as a single word or number.
It is a photo of a city street at night with lights, signs, cars, buses and people walking.
"""


def _build_tokenizer(
    special_tokens: list[str] = SPECIAL_TOKENS,
    bos: str | None = "<s>",
    eos: str = "</s>",
    pad: str = "<pad>",
    unk: str | None = "<unk>",
    extra: dict[str, str] | None = None,
    padding_side: str = "left",
):
    """Tiny byte-level BPE in a PreTrainedTokenizerFast; prepends `bos` (as Llama/Gemma do) when given."""
    from tokenizers import decoders, pre_tokenizers, processors
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(BPE(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=512,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.split("\n"), trainer=trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        pad_token=pad,
        extra_special_tokens=extra if extra is not None else {"image_token": IMAGE_TOKEN},
        padding_side=padding_side,
        model_max_length=2048,
    )


def _build_processor():
    from transformers import LlavaProcessor

    image_processor = _image_processor(
        "CLIPImageProcessor", size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=_build_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


def _build_model(tokenizer):
    import torch
    from transformers import (
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image_token_id,
        vision_feature_select_strategy="default", vision_feature_layer=-2,
        image_seq_length=NUM_IMAGE_TOKENS, projector_hidden_act="gelu",
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Random weights: keep placeholder/pad ids out of generated text.
        suppress_tokens=[image_token_id, tokenizer.pad_token_id],
    )
    return model


def _check_image_tokens(processor, model) -> None:
    """The processor must expand <image> to exactly as many tokens as the vision tower yields."""
    from PIL import Image

    text = f"USER: {IMAGE_TOKEN}\nhi ASSISTANT:"
    enc = processor(text=[text], images=[Image.new("RGB", (80, 48))], return_tensors="pt")
    n = int((enc["input_ids"] == model.config.image_token_id).sum())
    vc = model.config.vision_config
    patches = (vc.image_size // vc.patch_size) ** 2
    if not (n == patches == model.config.image_seq_length):
        seq = model.config.image_seq_length
        raise RuntimeError(f"image tokens mismatch: processor {n}, patches {patches}, config {seq}")


def _save_atomic(path: str | Path, model, processor, architecture: str) -> Path:
    """Save model + processor + model card at `path` via a temp dir and one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the model dir is a normal shared dir
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        card = {"random_weights": True, "architecture": architecture, "built_by": "g2u_tasks.backends.tiny_models"}
        (tmp / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")
        try:
            tmp.rename(path)
        except OSError:
            if not path.exists():  # a concurrent builder winning the race is fine
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def build_tiny_llava(path: str | Path) -> Path:
    """Build a tiny random-weight LLaVA (CLIP + Llama) with processor at `path`, atomically."""
    processor = _build_processor()
    model = _build_model(processor.tokenizer)
    _check_image_tokens(processor, model)
    return _save_atomic(path, model, processor, "llava")


# ---- Other image-text-to-text architectures (same tiny BPE, 64 px images, 2-layer towers) ----


def _chat_template(turn_start: str, image: str, turn_end: str, generation: str, bos: bool = False) -> str:
    """Multi-image chat template: parts in order, images as `image`; `turn_start` may use the Jinja var `role`."""
    return (
        ("{{ bos_token }}" if bos else "")
        + "{% for message in messages %}{% set role = message['role'] %}" + turn_start
        + "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        + "{% for part in message['content'] %}"
        + "{% if part['type'] == 'image' %}" + image
        + "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        + turn_end + "{% endfor %}"
        + "{% if add_generation_prompt %}" + generation + "{% endif %}"
    )


_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
_QWEN_MEDIA = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def _qwen_tokenizer(marks: dict[str, str] = _QWEN_MEDIA):
    """Qwen-style tokenizer: no BOS, eos <|im_end|>, pad <|endoftext|>; `marks` name the media tokens."""
    specials = _QWEN_SPECIALS + list(marks.values())
    return _build_tokenizer(specials, bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk=None, extra=marks)


def _qwen_template(image: str) -> str:
    return _chat_template("<|im_start|>{{ role }}\n", image, "<|im_end|>\n", "<|im_start|>assistant\n")


def _qwen_ids(tok) -> dict[str, int]:
    return {
        "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
    }


def _image_processor(name: str, **kwargs):
    """The PIL variant of a transformers image processor when it exists (needs no torchvision)."""
    import transformers

    cls = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
    return cls(**kwargs)


def _video_processor(name: str, **kwargs):
    """A transformers video processor (these need torchvision)."""
    import transformers

    return getattr(transformers, name)(**kwargs)


def _small_text(kind: str, tokenizer, **kwargs):
    """A 2-layer text config (hidden 64, 4 heads of 16) of `kind` ("llama", "qwen2", "gemma3_text", ...)."""
    from transformers import AutoConfig

    ids = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    base = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
    )
    return AutoConfig.for_model(kind, **{**base, **ids, **kwargs})


def _finish(model, processor):
    """Eval mode, a generation config that emits no special token but EOS, and a smoke forward."""
    from transformers import GenerationConfig

    model.eval()
    tok = processor.tokenizer
    suppress = sorted(i for i in tok.added_tokens_decoder if i != tok.eos_token_id)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        suppress_tokens=suppress,  # random weights: keep placeholders out of generated text
    )
    _smoke_forward(processor, model)
    return model


def _smoke_forward(processor, model) -> None:
    """One batched forward of a 2-image and a 1-image prompt: fails fast on token/feature mismatches."""
    import torch
    from PIL import Image

    def prompt(n: int) -> str:
        content = [{"type": "image"}] * n + [{"type": "text", "text": "Yes?"}]
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    images = [[Image.new("RGB", (80, 48)), Image.new("RGB", (40, 90))], [Image.new("RGB", (64, 64))]]
    enc = processor(text=[prompt(2), prompt(1)], images=images, padding=True, return_tensors="pt")
    with torch.inference_mode():
        model(**enc)


def _seeded(cls, config):
    import torch

    torch.manual_seed(0)
    return cls(config)


def build_tiny_idefics3(path: str | Path) -> Path:
    """Tiny Idefics3 (SmolVLM-style: SigLIP-like tower, pixel shuffle, Llama text, image splitting)."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, Idefics3VisionConfig

    rows = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    specials = ["<|begin_of_text|>", "<end_of_utterance>", "<unk>", "<pad>", IMAGE_TOKEN,
                "<fake_token_around_image>", "<global-img>", *rows]
    # Saved right-padded like many hub tokenizers: the backend must left-pad by itself.
    tok = _build_tokenizer(specials, bos="<|begin_of_text|>", eos="<end_of_utterance>", padding_side="right")
    image_processor = _image_processor(
        "Idefics3ImageProcessor", size={"longest_edge": 2 * IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE}, do_image_splitting=True,
    )
    template = _chat_template("{{ role | capitalize }}:", IMAGE_TOKEN, "<end_of_utterance>\n", "Assistant:")
    # (64 / 16)^2 = 16 patches, pixel shuffle by 2 -> 4 tokens per tile.
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_len=4, chat_template=template
    )
    vision = Idefics3VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
    )
    config = Idefics3Config(
        vision_config=vision, text_config=_small_text("llama", tok), scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN), pad_token_id=tok.pad_token_id,
    )
    model = _finish(_seeded(Idefics3ForConditionalGeneration, config), processor)
    return _save_atomic(path, model, processor, "idefics3")


def build_tiny_gemma3(path: str | Path) -> Path:
    """Tiny Gemma 3 (SigLIP tower, 4x4 pooled soft tokens, Gemma 3 text with sliding-window layers)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, SiglipVisionConfig

    images = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    specials = ["<bos>", "<eos>", "<unk>", "<pad>", "<start_of_turn>", "<end_of_turn>", *images.values()]
    tok = _build_tokenizer(specials, bos="<bos>", eos="<end_of_turn>", extra=images, padding_side="right")
    template = _chat_template(
        "<start_of_turn>{{ 'model' if role == 'assistant' else role }}\n", "<start_of_image>",
        "<end_of_turn>\n", "<start_of_turn>model\n", bos=True,
    )
    image_processor = _image_processor("Gemma3ImageProcessor", size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_length=16, chat_template=template
    )
    # 64 px / 8 px patches = 8x8 patches, avg-pooled to 4x4 = 16 soft tokens per image.
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE_SIZE,
        patch_size=8,
    )
    text = _small_text("gemma3_text", tok, sliding_window=512)
    config = Gemma3Config(
        vision_config=vision, text_config=text, mm_tokens_per_image=16,
        boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id, image_token_index=tok.image_token_id,
    )
    model = _finish(_seeded(Gemma3ForConditionalGeneration, config), processor)
    return _save_atomic(path, model, processor, "gemma3")


def build_tiny_qwen2_5_vl(path: str | Path) -> Path:
    """Tiny Qwen2.5-VL (window-attention ViT, 14 px patches merged 2x2, M-RoPE text). Needs torchvision."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tok = _qwen_tokenizer()
    pixels = {"shortest_edge": 4 * 28 * 28, "longest_edge": 16 * 28 * 28}  # 4..16 image tokens
    processor = Qwen2_5_VLProcessor(
        image_processor=_image_processor("Qwen2VLImageProcessor", size=pixels, patch_size=14, merge_size=2),
        video_processor=_video_processor("Qwen2VLVideoProcessor", size=pixels, patch_size=14, merge_size=2),
        tokenizer=tok, chat_template=_qwen_template(_QWEN_IMAGE),
    )
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
        spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
    )
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]}  # sums to head_dim / 2
    text = _small_text("qwen2_5_vl_text", tok, rope_parameters=rope)
    config = Qwen2_5_VLConfig(vision_config=vision, text_config=text.to_dict(), **_qwen_ids(tok))
    model = _finish(_seeded(Qwen2_5_VLForConditionalGeneration, config), processor)
    return _save_atomic(path, model, processor, "qwen2_5_vl")


def build_tiny_qwen3_vl(path: str | Path) -> Path:
    """Tiny Qwen3-VL (16 px patches merged 2x2, DeepStack, interleaved M-RoPE). Needs torchvision."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    tok = _qwen_tokenizer()
    pixels = {"shortest_edge": 4 * 32 * 32, "longest_edge": 16 * 32 * 32}
    half = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    processor = Qwen3VLProcessor(
        image_processor=_image_processor("Qwen2VLImageProcessor", size=pixels, patch_size=16, merge_size=2, **half),
        video_processor=_video_processor("Qwen3VLVideoProcessor", size=pixels, patch_size=16, merge_size=2, **half),
        tokenizer=tok, chat_template=_qwen_template(_QWEN_IMAGE),
    )
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
        spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[1],
    )
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True}
    text = _small_text("qwen3_vl_text", tok, rope_parameters=rope)
    config = Qwen3VLConfig(vision_config=vision, text_config=text.to_dict(), **_qwen_ids(tok))
    model = _finish(_seeded(Qwen3VLForConditionalGeneration, config), processor)
    return _save_atomic(path, model, processor, "qwen3_vl")


def build_tiny_llava_onevision(path: str | Path) -> Path:
    """Tiny LLaVA-OneVision (SigLIP tower, anyres tiles, Qwen2 text). Needs torchvision."""
    from transformers import (
        LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor, SiglipVisionConfig,
    )

    tok = _qwen_tokenizer({"image_token": IMAGE_TOKEN, "video_token": "<video>"})
    pinpoints = [[IMAGE_SIZE * h, IMAGE_SIZE * w] for h in (1, 2) for w in (1, 2)]
    square = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = LlavaOnevisionProcessor(
        image_processor=_image_processor("LlavaOnevisionImageProcessor", size=square, image_grid_pinpoints=pinpoints),
        video_processor=_video_processor("LlavaOnevisionVideoProcessor", size=square),
        tokenizer=tok, num_image_tokens=NUM_IMAGE_TOKENS, vision_feature_select_strategy="full",
        chat_template=_qwen_template(IMAGE_TOKEN + "\n"),
    )
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=_small_text("qwen2", tok), image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full", vision_feature_layer=-1,
        image_token_index=tok.image_token_id, video_token_index=tok.video_token_id,
    )
    model = _finish(_seeded(LlavaOnevisionForConditionalGeneration, config), processor)
    return _save_atomic(path, model, processor, "llava_onevision")


def build_tiny_internvl(path: str | Path) -> Path:
    """Tiny InternVL 3 (InternViT, dynamic tiles, pixel shuffle, Qwen2 text). Needs torchvision."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor, InternVLVisionConfig

    marks = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tok = _qwen_tokenizer(marks)
    square = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = InternVLProcessor(
        image_processor=_image_processor("GotOcr2ImageProcessor", size=square, crop_to_patches=True, max_patches=4),
        video_processor=_video_processor("InternVLVideoProcessor", size=square),
        tokenizer=tok, image_seq_length=4,  # 16 patches, pixel shuffle 0.5 -> 4 tokens per tile
        chat_template=_qwen_template("<IMG_CONTEXT>\n"),
    )
    vision = InternVLVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=[IMAGE_SIZE, IMAGE_SIZE], patch_size=[PATCH_SIZE, PATCH_SIZE],
    )
    config = InternVLConfig(
        vision_config=vision, text_config=_small_text("qwen2", tok), downsample_ratio=0.5, image_seq_length=4,
        image_token_id=tok.context_image_token_id,
    )
    model = _finish(_seeded(InternVLForConditionalGeneration, config), processor)
    return _save_atomic(path, model, processor, "internvl")


# The last four need torchvision (their processors hold a video processor): GPU machines only here.
TINY_BUILDERS: dict[str, Callable[[str | Path], Path]] = {
    "tiny-llava": build_tiny_llava,
    "tiny-idefics3": build_tiny_idefics3,
    "tiny-gemma3": build_tiny_gemma3,
    "tiny-qwen2.5-vl": build_tiny_qwen2_5_vl,
    "tiny-qwen3-vl": build_tiny_qwen3_vl,
    "tiny-llava-onevision": build_tiny_llava_onevision,
    "tiny-internvl": build_tiny_internvl,
}

_build_lock = threading.Lock()


def ensure_model(spec) -> str:
    """Return the spec's model path, building it first when `spec.build` is set and the path is missing."""
    if not spec.build:
        if spec.model is None:
            raise ValueError(f"{spec.backend}: no model given")
        return spec.model
    if spec.build not in TINY_BUILDERS:
        raise ValueError(f"unknown build {spec.build!r}; known: {sorted(TINY_BUILDERS)}")
    if not spec.model:
        raise ValueError(f"build {spec.build!r} needs a model path to build into")
    with _build_lock:
        if not Path(spec.model).exists():
            TINY_BUILDERS[spec.build](spec.model)
    return spec.model


def read_model_card(model_dir: str | Path) -> dict | None:
    """The g2u model card of a local model dir, or None."""
    card = Path(model_dir) / MODEL_CARD
    if not card.is_file():
        return None
    return json.loads(card.read_text())
