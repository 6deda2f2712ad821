"""Loading BAGEL's official code (github.com/ByteDance-Seed/Bagel) from a checkout the user points at.

The checkout stays outside this repository: the spec's `code` param names its folder, which is put at
the front of `sys.path` so its top-level modules (`inferencer`, `modeling`, `data`) import. Its attention
imports `flash_attn.flash_attn_varlen_func`; where flash-attn is not installed (or `attention: sdpa`),
the SDPA version in `varlen_attention` is provided for that import only. The weights folder holds
`llm_config.json`, `vit_config.json`, the Qwen2 tokenizer files, `ae.safetensors` and `ema.safetensors`,
loaded like the repository's app.py (bf16, accelerate dispatch); `dtype: float32` keeps the weights in fp32
and runs without autocast (CPU runs whose batched and one-at-a-time outputs must match bit for bit).
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from g2u_tasks.backends.tiny_models import read_model_card
from g2u_tasks.backends.unified.varlen_attention import NAME, provide_flash_attn, real_flash_attn_available

ATTENTION = ("auto", "flash_attn", "sdpa")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
# The official modules used, by fixed name; only their location (the checkout) comes from the config.
_MODULES = ("inferencer", "data.data_utils", "data.transforms", "modeling.autoencoder", "modeling.bagel",
            "modeling.bagel.qwen2_navit", "modeling.qwen2")
INSTALL_HINT = (
    "bagel: set the spec's `code` param to a checkout of https://github.com/ByteDance-Seed/Bagel (kept outside "
    "this repository; install its requirements, flash_attn optional) and `model` to a weights folder such as "
    "BAGEL-7B-MoT")


@dataclass
class OfficialBagel:
    """The official objects one resident BAGEL needs, and what the run record says about them."""

    model: Any
    vae_model: Any
    tokenizer: Any
    new_token_ids: dict[str, int]
    vae_transform: Any
    vit_transform: Any
    inferencer: Any  # the official InterleaveInferencer over the same objects
    modules: dict[str, Any]  # the imported official modules by dotted name
    device: str
    dtype: str  # a DTYPES name: the weights' dtype; bfloat16 runs under autocast
    record: dict[str, str | None] = field(default_factory=dict)  # code, revision, attention, weights card


class SeededVAE:
    """The VAE on the model's device. With `seeds` set, each image of a batch is encoded alone with the
    global RNG seeded by its request's seed: the posterior sample a seeded one-at-a-time call draws."""

    def __init__(self, vae: Any):
        self.vae = vae
        self.device = next(vae.parameters()).device
        self.seeds: list[int] | None = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        if self.seeds is None:
            return self.vae.encode(x)
        out = []
        for img, seed in zip(x, self.seeds, strict=True):
            with seeded(seed):
                out.append(self.vae.encode(img[None]))
        return torch.cat(out)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z.to(self.device))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """The global torch RNG (CPU and every CUDA device) seeded with `seed` inside, restored after."""
    devices = range(torch.cuda.device_count()) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def autocast(device: str, dtype: str = "bfloat16"):
    """The bf16 autocast the official inferencer runs under (it opens a CUDA one itself; on CPU this one);
    none for float32 weights."""
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                          enabled=dtype == "bfloat16")


def import_official(code_dir: str, attention: str = "auto") -> tuple[dict[str, Any], str]:
    """Import the official modules from `code_dir`; (modules by name, attention implementation name)."""
    if attention not in ATTENTION:
        raise ValueError(f"bagel: attention must be one of {ATTENTION}, got {attention!r}")
    root = Path(code_dir).resolve()
    if not (root / "inferencer.py").is_file() or not (root / "modeling" / "bagel").is_dir():
        raise ImportError(f"bagel: {code_dir!r} is not a BAGEL checkout (no inferencer.py / modeling/bagel). "
                          + INSTALL_HINT)
    if attention == "flash_attn" and not real_flash_attn_available():
        raise ImportError("bagel: attention flash_attn asked for, but flash_attn is not installed")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    with provide_flash_attn(attention_impl(attention) == NAME) as impl:
        modules = {name: importlib.import_module(name) for name in _MODULES}
    for name, module in modules.items():  # a same-named module from elsewhere would be a silent mix-up
        origin = Path(getattr(module, "__file__", "") or "").resolve()
        if root not in origin.parents:
            raise ImportError(f"bagel: module {name!r} was imported from {origin}, not from the checkout {root}")
    return modules, impl


def attention_impl(attention: str) -> str:
    """The attention implementation the official code gets for the `attention` param."""
    use_sdpa = attention == "sdpa" or (attention == "auto" and not real_flash_attn_available())
    return NAME if use_sdpa else "flash_attn"


