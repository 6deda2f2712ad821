"""Train the positive-control understander: a small LLaVA (CLIP vision tower + Llama) that reads the
colour of a detail when the detail is large enough at its 32-px input, and guesses when it is not.

    python scripts/train_control_model.py --out models/control-llava --device cuda --no-table   # ~5 min, H200
    python scripts/train_control_model.py --out models/control-llava --table-only             # CPU: the card

It learns on the training split of scripts/make_control_data.py (seeds disjoint from the test split),
in the exact prompt formats the pipeline sends: the understander's chat template around the
VLMEvalKit MCQ prompt for baseline/replace (one image) and concat (original + thought, with the
family's description); the thoughts it sees are the reference generator's crop-zoom and outpaint
and the image itself. It never sees a structure map. The answer is one letter then EOS.

Output: safetensors weights + processor (save_pretrained), g2u_model_card.json, README.md with the
accuracy table (test split, original vs zoomed, per category) measured through the pipeline's own
transformers understander. Fixed seeds.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from make_control_data import COLOURS, LETTERS, MARK_QUESTION, SHAPE_QUESTION, training_scene
from g2u_tasks.backends.generators.reference import border_outpaint, crop_zoom
from g2u_tasks.backends.tiny_models import CHAT_TEMPLATE, IMAGE_TOKEN, MODEL_CARD, SPECIAL_TOKENS
from g2u_tasks.records import Item
from g2u_tasks.thoughts.families import load_family
from g2u_tasks.understanding.prompts import build_prompt

IMAGE_SIZE = 32
SEED = 0
FAMILIES = ("detail_enhancement", "context_expansion", "identity", "reconstruction")
VIEWS = {  # thought view -> the family whose description a concat prompt carries
    "zoom": "detail_enhancement", "outpaint": "context_expansion", "same": "identity", "same_r": "reconstruction",
}


# ---------------------------------------------------------------- model

def corpus() -> list[str]:
    """Everything the prompts contain, so the BPE merges keep sequences short."""
    families = [load_family(f) for f in (*FAMILIES, "structural_visualisation")]
    item = _item(MARK_QUESTION, dict(zip(LETTERS, COLOURS)))
    lines = [build_prompt(item, [None], "baseline")[1]]
    lines += [build_prompt(item, [None], "concat", thought=True, family=f)[1] for f in families]
    lines += [SHAPE_QUESTION, *LETTERS, *COLOURS, "USER: ASSISTANT:"]
    return [line for text in lines for line in text.split("\n")] * 4


def tokenizer(lines: list[str]):
    """A 512-token byte-level BPE over `lines`, BOS prepended, LLaVA's special tokens."""
    # Copied from g2u_tasks.backends.tiny_models._build_tokenizer (own corpus, LLaVA specials only)
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=512, special_tokens=SPECIAL_TOKENS, show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN}, padding_side="left", model_max_length=2048)


def build(tokenizer_corpus: list[str], patch: int = 4, vision_hidden: int = 64, vision_layers: int = 2):
    from transformers import (
        CLIPImageProcessor, CLIPVisionConfig, GenerationConfig, LlamaConfig, LlavaConfig,
        LlavaForConditionalGeneration, LlavaProcessor,
    )
    import transformers

    tok = tokenizer(tokenizer_corpus)
    image_cls = getattr(transformers, "CLIPImageProcessorPil", None) or CLIPImageProcessor
    processor = LlavaProcessor(
        # box filter: an encoder pixel is the mean of a 4x4 block, so a mark inside one block averages away
        image_processor=image_cls(resample=Image.Resampling.BOX, size={"shortest_edge": IMAGE_SIZE},
                                  crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN,
    )
    image_token_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    vision = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                              num_hidden_layers=vision_layers, num_attention_heads=4, image_size=IMAGE_SIZE,
                              patch_size=patch, projection_dim=64)
    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image_token_id, vision_feature_select_strategy="default",
        vision_feature_layer=-1, image_seq_length=(IMAGE_SIZE // patch) ** 2, projector_hidden_act="gelu",
    )
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        suppress_tokens=[image_token_id, tok.pad_token_id],
    )
    return processor, model


# ---------------------------------------------------------------- data

def _item(question: str, options: dict[str, str], answer: str = "A") -> Item:
    return Item(benchmark="train", item_id="0", question=question, options=options, answer=answer, category=None,
                question_type="mcq", image_sha256="", images=())


def view(img, name: str):
    if name == "zoom":
        return crop_zoom(img, **load_family("detail_enhancement").reference["params"])
    if name == "outpaint":
        return border_outpaint(img, **load_family("context_expansion").reference["params"])
    return img.copy()


