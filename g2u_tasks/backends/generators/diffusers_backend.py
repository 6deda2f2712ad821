"""The `diffusers` generator: any image-edit `DiffusionPipeline`, loaded once, called in batches.

`ModelSpec.model` is a local folder or hub id; `ModelSpec.params` (all optional):
  dtype                 "float32" | "float16" | "bfloat16" | "auto" (default: the checkpoint's own)
  device                default "cuda" when available, else "cpu"
  num_inference_steps   passed when set
  guidance_scale        passed when set
  image_guidance_scale  passed when set and the pipeline takes it (InstructPix2Pix, OmniGen)
  negative_prompt       passed when set and the pipeline takes it
  resolution            target long side in px; or
  area                  target pixel count (e.g. 1048576). Neither: the source's own size.
  batch_size            most items per pipeline call (default 4; 1 for OmniGen, see CallStyle)
  auto_resize           Kontext's `_auto_resize` (default False: condition on the computed size)
  call_kwargs           further `__call__` kwargs, passed as-is (each must be in its signature)
  encode_once           default true: a source edited by several families in one call is VAE-encoded
                        once and its posterior given to each request (`EncodeOnce`)
  channels_last         default false: the denoiser and the VAE in channels-last memory format
  fuse_qkv              default false: `pipe.fuse_qkv_projections()` (one projection for q, k and v)
  compile               default false: `torch.compile` of the denoiser (`compile_mode`: e.g.
                        "max-autotune-no-cudagraphs"; default torch's own)
  compile_vae           default false: `torch.compile` of the VAE's decode (same `compile_mode`)
  compile_tuning        default false: Inductor's convolution settings for UNets (1x1 convolutions
                        as matmuls, coordinate-descent tuning, no epilogue fusion); process-wide
The speed options change the kernels, so the images may differ in their last bits: as params they
enter the thought key, which makes them another generator version.

The output keeps the source's aspect ratio: the source is resized to a target size that is a
multiple of the pipeline's size step (its image processor's `vae_scale_factor`: 8 for SD, 16 for
FLUX/Qwen/OmniGen), and that size is passed as `height`/`width` (and `max_area`) when accepted.
Each request gets its own `torch.Generator(device).manual_seed(seed)`, so an item's output does
not depend on which batch it ran in. A pipeline is not thread-safe (its scheduler keeps the step
index on the object): the registry serialises every call to a resident pipeline.
"""
from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from functools import partial

from PIL import Image

from g2u_tasks.backends.common import default_device, fit_to_size, parse_dtype, split_on_oom
from g2u_tasks.backends.generators.base import GenerateRequest, register_generator
from g2u_tasks.config import ModelSpec

log = logging.getLogger(__name__)

# Every param this backend reads (the registry refuses others before loading). torch is imported
# inside the methods so that checking a config does not load it.
KNOWN_PARAMS = frozenset({
    "dtype", "device", "num_inference_steps", "guidance_scale", "image_guidance_scale",
    "negative_prompt", "resolution", "area", "batch_size", "auto_resize", "call_kwargs",
    "encode_once", "channels_last", "fuse_qkv", "compile", "compile_mode", "compile_vae", "compile_tuning",
})
# Inductor settings diffusers' speed guide gives for UNets (`compile_tuning`).
INDUCTOR_TUNING = {"conv_1x1_as_mm": True, "coordinate_descent_tuning": True, "epilogue_fusion": False,
                   "coordinate_descent_check_all_directions": True}
# Passed only when set and, for all but the first two, when the pipeline's __call__ takes them.
_OPTIONAL_CALL_PARAMS = ("num_inference_steps", "guidance_scale", "image_guidance_scale")

@dataclass(frozen=True)
class CallStyle:
    """How a pipeline class takes the source image and the edit prompt."""

    image_arg: str = "image"
    nested_images: bool = False  # one list of images per prompt: [[img], [img], ...]
    prompt_prefix: str = ""  # text that points the prompt at the source image
    renames: tuple[tuple[str, str], ...] = ()  # (our param, the pipeline's kwarg)
    # The pipeline also draws from torch's global RNG, which per-item generators can't reach:
    # run one item per call, under a forked global RNG seeded with the item's seed.
    global_rng: bool = False

    def kwarg(self, param: str) -> str:
        return dict(self.renames).get(param, param)


def call_styles() -> dict[type, CallStyle]:
    """The one place that lists pipeline classes with their own input convention.

    Every other pipeline (InstructPix2Pix, FLUX Kontext, Qwen-Image-Edit, ...) takes
    `image=[PIL, ...]` and `prompt=[str, ...]`: the default `CallStyle()`.
    """
    from diffusers import OmniGenPipeline

    return {
        # OmniGen reads images referenced in the prompt and passed as `input_images`; it encodes
        # them with `latent_dist.sample()` and no generator (diffusers 0.42).
        OmniGenPipeline: CallStyle(
            image_arg="input_images",
            nested_images=True,
            prompt_prefix="<img><|image_1|></img> ",
            renames=(("image_guidance_scale", "img_guidance_scale"),),
            global_rng=True,
        ),
    }


