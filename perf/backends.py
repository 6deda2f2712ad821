"""Throughput of one-at-a-time vs batched inference on real-size architectures with random weights.

(a) understand: LLaVA-1.5-7B-shaped model (CLIP ViT-L/14-336 + Llama-2-7B-shaped text), ~650-token
    prompts (576 image tokens), exactly 16 new tokens (greedy, min_new_tokens=16), generate() only.
(b) edit: SD-1.5-shaped StableDiffusionInstructPix2PixPipeline, 512 px, 20 steps (skipped without diffusers).

No downloads: configs are written here, weights are initialised directly on the device.
Needs only torch, transformers, pillow, numpy (+ diffusers for part b).

    python benchmarks/backends.py --out results.json            # GPU, full size
    python benchmarks/backends.py --quick --out /tmp/bq.json     # tiny sizes, CPU smoke test
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

GIB = 1024**3


# ---- shapes -------------------------------------------------------------------------------------

def llava_config(quick: bool):
    """LLaVA-1.5-7B geometry (or a tiny one with --quick)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if quick:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      image_size=64, patch_size=16, projection_dim=32)
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    else:
        vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=336, patch_size=14, projection_dim=768)
        text = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)
    image_tokens = (vision["image_size"] // vision["patch_size"]) ** 2  # 576 at full size
    return LlavaConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=LlamaConfig(vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5,
                                bos_token_id=1, eos_token_id=2, pad_token_id=0, **text),
        image_token_id=32000, image_seq_length=image_tokens, vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )


def sd15_components(quick: bool) -> dict:
    """Configs of an SD-1.5 InstructPix2Pix: UNet with 8 input channels, ViT-L-shaped CLIP text, SD VAE."""
    if quick:
        unet = dict(sample_size=16, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=4, norm_num_groups=8)
        vae = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, sample_size=32,
                   down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32)
        return {"unet": unet, "vae": vae, "text": text, "size": 32, "steps": 2}
    unet = dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, attention_head_dim=8)
    vae = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                projection_dim=768)
    return {"unet": unet, "vae": vae, "text": text, "size": 512, "steps": 20}


# ---- helpers ------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / GIB, 2) if device.type == "cuda" else None


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})"


def time_batches(device, batch: int, min_items: int, repeats: int, run) -> tuple[float, int]:
    """items/s of `run()` (one batch): one warm-up, then the median over `repeats` of ceil(min_items/batch) calls."""
    calls = math.ceil(max(min_items, batch) / batch)
    run()  # warm-up (kernels, allocator, autotuning)
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            run()
        sync(device)
        times.append(time.perf_counter() - t0)
    return calls * batch / statistics.median(times), calls * batch


def row(workload: str, batch: int, items_s: float | None, device, base: float | None, **extra) -> dict:
    speedup = round(items_s / base, 2) if items_s and base else None
    return {"workload": workload, "batch": batch, "items_per_s": round(items_s, 3) if items_s else None,
            "speedup_vs_batch1": speedup, "peak_gpu_gib": peak_gib(device), "device": device_name(device), **extra}


def is_oom(err: Exception) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError)