def sample(index: int, families: dict) -> tuple[list, str, str]:
    """(images, prompt text, answer letter) of training sample `index`: one scene, one mode."""
    img, question, options, answer, _ = training_scene(index)
    rng = random.Random(SEED * 1_000_003 + index)
    item = _item(question, options, answer)
    if rng.random() < 0.55:  # one image (baseline and replace prompts are the same): original, zoom or outpaint
        single = rng.choices(["same", "zoom", "outpaint"], weights=[4, 4, 2])[0]
        images, text = build_prompt(item, [view(img, single)], "baseline")
    else:
        thought_view = rng.choice(["zoom", "zoom", "outpaint", "same", "same_r"])
        images, text = build_prompt(item, [img], "concat", thought=view(img, thought_view),
                                    family=families[VIEWS[thought_view]])
    return images, text, answer


class Encoder:
    """Token ids (prompt + answer letter + EOS) and pixel values of a sample, rendered and processed
    exactly as the transformers understander does; token ids cached per distinct prompt."""

    def __init__(self, processor):
        self.processor, self.ids = processor, {}
        tok = processor.tokenizer
        self.targets = {k: tok(k, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for k in LETTERS}

    def __call__(self, images, text: str, answer: str) -> dict:
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
        rendered = self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True, tokenize=False)
        if rendered not in self.ids:
            enc = self.processor(text=[rendered], images=[images], return_tensors="pt")
            self.ids[rendered] = enc["input_ids"][0].tolist()
        pixels = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return {"ids": self.ids[rendered] + self.targets[answer], "pixel_values": pixels}


