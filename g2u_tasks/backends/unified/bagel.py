"""Backend "bagel": BAGEL (github.com/ByteDance-Seed/Bagel) through its `InterleaveInferencer`.

BAGEL conditions generation on the source image (VAE + ViT tokens in context), so generation is true
image editing: `inferencer(image=source, text=edit_prompt, think=..., **generate_kwargs)["image"]`.
Understanding is text output with the images in context (ViT tokens only):
`inferencer(image=img, text=question, understanding_output=True, ...)["text"]`, or, for several
images, `inferencer.interleave_inference([img1, img2, question], understanding_output=True, ...)`.

BAGEL is not a pip package. To use the official loader: clone the repo, `pip install -r
requirements.txt` (+ flash_attn), put the repo root on PYTHONPATH (it provides the top-level modules
`inferencer`, `data`, `modeling`), download the weights (e.g. BAGEL-7B-MoT) and set `model` to that
folder. The backend always loads through `load_official` (no config value names code to import: a
config is data, and a "module:callable" param would let it run any function). The official
inferencer decodes on CUDA only.

Params: load: max_memory_gib (80, per GPU). Roles: think (false), max_new_tokens (64, answers),
fit ("crop"; BAGEL keeps the source aspect, this only snaps to the exact source size),
generate_kwargs / answer_kwargs (override the app.py defaults below). Seeds: the global torch RNG is
seeded per request inside `torch.random.fork_rng`, so requests are reproducible one by one.
"""
from __future__ import annotations

from typing import Any

from PIL import Image

from g2u_tasks.config import ModelSpec
from g2u_tasks.backends.generators.base import GenerateRequest
from g2u_tasks.backends.tiny_models import ensure_model
from g2u_tasks.backends.understanders.base import UnderstandRequest
from g2u_tasks.backends.common import fit_to_size
from g2u_tasks.backends.unified.base import UnifiedBackend, register_unified

# The official app.py's image-editing and understanding defaults.
EDIT_DEFAULTS = {"cfg_text_scale": 4.0, "cfg_img_scale": 2.0, "cfg_interval": [0.0, 1.0], "timestep_shift": 3.0,
                 "num_timesteps": 50, "cfg_renorm_min": 0.0, "cfg_renorm_type": "text_channel"}
ANSWER_DEFAULTS = {"do_sample": False, "text_temperature": 0.3}

INSTALL_HINT = (
    "BAGEL's inference code is not installed: clone https://github.com/ByteDance-Seed/Bagel, "
    "`pip install -r requirements.txt` (and flash_attn), and put the repo root on PYTHONPATH so that "
    "`import inferencer` works; set the spec's `model` to the downloaded weights folder (e.g. BAGEL-7B-MoT)."
)


def load_official(model_path: str, max_memory_gib: int = 80) -> Any:
    """Build the official InterleaveInferencer like the repo's app.py (bf16, accelerate dispatch, CUDA)."""
    try:
        from inferencer import InterleaveInferencer
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    import os

    import torch
    from accelerate import infer_auto_device_map, init_empty_weights, load_checkpoint_and_dispatch
    from data.data_utils import add_special_tokens
    from data.transforms import ImageTransform
    from modeling.autoencoder import load_ae
    from modeling.bagel import (Bagel, BagelConfig, Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig,
                                SiglipVisionModel)
    from modeling.qwen2 import Qwen2Tokenizer

    llm_config = Qwen2Config.from_json_file(os.path.join(model_path, "llm_config.json"))
    llm_config.qk_norm, llm_config.tie_word_embeddings = True, False
    llm_config.layer_module = "Qwen2MoTDecoderLayer"
    vit_config = SiglipVisionConfig.from_json_file(os.path.join(model_path, "vit_config.json"))
    vit_config.rope = False
    vit_config.num_hidden_layers -= 1
    vae_model, vae_config = load_ae(local_path=os.path.join(model_path, "ae.safetensors"))
    config = BagelConfig(visual_gen=True, visual_und=True, llm_config=llm_config, vit_config=vit_config,
                         vae_config=vae_config, vit_max_num_patch_per_side=70,
                         connector_act="gelu_pytorch_tanh", latent_patch_size=2, max_latent_size=64)
    with init_empty_weights():
        model = Bagel(Qwen2ForCausalLM(llm_config), SiglipVisionModel(vit_config), config)
        model.vit_model.vision_model.embeddings.convert_conv2d_to_linear(vit_config, meta=True)
    tokenizer, new_token_ids, _ = add_special_tokens(Qwen2Tokenizer.from_pretrained(model_path))
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
    model = load_checkpoint_and_dispatch(model, checkpoint=os.path.join(model_path, "ema.safetensors"),
                                         device_map=device_map, offload_buffers=True, offload_folder="offload",
                                         dtype=torch.bfloat16, force_hooks=True).eval()
    return InterleaveInferencer(model=model, vae_model=vae_model, tokenizer=tokenizer,
                                vae_transform=ImageTransform(1024, 512, 16),
                                vit_transform=ImageTransform(980, 224, 14), new_token_ids=new_token_ids)


@register_unified("bagel")
class BagelBackend(UnifiedBackend):
    conditioning = "source_pixels"  # VAE + ViT tokens of the source in context (thoughts.conditioning)
    load_params = ("max_memory_gib",)
    role_params = ("think", "max_new_tokens", "fit", "generate_kwargs", "answer_kwargs")

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.inferencer = self.resident
        p = self.params
        self.think = bool(p.get("think", False))
        self.max_new_tokens = int(p.get("max_new_tokens", 64))
        self.fit = str(p.get("fit", "crop"))
        self.generate_kwargs = {**EDIT_DEFAULTS, **p.get("generate_kwargs", {})}
        self.answer_kwargs = {**ANSWER_DEFAULTS, "max_think_token_n": self.max_new_tokens,
                              **p.get("answer_kwargs", {})}

    @classmethod
    def load(cls, spec: ModelSpec) -> Any:
        return load_official(ensure_model(spec), int(spec.params.get("max_memory_gib", 80)))

    def generate(self, batch: list[GenerateRequest]) -> list[Image.Image]:
        import torch

        out = []
        for req in batch:
            with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
                torch.manual_seed(int(req.seed))
                result = self.inferencer(image=req.image.convert("RGB"), text=req.prompt, think=self.think,
                                         **self.generate_kwargs)
            if not isinstance(result.get("image"), Image.Image):
                raise RuntimeError(f"bagel: inferencer returned no image for prompt {req.prompt[:60]!r}")
            out.append(fit_to_size(result["image"], req.image.size, self.fit))
        return out

    def answer(self, batch: list[UnderstandRequest]) -> list[str]:
        return [self._answer_one(req) for req in batch]

    def _answer_one(self, req: UnderstandRequest) -> str:
        images = [im.convert("RGB") for im in req.images]
        kwargs = {"understanding_output": True, "think": self.think, **self.answer_kwargs}
        if len(images) <= 1:
            text = self.inferencer(image=images[0] if images else None, text=req.prompt, **kwargs).get("text")
        else:
            if not hasattr(self.inferencer, "interleave_inference"):
                raise ValueError("bagel: several images need an inferencer with interleave_inference()")
            outputs = self.inferencer.interleave_inference([*images, req.prompt], **kwargs)
            text = next((o for o in reversed(outputs) if isinstance(o, str)), None)
        if text is None:
            raise RuntimeError(f"bagel: inferencer returned no text for prompt {req.prompt[:60]!r}")
        return text.strip()