def style_for(pipeline_cls: type) -> CallStyle:
    styles = call_styles()
    for cls in pipeline_cls.__mro__:
        if cls in styles:
            return styles[cls]
    return CallStyle()


def target_size(
    src_w: int, src_h: int, step: int, resolution: int | None = None, area: int | None = None
) -> tuple[int, int]:
    """(width, height), multiples of `step`, with the source's aspect ratio."""
    if resolution is not None and area is not None:
        raise ValueError("diffusers generator: set `resolution` (long side) or `area`, not both")
    if resolution is not None:
        scale = resolution / max(src_w, src_h)
    elif area is not None:
        scale = math.sqrt(area / (src_w * src_h))
    else:
        scale = 1.0
    return tuple(max(step, math.floor(v * scale / step + 0.5) * step) for v in (src_w, src_h))


def _accepted_kwargs(fn) -> set[str]:
    """Named parameters only: a catch-all **kwargs does not count as accepting anything."""
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {n for n, p in inspect.signature(fn).parameters.items() if p.kind not in skip}


class DiffusersGenerator:
    conditioning = "source_pixels"  # image-edit pipelines take the source image (thoughts.conditioning)

    def __init__(self, spec: ModelSpec):
        import torch
        from diffusers import DiffusionPipeline

        params = dict(spec.params)
        if not spec.model:
            raise ValueError("diffusers generator needs `model` (a local folder or hub id)")
        self.name = f"diffusers:{spec.model}"
        self.device = torch.device(default_device(params.get("device")))

        load_kwargs = {"revision": spec.revision}
        dtype = parse_dtype(params.get("dtype"), "diffusers generator")
        if dtype not in (None, "auto"):  # auto: the checkpoint's own
            load_kwargs["dtype"] = dtype  # diffusers 0.42: `torch_dtype` is deprecated
        if spec.trust_remote_code:
            load_kwargs["trust_remote_code"] = True
        self.pipe = DiffusionPipeline.from_pretrained(spec.model, **load_kwargs).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self._speed_options(params)
        vae = getattr(self.pipe, "vae", None)
        self.encode_once = EncodeOnce(vae) if vae is not None and params.get("encode_once", True) else None

        self.style = style_for(type(self.pipe))
        self.accepted = _accepted_kwargs(self.pipe.__call__)
        cls_name = type(self.pipe).__name__
        if self.style.image_arg not in self.accepted:
            raise ValueError(f"{cls_name}.__call__ takes no {self.style.image_arg!r}: not an image-edit pipeline")

        self.size_step = self._size_step()
        self.resolution = params.get("resolution")
        self.area = params.get("area")
        self.batch_size = int(params.get("batch_size", 4))
        if self.batch_size < 1:
            raise ValueError(f"diffusers generator: batch_size must be >= 1, got {self.batch_size}")
        self.negative_prompt = self._if_accepted("negative_prompt", params.get("negative_prompt"))
        self.fixed_kwargs = {"output_type": "pil"}
        for p in _OPTIONAL_CALL_PARAMS:
            if self._if_accepted(p, params.get(p)) is not None:
                self.fixed_kwargs[self.style.kwarg(p)] = params[p]
        if "_auto_resize" in self.accepted:
            self.fixed_kwargs["_auto_resize"] = bool(params.get("auto_resize", False))
        extra = dict(params.get("call_kwargs") or {})
        rejected = set(extra) - self.accepted
        if rejected:
            raise ValueError(f"{cls_name}.__call__ does not take call_kwargs {sorted(rejected)}")
        self.fixed_kwargs.update(extra)

    def _speed_options(self, params: dict) -> None:
        import torch

        name = "unet" if getattr(self.pipe, "unet", None) is not None else "transformer"
        denoiser = getattr(self.pipe, name, None)
        if params.get("channels_last"):
            for module in (denoiser, getattr(self.pipe, "vae", None)):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        if params.get("fuse_qkv"):
            if not hasattr(self.pipe, "fuse_qkv_projections"):
                raise ValueError(f"{type(self.pipe).__name__} has no fuse_qkv_projections: drop `fuse_qkv`")
            self.pipe.fuse_qkv_projections()
        if params.get("compile_tuning"):
            import torch._inductor.config as inductor

            for key, value in INDUCTOR_TUNING.items():
                setattr(inductor, key, value)
        mode = params.get("compile_mode")
        if params.get("compile"):
            if denoiser is None:
                raise ValueError(f"{type(self.pipe).__name__} has no unet or transformer to compile")
            setattr(self.pipe, name, torch.compile(denoiser, mode=mode))
        if params.get("compile_vae"):
            vae = getattr(self.pipe, "vae", None)
            if vae is None:
                raise ValueError(f"{type(self.pipe).__name__} has no vae to compile")
            vae.decode = torch.compile(vae.decode, mode=mode)

    def _if_accepted(self, param: str, value):
        if value is None:
            return None
        if self.style.kwarg(param) not in self.accepted:
            log.warning("%s: %s does not take %r; ignored", self.name, type(self.pipe).__name__, param)
            return None
        return value

    def _size_step(self) -> int:
        """The pipeline's own size granularity (VAE factor x patch packing)."""
        processor = getattr(self.pipe, "image_processor", None)
        step = getattr(getattr(processor, "config", None), "vae_scale_factor", None)
        return int(step or getattr(self.pipe, "vae_scale_factor", None) or 8)

    def target_size(self, image: Image.Image) -> tuple[int, int]:
        return target_size(image.width, image.height, self.size_step, self.resolution, self.area)

    def generate(self, batch: list[GenerateRequest]) -> list[Image.Image]:
        out: list[Image.Image | None] = [None] * len(batch)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, req in enumerate(batch):
            groups.setdefault(self.target_size(req.image), []).append(i)
        step = 1 if self.style.global_rng else self.batch_size
        for size, idxs in groups.items():
            for start in range(0, len(idxs), step):
                chunk = idxs[start : start + step]
                images = split_on_oom(partial(self._call, size=size), [batch[i] for i in chunk], self.name)
                for i, img in zip(chunk, images):
                    out[i] = img
        return out

    def _call(self, reqs: list[GenerateRequest], size: tuple[int, int]) -> list[Image.Image]:
        import torch

        w, h = size
        images = [fit_to_size(r.image, size, "stretch") for r in reqs]
        kwargs = dict(self.fixed_kwargs)
        kwargs["prompt"] = [self.style.prompt_prefix + r.prompt for r in reqs]
        kwargs[self.style.image_arg] = [[im] for im in images] if self.style.nested_images else images
        # Fresh generators on every call: a retried half must not see consumed random state.
        kwargs["generator"] = [torch.Generator(self.device).manual_seed(r.seed) for r in reqs]
        if self.negative_prompt is not None:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(reqs)  # a str breaks some batch paths
        for key, value in (("height", h), ("width", w), ("max_area", w * h), ("max_input_image_size", max(w, h))):
            if key in self.accepted:
                kwargs[key] = value
        if self.encode_once is not None:
            self.encode_once.sources = [id(r.image) for r in reqs]
        try:
            if self.style.global_rng:
                cuda = [self.device.index or 0] if self.device.type == "cuda" else []
                with torch.random.fork_rng(devices=cuda):
                    torch.manual_seed(reqs[0].seed)
                    result = self.pipe(**kwargs).images
            else:
                result = self.pipe(**kwargs).images
        finally:
            if self.encode_once is not None:
                self.encode_once.sources = None
        if len(result) != len(reqs):
            raise RuntimeError(f"{self.name}: asked for {len(reqs)} images, got {len(result)}")
        return [im.convert("RGB") for im in result]