def collate(rows: list[dict], pad_id: int) -> dict:
    """Left-padded batch with the position ids generation uses (cumsum of the attention mask); every
    row ends with [answer letter, EOS]."""
    width = max(len(r["ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r["ids"]):] = torch.tensor(r["ids"])
        mask[i, width - len(r["ids"]):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
            "pixel_values": torch.cat([r["pixel_values"] for r in rows])}


def answer_loss(model, batch: dict) -> torch.Tensor:
    """Cross-entropy of the answer letter and EOS only (logits of the last three positions)."""
    logits = model(**batch, logits_to_keep=3).logits  # positions -3, -2 predict the letter, EOS
    targets = batch["input_ids"][:, -2:]
    return torch.nn.functional.cross_entropy(logits[:, :2].reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ---------------------------------------------------------------- training

def train(processor, model, n_samples: int, steps: int, batch: int, lr: float, log, device: str = "cpu") -> float:
    families = {f: load_family(f) for f in FAMILIES}
    model.to(device)
    t0 = time.perf_counter()
    encode = Encoder(processor)
    data = [encode(*sample(i, families)) for i in range(n_samples)]
    log(f"encoded {n_samples} samples ({len(encode.ids)} distinct prompts) in {time.perf_counter() - t0:.0f}s")
    pad = processor.tokenizer.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    order, running = [], None
    for step in range(steps):
        if len(order) < batch:
            order += torch.randperm(n_samples, generator=gen).tolist()
        rows = [data[i] for i in order[:batch]]
        del order[:batch]
        loss = answer_loss(model, {k: v.to(device) for k, v in collate(rows, pad).items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step:5d}  loss {running:.3f}  {time.perf_counter() - t0:.0f}s")
    model.eval().to("cpu")
    return time.perf_counter() - t0


# ---------------------------------------------------------------- evaluation (through the pipeline's backend)

def accuracy_table(model_dir: Path, data_dir: Path) -> list[dict]:
    """Per benchmark x category: accuracy on the original and on the detail-enhanced (zoomed) image,
    answered by the pipeline's transformers understander with the baseline prompt."""
    from g2u_tasks.backends.understanders.base import UnderstandRequest
    from g2u_tasks.backends.understanders.transformers_backend import TransformersUnderstander
    from g2u_tasks.benchmarks.loaders import load_benchmark
    from g2u_tasks.config import ModelSpec
    from g2u_tasks.images import decode

    u = TransformersUnderstander(ModelSpec(backend="transformers", model=str(model_dir),
                                           params={"max_new_tokens": 4, "dtype": "float32", "batch_size": 32}))
    rows = []
    for path in sorted(data_dir.glob("*.tsv")):
        items = load_benchmark(path.stem, str(path))
        for variant in ("original", "zoomed"):
            reqs = []
            for it in items:
                img = decode(it.images[0])
                images, text = build_prompt(it, [img if variant == "original" else view(img, "zoom")], "baseline")
                reqs.append(UnderstandRequest(images=images, prompt=text))
            answers = u.answer(reqs)
            for cat in sorted({it.category for it in items}):
                hits = [a.strip()[:1] == it.answer for a, it in zip(answers, items) if it.category == cat]
                rows.append({"benchmark": path.stem, "category": cat, "variant": variant, "n": len(hits),
                             "accuracy_pct": round(100 * sum(hits) / len(hits), 1)})
    return rows


def table_markdown(rows: list[dict]) -> str:
    keys = sorted({(r["benchmark"], r["category"]) for r in rows})
    get = {(r["benchmark"], r["category"], r["variant"]): r for r in rows}
    lines = ["| benchmark | category | n | original | zoomed (detail_enhancement) |", "|---|---|---|---|---|"]
    for b, c in keys:
        o, z = get[(b, c, "original")], get[(b, c, "zoomed")]
        lines.append(f"| {b} | {c} | {o['n']} | {o['accuracy_pct']:.1f}% | {z['accuracy_pct']:.1f}% |")
    return "\n".join(lines)


def save(out: Path, processor, model) -> None:
    """save_pretrained into a temp dir, then one rename over `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    card = {"random_weights": False, "architecture": "llava", "positive_control": True,
            "built_by": "scripts/train_control_model.py"}
    (tmp / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/control-llava"))
    parser.add_argument("--data", type=Path, default=Path("data/control"), help="test split, for the table")
    parser.add_argument("--samples", type=int, default=16000)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--patch", type=int, default=2, help="vision patch size at the 32-px input")
    parser.add_argument("--vision-hidden", type=int, default=96)
    parser.add_argument("--vision-layers", type=int, default=3)
    step = parser.add_mutually_exclusive_group()
    step.add_argument("--no-table", action="store_true", help="train only (e.g. on a GPU box without polars)")
    step.add_argument("--table-only", action="store_true", help="measure the weights in --out, write the card")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda m: print(m, flush=True)  # noqa: E731
    if not args.table_only:
        torch.manual_seed(SEED)
        random.seed(SEED)
        processor, model = build(corpus(), args.patch, args.vision_hidden, args.vision_layers)
        log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
        seconds = train(processor, model, args.samples, args.steps, args.batch, args.lr, log, args.device)
        save(args.out, processor, model)
        gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
        trained = {**{k: str(v) for k, v in vars(args).items() if k not in ("no_table", "table_only")},
                   "seconds": round(seconds, 1), "torch": torch.__version__,
                   "machine": gpu or f"{platform.machine()} CPU, {args.threads} thread(s)"}
        (args.out / "training.json").write_text(json.dumps(trained, indent=2) + "\n")
    if args.no_table:
        return
    trained = json.loads((args.out / "training.json").read_text())
    rows = accuracy_table(args.out, args.data)
    (args.out / "accuracy.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "README.md").write_text(model_card(trained, table_markdown(rows)))
    log(table_markdown(rows))
    log(f"trained in {trained['seconds']:.0f}s on {trained['machine']}; wrote {args.out}")


def model_card(t: dict, table: str) -> str:
    """The README of the weights folder, from training.json (`t`) and the measured table."""
    return f"""# control-llava — a synthetic positive control for G2U

**What it is.** A small LLaVA-architecture checkpoint (CLIP vision tower, {t['vision_layers']} layers, hidden
{t['vision_hidden']}, {IMAGE_SIZE}-px input (box-filtered from 128 px) in {t['patch']}-px patches; Llama text model, 2 layers,
hidden 96; a byte-level BPE of 512 tokens), loadable with `AutoModelForImageTextToText` + `AutoProcessor`. It was
trained from scratch by `scripts/train_control_model.py` on the training split of `scripts/make_control_data.py`
to answer one kind of question: the colour of a 2x2 mark's top-left square, or of a large shape, as an option
letter.

**Why.** Its input is {IMAGE_SIZE} px. A small mark (2-px squares at 128 px) is drawn inside one 4x4 block, which the
box filter averages into one encoder pixel of the same colour whatever the squares' order: on the original it can
only guess (25%). The reference generator's detail enhancement (crop the central 60%, scale up x1.66, sharpen)
puts the top-left square on most of one encoder pixel, so the zoomed mark reads. So on `data/control/` G2U's gain
is real and planted: detail enhancement must help on `small_detail`, identity must not, the structure map (colour
washed out; the model never saw one) must hurt the colour questions, context expansion (content x0.67) cannot
help.

**What it is not.** Not a real vision-language model: it knows four colours, two question sentences and the
prompt formats of this pipeline (baseline/replace with one image, concat with original + thought). On any other
input (the other demo benchmarks included) its answers mean nothing. Its numbers say that the pipeline detects a
gain that exists, nothing about G2U on real models.

**Reproduce.** `python scripts/train_control_model.py --out models/control-llava --device cuda --no-table`, then
`python scripts/train_control_model.py --out models/control-llava --table-only` (CPU) for this card's table
(seed 0, {t['samples']} samples, {t['steps']} steps of {t['batch']}, AdamW lr {t['lr']}). Training took
{t['seconds']:.0f} s on {t['machine']} (torch {t['torch']}). On CPU, drop `--device cuda` (much slower). GPU kernels and
thread scheduling change the last digits of the weights; the accuracy table is what reproduces, up to the
small-detail original row, which is a guess among four (no information by construction: a second run of
the command on an H200, 2026-12-02, gave 29.2% there and the same numbers everywhere else).

**Accuracy** on the test split (`data/control/`, seeds disjoint from training), answered through the pipeline's
transformers understander with the baseline prompt; "zoomed" is the reference generator's detail enhancement of
the same image:

{table}
"""


if __name__ == "__main__":
    sys.exit(main())
