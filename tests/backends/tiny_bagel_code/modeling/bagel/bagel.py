"""The unified model: the decoder plus ViT tokens (understanding) and VAE latent tokens (generation).

Every `prepare_*` lays out several samples packed back to back: sample i's cached context
(`curr_kvlens[i]` rows) comes first, its new query rows right after, then sample i + 1. A text segment is
bos + tokens + eos at consecutive positions; an image segment is start + image tokens + end, all at one
position (the sample's next rope id). `forward_cache_update_*` runs the segment and keeps its keys/values.
"""
import math

import torch
from torch import nn

from data.data_utils import get_flattened_position_ids_extrapolate, patchify
from modeling.config import Config


INIT_STD = 1.0


class BagelConfig(Config):
    defaults = {"visual_gen": True, "visual_und": True, "latent_patch_size": 2, "max_latent_size": 32,
                "vit_max_num_patch_per_side": 70, "connector_act": "gelu_pytorch_tanh", "timestep_shift": 1.0}


def sincos_2d(side, dim):
    """Fixed 2D sin-cos embeddings of a side x side grid: half the channels for rows, half for columns."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64),
                                indexing="ij")
    one = lambda pos: torch.cat([(pos.flatten()[:, None] * omega).sin(), (pos.flatten()[:, None] * omega).cos()], 1)  # noqa: E731
    return torch.cat([one(cols), one(rows)], dim=1).float()


class PositionEmbedding(nn.Module):
    def __init__(self, side, dim):
        super().__init__()
        self.pos_embed = nn.Parameter(sincos_2d(side, dim), requires_grad=False)

    def forward(self, position_ids):
        return self.pos_embed[position_ids]


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
        args = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1).to(self.mlp[0].weight.dtype))


class MLPconnector(nn.Module):
    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(in_dim, out_dim), nn.Linear(out_dim, out_dim)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh"))


def _long(x):
    return torch.tensor(x, dtype=torch.long)


def _int(x):
    return torch.tensor(x, dtype=torch.int)


class Layout:
    """Index bookkeeping of one packed step: per sample, its cached rows, then its query rows."""

    def __init__(self, curr_kvlens):
        self.kv_lens, self.kv_index, self.query_index, self.curr, self.q = list(curr_kvlens), [], [], 0, 0

    def sample(self, i, n_query):
        """Start sample i with n_query new rows; returns (first merged index, first query-local index)."""
        self.kv_index += range(self.curr, self.curr + self.kv_lens[i])
        self.curr += self.kv_lens[i]
        first = (self.curr, self.q)
        self.query_index += range(self.curr, self.curr + n_query)
        self.curr, self.q = self.curr + n_query, self.q + n_query
        return first


class Bagel(nn.Module):
    def __init__(self, language_model, vit_model, config):
        super().__init__()
        llm, vae = config.llm_config, config.vae_config
        self.config, self.language_model, self.vit_model = config, language_model, vit_model
        self.hidden_size = llm.hidden_size
        self.use_moe = "Mo" in llm.layer_module
        self.latent_patch_size = config.latent_patch_size
        self.latent_downsample = vae.downsample * config.latent_patch_size
        self.latent_channel = vae.z_channels
        self.max_latent_size = config.max_latent_size
        self.patch_latent_dim = config.latent_patch_size ** 2 * vae.z_channels
        self.vit_patch_size = config.vit_config.patch_size
        self.vit_max_num_patch_per_side = config.vit_max_num_patch_per_side
        self.time_embedder = TimestepEmbedder(self.hidden_size)
        self.vae2llm = nn.Linear(self.patch_latent_dim, self.hidden_size)
        self.llm2vae = nn.Linear(self.hidden_size, self.patch_latent_dim)
        self.latent_pos_embed = PositionEmbedding(config.max_latent_size, self.hidden_size)
        self.connector = MLPconnector(config.vit_config.hidden_size, self.hidden_size)
        self.vit_pos_embed = PositionEmbedding(config.vit_max_num_patch_per_side, self.hidden_size)
        for module in self.modules():  # random weights large enough that outputs depend on the inputs
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=INIT_STD)

    # ---- text ----

    def prepare_prompts(self, curr_kvlens, curr_rope, prompts, tokenizer, new_token_ids):
        lay, ids, pos, lens, newlens, new_rope = Layout(curr_kvlens), [], [], [], [], []
        for i, prompt in enumerate(prompts):
            toks = [new_token_ids["bos_token_id"], *tokenizer.encode(prompt), new_token_ids["eos_token_id"]]
            lay.sample(i, len(toks))
            ids += toks
            pos += range(curr_rope[i], curr_rope[i] + len(toks))
            lens.append(len(toks))
            newlens.append(curr_kvlens[i] + len(toks))
            new_rope.append(curr_rope[i] + len(toks))
        return ({"text_token_lens": _int(lens), "packed_text_ids": _long(ids), "packed_text_position_ids": _long(pos),
                 "packed_text_indexes": _long(lay.query_index), "packed_key_value_indexes": _long(lay.kv_index),
                 "key_values_lens": _int(curr_kvlens)}, newlens, new_rope)

    def forward_cache_update_text(self, past_key_values, packed_text_ids, packed_text_position_ids, text_token_lens,
                                  packed_text_indexes, packed_key_value_indexes, key_values_lens):
        return self.language_model.forward_inference(
            packed_query_sequence=self.language_model.model.embed_tokens(packed_text_ids), query_lens=text_token_lens,
            packed_query_position_ids=packed_text_position_ids, packed_query_indexes=packed_text_indexes,
            past_key_values=past_key_values, key_values_lens=key_values_lens,
            packed_key_value_indexes=packed_key_value_indexes, update_past_key_values=True, is_causal=True,
            mode="und").past_key_values

    # ---- images: shared layout of start + n tokens + end at one position ----

    def _image_layout(self, curr_kvlens, curr_rope, n_tokens, new_token_ids):
        lay, out = Layout(curr_kvlens), {"text_ids": [], "text_idx": [], "img_idx": [], "pos": [], "seqlens": []}
        for i, n in enumerate(n_tokens):
            _, q = lay.sample(i, n + 2)
            out["text_ids"] += [new_token_ids["start_of_image"], new_token_ids["end_of_image"]]
            out["text_idx"] += [q, q + n + 1]
            out["img_idx"] += range(q + 1, q + 1 + n)
            out["pos"] += [curr_rope[i]] * (n + 2)
            out["seqlens"].append(n + 2)
        common = {"packed_text_ids": _long(out["text_ids"]), "packed_text_indexes": _long(out["text_idx"]),
                  "packed_position_ids": _long(out["pos"]), "packed_seqlens": _int(out["seqlens"]),
                  "packed_indexes": _long(lay.query_index), "packed_key_value_indexes": _long(lay.kv_index),
                  "key_values_lens": _int(curr_kvlens)}
        newlens = [kv + n + 2 for kv, n in zip(curr_kvlens, n_tokens)]
        return common, _long(out["img_idx"]), newlens, [r + 1 for r in curr_rope]

    def _sequence(self, packed_text_ids, packed_text_indexes, packed_seqlens, image_rows, image_indexes):
        text = self.language_model.model.embed_tokens(packed_text_ids)
        seq = text.new_zeros((int(packed_seqlens.sum()), self.hidden_size))
        seq[packed_text_indexes] = text
        seq[image_indexes] = image_rows.to(seq.dtype)
        return seq

    def _forward(self, seq, inp, past_key_values, update, **route):
        return self.language_model.forward_inference(
            packed_query_sequence=seq, query_lens=inp["packed_seqlens"],
            packed_query_position_ids=inp["packed_position_ids"], packed_query_indexes=inp["packed_indexes"],
            past_key_values=past_key_values, key_values_lens=inp["key_values_lens"],
            packed_key_value_indexes=inp["packed_key_value_indexes"], update_past_key_values=update, is_causal=False,
            **route)

    def prepare_vit_images(self, curr_kvlens, curr_rope, images, transforms, new_token_ids):
        tensors = [transforms(img) for img in images]
        tokens = [patchify(t, self.vit_patch_size) for t in tensors]
        pos = [get_flattened_position_ids_extrapolate(t.shape[1], t.shape[2], self.vit_patch_size,
                                                      self.vit_max_num_patch_per_side) for t in tensors]
        common, idx, newlens, new_rope = self._image_layout(curr_kvlens, curr_rope, [len(t) for t in tokens],
                                                            new_token_ids)
        return ({**common, "vit_token_seqlens": _int([len(t) for t in tokens]), "packed_vit_tokens": torch.cat(tokens),
                 "packed_vit_position_ids": torch.cat(pos), "packed_vit_token_indexes": idx}, newlens, new_rope)

    def forward_cache_update_vit(self, past_key_values, packed_vit_tokens, packed_vit_token_indexes,
                                 packed_vit_position_ids, vit_token_seqlens, **inp):
        cu = nn.functional.pad(torch.cumsum(vit_token_seqlens, 0), (1, 0)).to(torch.int32)
        dtype = self.connector.fc1.weight.dtype
        emb = self.vit_model(packed_pixel_values=packed_vit_tokens.to(dtype),
                             packed_flattened_position_ids=packed_vit_position_ids, cu_seqlens=cu,
                             max_seqlen=int(vit_token_seqlens.max()))
        rows = self.connector(emb) + self.vit_pos_embed(packed_vit_position_ids)
        seq = self._sequence(inp["packed_text_ids"], inp["packed_text_indexes"], inp["packed_seqlens"], rows,
                             packed_vit_token_indexes)
        return self._forward(seq, inp, past_key_values, True, mode="und").past_key_values

    def _latent_position_ids(self, h, w):
        return get_flattened_position_ids_extrapolate(h, w, self.latent_downsample, self.max_latent_size)

    def prepare_vae_images(self, curr_kvlens, curr_rope, images, transforms, new_token_ids, timestep=0):
        tensors = [transforms(img) for img in images]
        shapes = [(t.shape[1] // self.latent_downsample, t.shape[2] // self.latent_downsample) for t in tensors]
        common, idx, newlens, new_rope = self._image_layout(curr_kvlens, curr_rope, [h * w for h, w in shapes],
                                                            new_token_ids)
        padded = torch.zeros(len(tensors), 3, max(t.shape[1] for t in tensors), max(t.shape[2] for t in tensors))
        for i, t in enumerate(tensors):
            padded[i, :, :t.shape[1], :t.shape[2]] = t
        return ({**common, "padded_images": padded, "patchified_vae_latent_shapes": shapes,
                 "packed_vae_position_ids": torch.cat([self._latent_position_ids(t.shape[1], t.shape[2])
                                                       for t in tensors]),
                 "packed_timesteps": torch.tensor([timestep]), "packed_vae_token_indexes": idx}, newlens, new_rope)

    def _latent_rows(self, x_t, timesteps, position_ids):
        dtype = self.vae2llm.weight.dtype
        return self.vae2llm(x_t.to(dtype)) + self.time_embedder(timesteps) + self.latent_pos_embed(position_ids)

    def forward_cache_update_vae(self, vae_model, past_key_values, padded_images, patchified_vae_latent_shapes,
                                 packed_vae_position_ids, packed_timesteps, packed_vae_token_indexes, **inp):
        p, c = self.latent_patch_size, self.latent_channel
        latents = vae_model.encode(padded_images)
        packed = torch.cat([z[:, :h * p, :w * p].reshape(c, h, p, w, p).permute(1, 3, 2, 4, 0).reshape(-1, p * p * c)
                            for z, (h, w) in zip(latents, patchified_vae_latent_shapes)])
        rows = self._latent_rows(packed, packed_timesteps, packed_vae_position_ids)
        seq = self._sequence(inp["packed_text_ids"], inp["packed_text_indexes"], inp["packed_seqlens"], rows,
                             packed_vae_token_indexes)
        route = {"mode": "gen", "packed_text_indexes": inp["packed_text_indexes"],
                 "packed_vae_token_indexes": packed_vae_token_indexes}
        return self._forward(seq, inp, past_key_values, True, **route).past_key_values

    # ---- image generation: flow matching from noise, CFG over text-free and image-free contexts ----

    def prepare_vae_latent(self, curr_kvlens, curr_rope, image_sizes, new_token_ids):
        shapes = [(h // self.latent_downsample, w // self.latent_downsample) for h, w in image_sizes]
        common, idx, _, _ = self._image_layout(curr_kvlens, curr_rope, [h * w for h, w in shapes], new_token_ids)
        noises = [torch.randn(h * w, self.patch_latent_dim) for h, w in shapes]
        return {**common, "packed_init_noises": torch.cat(noises), "packed_vae_token_indexes": idx,
                "packed_vae_position_ids": torch.cat([self._latent_position_ids(h, w) for h, w in image_sizes])}

    def prepare_vae_latent_cfg(self, curr_kvlens, curr_rope, image_sizes):
        n_tokens = [(h // self.latent_downsample) * (w // self.latent_downsample) for h, w in image_sizes]
        lay = Layout(curr_kvlens)
        for i, n in enumerate(n_tokens):
            lay.sample(i, n + 2)
        return {"cfg_packed_position_ids": _long([r for r, n in zip(curr_rope, n_tokens) for _ in range(n + 2)]),
                "cfg_key_values_lens": _int(curr_kvlens), "cfg_packed_query_indexes": _long(lay.query_index),
                "cfg_packed_key_value_indexes": _long(lay.kv_index)}

    def generate_image(self, packed_text_ids, packed_text_indexes, packed_init_noises, packed_vae_position_ids,
                       packed_vae_token_indexes, packed_seqlens, packed_position_ids, packed_indexes, past_key_values,
                       key_values_lens, packed_key_value_indexes, num_timesteps=24, timestep_shift=1.0,
                       cfg_renorm_min=0.0, cfg_renorm_type="global", cfg_interval=(0.0, 1.0), cfg_text_scale=1.0,
                       cfg_img_scale=1.0, enable_taylorseer=False, **cfg_contexts):
        if enable_taylorseer:
            raise NotImplementedError("this checkout has no TaylorSeer cache")
        main = {"packed_seqlens": packed_seqlens, "packed_position_ids": packed_position_ids,
                "packed_indexes": packed_indexes, "key_values_lens": key_values_lens,
                "packed_key_value_indexes": packed_key_value_indexes, "past_key_values": past_key_values}
        contexts = {"text": self._cfg_context("text", cfg_contexts, packed_seqlens),
                    "img": self._cfg_context("img", cfg_contexts, packed_seqlens)}
        t = torch.linspace(1, 0, num_timesteps)
        t = timestep_shift * t / (1 + (timestep_shift - 1) * t)
        x = packed_init_noises
        for step in range(num_timesteps - 1):
            inside = cfg_interval[0] < t[step] <= cfg_interval[1]
            scales = (cfg_text_scale, cfg_img_scale) if inside else (1.0, 1.0)
            rows = self._latent_rows(x, t[step].repeat(len(x)), packed_vae_position_ids)
            seq = self._sequence(packed_text_ids, packed_text_indexes, packed_seqlens, rows, packed_vae_token_indexes)
            route = {"mode": "gen", "packed_vae_token_indexes": packed_vae_token_indexes,
                     "packed_text_indexes": packed_text_indexes}
            v = {"cond": self._velocity(seq, main, route, packed_vae_token_indexes)}
            for name, scale in zip(("text", "img"), scales):
                if scale > 1.0:  # that CFG pass is skipped outside cfg_interval
                    v[name] = self._velocity(seq, contexts[name], route, packed_vae_token_indexes)
            x = x - combine_cfg(v, *scales, cfg_renorm_type, cfg_renorm_min).to(x.dtype) * (t[step] - t[step + 1])
        return x.split((packed_seqlens - 2).tolist())

    @staticmethod
    def _cfg_context(name, given, packed_seqlens):
        g = lambda key: given.get(f"cfg_{name}_{key}")  # noqa: E731
        return {"packed_seqlens": packed_seqlens, "packed_position_ids": g("packed_position_ids"),
                "packed_indexes": g("packed_query_indexes"), "key_values_lens": g("key_values_lens"),
                "packed_key_value_indexes": g("packed_key_value_indexes"), "past_key_values": g("past_key_values")}

    def _velocity(self, seq, ctx, route, vae_indexes):
        out = self._forward(seq, ctx, ctx["past_key_values"], False, **route)
        return self.llm2vae(out.packed_query_sequence)[vae_indexes]

    # ---- text generation ----

    def prepare_start_tokens(self, curr_kvlens, curr_rope, new_token_ids):
        return {"packed_start_tokens": _long([new_token_ids["bos_token_id"]] * len(curr_kvlens)),
                "packed_query_position_ids": _long(curr_rope), "key_values_lens": _int(curr_kvlens),
                "packed_key_value_indexes": _long(list(range(sum(curr_kvlens))))}

    def generate_text(self, past_key_values, packed_key_value_indexes, key_values_lens, packed_start_tokens,
                      packed_query_position_ids, max_length, do_sample=False, temperature=1.0, end_token_id=None):
        """Tokens from the start tokens on, (steps, samples); stops when sample 0 emits end_token_id."""
        lm, tokens, out = self.language_model, packed_start_tokens, []
        kv_lens, pos = key_values_lens, packed_query_position_ids
        for _ in range(max_length):
            out.append(tokens)
            lay = Layout(kv_lens.tolist())
            for i in range(len(kv_lens)):
                lay.sample(i, 1)
            hidden = lm.forward_inference(
                packed_query_sequence=lm.model.embed_tokens(tokens), query_lens=torch.ones_like(kv_lens),
                packed_query_position_ids=pos, packed_query_indexes=_long(lay.query_index),
                past_key_values=past_key_values, key_values_lens=kv_lens,
                packed_key_value_indexes=_long(lay.kv_index), update_past_key_values=True, is_causal=True,
                mode="und").packed_query_sequence
            logits = lm.lm_head(hidden)
            if do_sample:
                tokens = torch.multinomial(torch.softmax(logits / temperature, -1), 1).squeeze(1)
            else:
                tokens = logits.argmax(-1)
            kv_lens, pos = kv_lens + 1, pos + 1
            if end_token_id is not None and int(tokens[0]) == end_token_id:
                break
        return torch.stack(out)


def combine_cfg(v, text_scale, img_scale, renorm_type, renorm_min):
    """Velocity with text CFG (against the text-free context) then image CFG (against the image-free one),
    rescaled so its norm (per token, or over all tokens for "global") does not exceed the conditional's."""
    cond = v["cond"]
    if "text" not in v:
        return cond
    norm = (lambda x: x.norm()) if renorm_type == "global" else (lambda x: x.norm(dim=-1, keepdim=True))  # noqa: E731
    if renorm_type not in ("global", "channel", "text_channel"):
        raise NotImplementedError(f"cfg_renorm_type {renorm_type!r}")
    guided = v["text"] + text_scale * (cond - v["text"])
    if renorm_type == "text_channel":  # renormalise the text-guided velocity before image CFG
        guided = guided * (norm(cond) / (norm(guided) + 1e-8)).clamp(min=renorm_min, max=1.0)
        return v["img"] + img_scale * (guided - v["img"]) if "img" in v else guided
    if "img" in v:
        guided = v["img"] + img_scale * (guided - v["img"])
    return guided * (norm(cond) / (norm(guided) + 1e-8)).clamp(min=renorm_min, max=1.0)