class EncodeOnce:
    """Stands in for `vae.encode` during one pipeline call: when the call encodes one row per request
    and requests share a source (one image object: an item's families in one batch), each source is
    encoded once and its posterior (a Gaussian, so any later sampling stays per request) copied to
    the requests' rows. Other calls (one row at a time, as FLUX Kontext with per-request generators
    does) go through unchanged."""

    def __init__(self, vae):
        self.encode = vae.encode
        self.sources: list[int] | None = None  # per request, its source image's identity
        vae.encode = self

    def __call__(self, x, *args, **kwargs):
        import torch

        sources = self.sources
        if sources is None or x.shape[0] != len(sources) or len(set(sources)) == len(sources):
            return self.encode(x, *args, **kwargs)
        first: dict[int, int] = {}  # source -> index of its first request, in order of appearance
        for i, src in enumerate(sources):
            first.setdefault(src, i)
        unique = {src: k for k, src in enumerate(first)}
        out = self.encode(x[list(first.values())], *args, **kwargs)
        dist = out.latent_dist if hasattr(out, "latent_dist") else out[0]
        rows = torch.tensor([unique[src] for src in sources], device=dist.parameters.device)
        shared = type(dist)(dist.parameters.index_select(0, rows), deterministic=dist.deterministic)
        if hasattr(out, "latent_dist"):
            out.latent_dist = shared
            return out
        return (shared, *out[1:])


register_generator("diffusers", KNOWN_PARAMS)(DiffusersGenerator)
