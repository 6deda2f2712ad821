"""Tiny offline models of real architectures (random weights) for tests and smoke runs."""
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


def _build_tokenizer():
    from tokenizers import decoders, pre_tokenizers, processors
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.split("\n"), trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    # Prepend BOS like the Llama tokenizer does.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
        model_max_length=2048,
    )


def _build_processor():
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
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


def build_tiny_llava(path: str | Path) -> Path:
    """Build a tiny random-weight LLaVA (CLIP + Llama) with processor at `path`, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    processor = _build_processor()
    model = _build_model(processor.tokenizer)
    _check_image_tokens(processor, model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the model dir is a normal shared dir
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        card = {"random_weights": True, "architecture": "llava", "built_by": "g2u_tasks.tiny_models"}
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


TINY_BUILDERS: dict[str, Callable[[str | Path], Path]] = {"tiny-llava": build_tiny_llava}

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