def official_record(model_path: str, code_dir: str, attention: str) -> dict[str, str | None]:
    """What a run record says about a BAGEL: the checkout, its revision, the attention, the weights card.
    Needs no model load, so a run can record the generator it did not load itself."""
    return {"code": str(code_dir), "code_revision": code_revision(code_dir), "attention": attention_impl(attention),
            "weights_card": weights_card(model_path)}


def code_revision(code_dir: str) -> str | None:
    """The checkout's git commit (with "+dirty" when it has local changes), or None if not a git checkout."""
    try:
        head = subprocess.run(["git", "-C", code_dir, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", code_dir, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def weights_card(model_path: str) -> str:
    """One line on the weights folder's model card: the g2u card's kind, or the README's first heading."""
    card = read_model_card(model_path)
    if card:
        return f"g2u card: {card.get('architecture', '?')}" + (", random weights" if card.get("random_weights") else "")
    readme = Path(model_path) / "README.md"
    if readme.is_file():
        heading = next((ln.lstrip("# ").strip() for ln in readme.read_text(errors="replace").splitlines()
                        if ln.startswith("#")), "")
        return f"README: {heading or 'no heading'}"
    return "no model card"


def load_official(model_path: str, code_dir: str, attention: str = "auto", max_memory_gib: int = 80,
                  device: str = "cuda", dtype: str = "bfloat16") -> OfficialBagel:
    """Build the official model like the repository's app.py (bf16 by default, accelerate dispatch)."""
    from accelerate import infer_auto_device_map, init_empty_weights, load_checkpoint_and_dispatch

    if dtype not in DTYPES:
        raise ValueError(f"bagel: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    m, _ = import_official(code_dir, attention)
    bagel, qwen2 = m["modeling.bagel"], m["modeling.qwen2"]
    llm_config = bagel.Qwen2Config.from_json_file(os.path.join(model_path, "llm_config.json"))
    llm_config.qk_norm, llm_config.tie_word_embeddings = True, False
    llm_config.layer_module = "Qwen2MoTDecoderLayer"
    vit_config = bagel.SiglipVisionConfig.from_json_file(os.path.join(model_path, "vit_config.json"))
    vit_config.rope = False
    vit_config.num_hidden_layers -= 1
    vae_model, vae_config = m["modeling.autoencoder"].load_ae(local_path=os.path.join(model_path, "ae.safetensors"))
    config = bagel.BagelConfig(visual_gen=True, visual_und=True, llm_config=llm_config, vit_config=vit_config,
                               vae_config=vae_config, vit_max_num_patch_per_side=70,
                               connector_act="gelu_pytorch_tanh", latent_patch_size=2, max_latent_size=64)
    with init_empty_weights():
        model = bagel.Bagel(bagel.Qwen2ForCausalLM(llm_config), bagel.SiglipVisionModel(vit_config), config)
        model.vit_model.vision_model.embeddings.convert_conv2d_to_linear(vit_config, meta=True)
    tokenizer, new_token_ids, _ = m["data.data_utils"].add_special_tokens(qwen2.Qwen2Tokenizer.from_pretrained(model_path))
    if device == "cuda":
        device_map = infer_auto_device_map(
            model, max_memory={i: f"{max_memory_gib}GiB" for i in range(torch.cuda.device_count())},
            no_split_module_classes=["Bagel", "Qwen2MoTDecoderLayer"])
        # These modules must share a device (as in app.py).
        same = ["language_model.model.embed_tokens", "time_embedder", "latent_pos_embed", "vae2llm", "llm2vae",
                "connector", "vit_pos_embed"]
        single = torch.cuda.device_count() == 1
        first = device_map.get(same[0], "cuda:0" if single else None)
        for name in same:
            if single or name in device_map:
                device_map[name] = first
    else:
        device_map = {"": device}
    model = load_checkpoint_and_dispatch(model, checkpoint=os.path.join(model_path, "ema.safetensors"),
                                         device_map=device_map, offload_buffers=True, offload_folder="offload",
                                         dtype=DTYPES[dtype], force_hooks=True).eval()
    # app.py leaves the VAE on the CPU; on the model's device it encodes/decodes far faster (fp32 kept)
    vae_model = SeededVAE(vae_model.to(device=next(model.parameters()).device).eval())
    transforms = m["data.transforms"]
    vae_transform, vit_transform = transforms.ImageTransform(1024, 512, 16), transforms.ImageTransform(980, 224, 14)
    inferencer = m["inferencer"].InterleaveInferencer(
        model=model, vae_model=vae_model, tokenizer=tokenizer, vae_transform=vae_transform,
        vit_transform=vit_transform, new_token_ids=new_token_ids)
    record = official_record(model_path, code_dir, attention)
    return OfficialBagel(model=model, vae_model=vae_model, tokenizer=tokenizer, new_token_ids=new_token_ids,
                         vae_transform=vae_transform, vit_transform=vit_transform, inferencer=inferencer,
                         modules=m, device=str(next(model.parameters()).device), dtype=dtype, record=record)