@contextmanager
def built_on(device: torch.device, dtype: torch.dtype):
    """Create modules' weights directly on `device` in `dtype` (no CPU copy, no later cast)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(previous)


def params_label(*modules) -> str:
    n = sum(p.numel() for m in modules for p in m.parameters())
    return f"{n / 1e9:.2f} B params" if n >= 1e8 else f"{n / 1e6:.2f} M params"


# ---- (a) understanding ----------------------------------------------------------------------------

def understanding_inputs(config, batch: int, device, dtype, seed: int = 0) -> dict:
    """Left-padded prompts: BOS, the image tokens, then 40-100 random text tokens; random pixels."""
    g = torch.Generator().manual_seed(seed)
    n_img = config.image_seq_length
    low, high = (40, 100) if n_img > 64 else (8, 20)  # tiny prompts with --quick
    text_lens = torch.randint(low, high + 1, (batch,), generator=g)
    width = 1 + n_img + int(text_lens.max())
    ids = torch.zeros(batch, width, dtype=torch.long)  # pad id 0
    mask = torch.zeros(batch, width, dtype=torch.long)
    for b, n_text in enumerate(text_lens.tolist()):
        seq = [1] + [config.image_token_id] * n_img + torch.randint(3, 32000, (n_text,), generator=g).tolist()
        ids[b, width - len(seq):] = torch.tensor(seq)
        mask[b, width - len(seq):] = 1
    size = config.vision_config.image_size
    pixels = torch.randn(batch, 3, size, size, generator=g)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
            "pixel_values": pixels.to(device, dtype), "prompt_tokens": round(float(mask.sum(1).float().mean()), 1)}


def bench_understand(args, device, dtype) -> list[dict]:
    from transformers import AutoModelForImageTextToText, GenerationConfig

    config = llava_config(args.quick)
    t0 = time.perf_counter()
    with device:  # allocate and initialise the weights on the device directly
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype).eval()
    sync(device)
    shape = "tiny LLaVA" if args.quick else "LLaVA-1.5-7B-shaped model"
    print(f"understand: built {shape} ({params_label(model)}) in {time.perf_counter() - t0:.1f} s")
    new = 16
    gen = GenerationConfig(max_new_tokens=new, min_new_tokens=new, do_sample=False, bos_token_id=1, eos_token_id=2,
                           pad_token_id=0)
    rows, base = [], None
    for batch in args.batches:
        reset_peak(device)
        try:
            inputs = understanding_inputs(config, batch, device, dtype)
            prompt_tokens = inputs.pop("prompt_tokens")

            def run():
                with torch.inference_mode():
                    out = model.generate(**inputs, generation_config=gen)
                assert out.shape[1] - inputs["input_ids"].shape[1] == new

            items_s, items = time_batches(device, batch, args.min_items, args.repeats, run)
        except Exception as err:  # noqa: BLE001 - report OOM as a row, re-raise anything else
            if not is_oom(err):
                raise
            rows.append(row("understand", batch, None, device, base, note="CUDA out of memory"))
            continue
        finally:
            inputs = None
        base = base or (items_s if batch == 1 else None)
        rows.append(row("understand", batch, items_s, device, base, prompt_tokens=prompt_tokens,
                        new_tokens=new, items_timed=items))
        print(f"  batch {batch}: {items_s:.2f} items/s")
    del model
    reset_peak(device)
    return rows


# ---- (b) editing ----------------------------------------------------------------------------------

def _word_tokenizer():
    """A CLIP-like word tokenizer (no downloads); pads/truncates to 77 like CLIP's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "<|startoftext|> <|endoftext|> <unk> make it a the sky sunny winter painting add turn into photo".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="<unk>", model_max_length=77)


