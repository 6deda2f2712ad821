"""One request at a time: a KV context built input by input, then text or an image from it."""
from copy import deepcopy

import torch
from PIL import Image

from data.data_utils import pil_img2rgb
from modeling.bagel.qwen2_navit import NaiveCache

# Think-mode system prompts: reason (answers) or plan (edits) inside <think></think> first.
VLM_THINK_SYSTEM_PROMPT = "Reason step by step inside <think> </think>, then give the answer."
GEN_THINK_SYSTEM_PROMPT = "Plan the picture inside <think> </think>, then draw it."


class InterleaveInferencer:
    def __init__(self, model, vae_model, tokenizer, vae_transform, vit_transform, new_token_ids):
        self.model, self.vae_model, self.tokenizer = model, vae_model, tokenizer
        self.vae_transform, self.vit_transform, self.new_token_ids = vae_transform, vit_transform, new_token_ids

    def init_gen_context(self):
        return {"kv_lens": [0], "ropes": [0],
                "past_key_values": NaiveCache(self.model.config.llm_config.num_hidden_layers)}

    def _update(self, ctx, inp, lens, ropes, forward):
        return {"kv_lens": lens, "ropes": ropes, "past_key_values": forward(ctx["past_key_values"], **inp)}

    @torch.no_grad()
    def update_context_text(self, text, gen_context):
        ctx = gen_context
        inp, lens, ropes = self.model.prepare_prompts(curr_kvlens=ctx["kv_lens"], curr_rope=ctx["ropes"],
                                                      prompts=[text], tokenizer=self.tokenizer,
                                                      new_token_ids=self.new_token_ids)
        return self._update(gen_context, inp, lens, ropes, self.model.forward_cache_update_text)

    @torch.no_grad()
    def update_context_image(self, image, gen_context, vae=True, vit=True):
        m, ctx = self.model, gen_context
        if vae:
            inp, lens, ropes = m.prepare_vae_images(curr_kvlens=ctx["kv_lens"], curr_rope=ctx["ropes"], images=[image],
                                                    transforms=self.vae_transform, new_token_ids=self.new_token_ids)
            ctx = self._update(ctx, inp, lens, ropes, lambda cache, **kw: m.forward_cache_update_vae(
                self.vae_model, cache, **kw))
        if vit:
            inp, lens, ropes = m.prepare_vit_images(curr_kvlens=ctx["kv_lens"], curr_rope=ctx["ropes"], images=[image],
                                                    transforms=self.vit_transform, new_token_ids=self.new_token_ids)
            ctx = self._update(ctx, inp, lens, ropes, m.forward_cache_update_vit)
        return ctx

    @torch.no_grad()
    def gen_image(self, image_shape, gen_context, cfg_text_scale=4.0, cfg_img_scale=1.5, cfg_text_precontext=None,
                  cfg_img_precontext=None, cfg_interval=(0.4, 1.0), cfg_renorm_min=0.0, cfg_renorm_type="global",
                  num_timesteps=50, timestep_shift=3.0, enable_taylorseer=False):
        m, ctx = self.model, gen_context
        inp = m.prepare_vae_latent(curr_kvlens=ctx["kv_lens"], curr_rope=ctx["ropes"], image_sizes=[image_shape],
                                   new_token_ids=self.new_token_ids)
        cfg = {}
        for name, pre in (("text", cfg_text_precontext), ("img", cfg_img_precontext)):
            c = m.prepare_vae_latent_cfg(curr_kvlens=pre["kv_lens"], curr_rope=pre["ropes"], image_sizes=[image_shape])
            cfg.update({f"cfg_{name}_{k[4:]}": v for k, v in c.items()})
            cfg[f"cfg_{name}_past_key_values"] = pre["past_key_values"]
        latent = m.generate_image(past_key_values=ctx["past_key_values"], num_timesteps=num_timesteps,
                                  cfg_text_scale=cfg_text_scale, cfg_img_scale=cfg_img_scale, cfg_interval=cfg_interval,
                                  cfg_renorm_min=cfg_renorm_min, cfg_renorm_type=cfg_renorm_type,
                                  timestep_shift=timestep_shift, enable_taylorseer=enable_taylorseer, **inp, **cfg)
        return self.decode_image(latent[0], image_shape)

    def decode_image(self, latent, image_shape):
        m = self.model
        h, w = image_shape[0] // m.latent_downsample, image_shape[1] // m.latent_downsample
        p, c = m.latent_patch_size, m.latent_channel
        z = latent.reshape(1, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(1, c, h * p, w * p)
        pixels = ((self.vae_model.decode(z) * 0.5 + 0.5).clamp(0, 1)[0].permute(1, 2, 0) * 255).to(torch.uint8)
        return Image.fromarray(pixels.cpu().numpy())

    @torch.no_grad()
    def gen_text(self, gen_context, max_length=500, do_sample=True, temperature=1.0):
        ctx = deepcopy(gen_context)  # decoding extends the cache; the caller's context stays as it was
        inp = self.model.prepare_start_tokens(ctx["kv_lens"], ctx["ropes"], self.new_token_ids)
        tokens = self.model.generate_text(past_key_values=ctx["past_key_values"], max_length=max_length,
                                          do_sample=do_sample, temperature=temperature,
                                          end_token_id=self.new_token_ids["eos_token_id"], **inp)
        text = self.tokenizer.decode(tokens[:, 0])
        return text.split("<|im_end|>")[0].split("<|im_start|>")[1]

    @torch.no_grad()
    def interleave_inference(self, input_lists, think=False, understanding_output=False, max_think_token_n=1000,
                             do_sample=False, text_temperature=0.3, cfg_text_scale=3.0, cfg_img_scale=1.5,
                             cfg_interval=(0.4, 1.0), timestep_shift=3.0, num_timesteps=50, cfg_renorm_min=0.0,
                             cfg_renorm_type="global", image_shapes=(1024, 1024), enable_taylorseer=False):
        """Inputs in order (text, or an image: VAE tokens unless understanding, then ViT tokens); then the
        answer text, or (think mode: a plan, then) an image. Text CFG drops the last text input, image CFG
        every image."""
        gen = self.init_gen_context()
        cfg_text, cfg_img = deepcopy(gen), deepcopy(gen)
        if think:
            system = VLM_THINK_SYSTEM_PROMPT if understanding_output else GEN_THINK_SYSTEM_PROMPT
            gen, cfg_img = self.update_context_text(system, gen), self.update_context_text(system, cfg_img)
        for x in input_lists:
            if isinstance(x, str):
                cfg_text = deepcopy(gen)
                gen, cfg_img = self.update_context_text(x, gen), self.update_context_text(x, cfg_img)
            elif isinstance(x, Image.Image):
                x = self.vae_transform.resize_transform(pil_img2rgb(x))
                gen = self.update_context_image(x, gen, vae=not understanding_output)
                image_shapes, cfg_text = x.size[::-1], deepcopy(gen)
            else:
                raise ValueError(f"unsupported input {type(x).__name__}")
        text = lambda: self.gen_text(gen, max_length=max_think_token_n, do_sample=do_sample,  # noqa: E731
                                     temperature=text_temperature)
        if understanding_output:
            return [text()]
        out = []
        if think:
            out.append(text())
            gen = self.update_context_text(out[-1], gen)
        out.append(self.gen_image(image_shapes, gen, cfg_text_scale=cfg_text_scale, cfg_img_scale=cfg_img_scale,
                                  cfg_text_precontext=cfg_text, cfg_img_precontext=cfg_img, cfg_interval=cfg_interval,
                                  cfg_renorm_min=cfg_renorm_min, cfg_renorm_type=cfg_renorm_type,
                                  num_timesteps=num_timesteps, timestep_shift=timestep_shift,
                                  enable_taylorseer=enable_taylorseer))
        return out

    def __call__(self, image=None, text=None, **kwargs):
        """{"image": ..., "text": ...} for one image and/or one text."""
        out = {"image": None, "text": None}
        inputs = [x for x in (image, text) if x is not None]
        if not inputs:
            return out
        for x in self.interleave_inference(inputs, **kwargs):
            out["image" if isinstance(x, Image.Image) else "text"] = x
        return out