def build_pix2pix(quick: bool, device, dtype):
    from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    shapes = sd15_components(quick)
    with built_on(device, dtype):
        unet = UNet2DConditionModel(in_channels=8, out_channels=4, **shapes["unet"])
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **shapes["vae"])
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **shapes["text"]))
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                num_train_timesteps=1000)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text.eval(), tokenizer=_word_tokenizer(), unet=unet.eval(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe, shapes


def bench_edit(args, device, dtype) -> list[dict]:
    try:
        import diffusers  # noqa: F401
    except ImportError as err:
        print(f"edit: SKIPPED - diffusers is not importable here ({err}); "
              "carry a diffusers wheel (benchmarks/README.md)")
        return [{"workload": "edit", "skipped": f"diffusers not importable: {err}", "device": device_name(device)}]

    t0 = time.perf_counter()
    pipe, shapes = build_pix2pix(args.quick, device, dtype)
    sync(device)
    shape = "tiny InstructPix2Pix" if args.quick else "SD-1.5-shaped InstructPix2Pix"
    label = params_label(pipe.unet, pipe.vae, pipe.text_encoder)
    print(f"edit: built {shape} ({label}) in {time.perf_counter() - t0:.1f} s")
    size, steps = shapes["size"], shapes["steps"]
    rng = np.random.default_rng(0)
    rows, base = [], None
    for batch in args.edit_batches:
        reset_peak(device)
        images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(batch)]
        prompts = ["make it a winter painting"] * batch

        def run():
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # random weights: NaN pixels warn on the uint8 cast
                out = pipe(prompt=prompts, image=images, num_inference_steps=steps, guidance_scale=7.5,
                           image_guidance_scale=1.5, generator=torch.Generator(device).manual_seed(0)).images
            assert len(out) == batch and out[0].size == (size, size)

        try:
            items_s, items = time_batches(device, batch, args.min_edit_items, args.repeats, run)
        except Exception as err:  # noqa: BLE001
            if not is_oom(err):
                raise
            rows.append(row("edit", batch, None, device, base, note="CUDA out of memory"))
            continue
        base = base or (items_s if batch == 1 else None)
        rows.append(row("edit", batch, items_s, device, base, size_px=size, steps=steps, items_timed=items))
        print(f"  batch {batch}: {items_s:.2f} images/s")
    del pipe
    reset_peak(device)
    return rows


# ---- main -----------------------------------------------------------------------------------------

def print_table(rows: list[dict]) -> None:
    head = f"{'workload':<11}{'batch':>6}{'items/s':>10}{'speedup':>9}{'peak GiB':>10}  device"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        if "skipped" in r:
            print(f"{r['workload']:<11}{'-':>6}  skipped: {r['skipped']}")
            continue
        fmt = lambda v, suffix="": f"{v:.2f}{suffix}" if v is not None else "-"  # noqa: E731
        print(f"{r['workload']:<11}{r['batch']:>6}{fmt(r['items_per_s']):>10}{fmt(r['speedup_vs_batch1'], 'x'):>9}"
              f"{fmt(r['peak_gpu_gib']):>10}  {r['device']}{'  (' + r['note'] + ')' if r.get('note') else ''}")


def parse_args(argv=None):
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes; runs on CPU in under a minute (smoke test)")
    p.add_argument("--part", choices=["understand", "edit", "all"], default="all")
    p.add_argument("--batches", type=ints, help="understanding batch sizes (default 1,8,32,64; quick 1,4)")
    p.add_argument("--edit-batches", type=ints, help="edit batch sizes (default 1,4,16; quick 1,2)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per batch size (median reported)")
    p.add_argument("--min-items", type=int, default=8, help="understanding items per timed repeat, at least")
    p.add_argument("--min-edit-items", type=int, default=4, help="edited images per timed repeat, at least")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--out", help="write the table as JSON here")
    args = p.parse_args(argv)
    args.batches = args.batches or ([1, 4] if args.quick else [1, 8, 32, 64])
    args.edit_batches = args.edit_batches or ([1, 2] if args.quick else [1, 4, 16])
    if args.quick:
        args.repeats, args.min_items, args.min_edit_items = min(args.repeats, 2), 2, 1
    return args


def main(argv=None) -> dict:
    import transformers

    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if not args.quick and device.type != "cuda":
        print("warning: full-size shapes on CPU will take very long; use --quick for a smoke test")
    torch.manual_seed(0)
    print(f"device: {device_name(device)}; dtype {str(dtype).removeprefix('torch.')}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    rows = []
    if args.part in ("understand", "all"):
        rows += bench_understand(args, device, dtype)
    if args.part in ("edit", "all"):
        rows += bench_edit(args, device, dtype)
    print()
    print_table(rows)
    try:
        import diffusers
        diffusers_version = diffusers.__version__
    except ImportError:
        diffusers_version = None
    result = {
        "quick": args.quick, "device": device_name(device), "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__, "transformers": transformers.__version__, "diffusers": diffusers_version,
        "repeats": args.repeats, "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
