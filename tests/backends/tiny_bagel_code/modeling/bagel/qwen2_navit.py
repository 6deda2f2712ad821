"""A Qwen2-style decoder over packed sequences, with a KV cache per layer and two experts per layer.

Mode "und": every query token uses the understanding weights. Mode "gen": the tokens at
`packed_vae_token_indexes` use the generation weights (`*_moe_gen`), those at `packed_text_indexes` the
understanding ones. Queries of several samples are packed back to back; `packed_query_indexes` and
`packed_key_value_indexes` place the new keys and the cached ones in the merged per-layer sequence.
"""
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flash_attn import flash_attn_varlen_func
from modeling.config import Config


class Qwen2Config(Config):
    defaults = {"hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "qk_norm": True,
                "tie_word_embeddings": False, "layer_module": "Qwen2MoTDecoderLayer", "initializer_range": 0.02}


class NaiveCache:
    def __init__(self, num_layers):
        self.key_cache = {i: None for i in range(num_layers)}
        self.value_cache = {i: None for i in range(num_layers)}

    @property
    def num_layers(self):
        return len(self.key_cache)


@dataclass
class BaseNavitOutputWithPast:
    packed_query_sequence: torch.Tensor
    past_key_values: Any


@dataclass
class Route:
    """Which rows go to which expert."""

    mode: str
    text: torch.Tensor | None = None
    vae: torch.Tensor | None = None

    def __call__(self, und, gen, x):
        if self.mode == "und":
            return und(x)
        a, b = und(x[self.text]), gen(x[self.vae])
        out = a.new_zeros((x.shape[0], *a.shape[1:]))
        out[self.text], out[self.vae] = a, b
        return out


class Qwen2RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        var = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype)


class Qwen2MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Qwen2RotaryEmbedding(nn.Module):
    def __init__(self, head_dim, theta):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim),
                             persistent=False)

    def forward(self, positions, dtype):
        freqs = positions.float()[:, None] * self.inv_freq[None]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


class PackedAttentionMoT(nn.Module):
    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        h, q, kv = cfg.hidden_size, self.num_heads * self.head_dim, self.num_kv * self.head_dim
        for suffix in ("", "_moe_gen"):
            setattr(self, f"q_proj{suffix}", nn.Linear(h, q))
            setattr(self, f"k_proj{suffix}", nn.Linear(h, kv))
            setattr(self, f"v_proj{suffix}", nn.Linear(h, kv))
            setattr(self, f"o_proj{suffix}", nn.Linear(q, h, bias=False))
            setattr(self, f"q_norm{suffix}", Qwen2RMSNorm(self.head_dim, cfg.rms_norm_eps))
            setattr(self, f"k_norm{suffix}", Qwen2RMSNorm(self.head_dim, cfg.rms_norm_eps))

    def forward(self, x, route, rope, query_lens, packed_query_indexes, past_key_values, key_values_lens,
                packed_key_value_indexes, update_past_key_values, is_causal):
        q = route(self.q_proj, self.q_proj_moe_gen, x).view(-1, self.num_heads, self.head_dim)
        k = route(self.k_proj, self.k_proj_moe_gen, x).view(-1, self.num_kv, self.head_dim)
        v = route(self.v_proj, self.v_proj_moe_gen, x).view(-1, self.num_kv, self.head_dim)
        q, k = route(self.q_norm, self.q_norm_moe_gen, q), route(self.k_norm, self.k_norm_moe_gen, k)
        cos, sin = (t[:, None] for t in rope)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        past_k = past_key_values.key_cache[self.layer_idx] if past_key_values is not None else None
        if past_k is not None:  # the new keys slot in after each sample's cached ones
            total = int(query_lens.sum() + key_values_lens.sum())
            keys, values = k.new_zeros((total, *k.shape[1:])), v.new_zeros((total, *v.shape[1:]))
            keys[packed_query_indexes], values[packed_query_indexes] = k, v
            keys[packed_key_value_indexes] = past_k
            values[packed_key_value_indexes] = past_key_values.value_cache[self.layer_idx]
            kv_lens = key_values_lens + query_lens
        else:
            keys, values, kv_lens = k, v, query_lens
        cu = lambda lens: nn.functional.pad(torch.cumsum(lens, 0), (1, 0)).to(torch.int32)  # noqa: E731
        out = flash_attn_varlen_func(q, keys, values, cu_seqlens_q=cu(query_lens), cu_seqlens_k=cu(kv_lens),
                                     max_seqlen_q=int(query_lens.max()), max_seqlen_k=int(kv_lens.max()),
                                     causal=is_causal)
        if update_past_key_values:
            past_key_values.key_cache[self.layer_idx] = keys
            past_key_values.value_cache[self.layer_idx] = values
        return route(self.o_proj, self.o_proj_moe_gen, out.reshape(x.shape[0], -1))


class Qwen2MoTDecoderLayer(nn.Module):
    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.self_attn = PackedAttentionMoT(cfg, layer_idx)
        for suffix in ("", "_moe_gen"):
            setattr(self, f"mlp{suffix}", Qwen2MLP(cfg))
            setattr(self, f"input_layernorm{suffix}", Qwen2RMSNorm(cfg.hidden_size, cfg.rms_norm_eps))
            setattr(self, f"post_attention_layernorm{suffix}", Qwen2RMSNorm(cfg.hidden_size, cfg.rms_norm_eps))

    def forward(self, x, route, rope, **attn):
        h = route(self.input_layernorm, self.input_layernorm_moe_gen, x)
        x = x + self.self_attn(h, route, rope, **attn)
        return x + route(lambda t: self.mlp(self.post_attention_layernorm(t)),
                         lambda t: self.mlp_moe_gen(self.post_attention_layernorm_moe_gen(t)), x)


class Qwen2Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        if cfg.layer_module != "Qwen2MoTDecoderLayer":
            raise ValueError(f"this checkout has only Qwen2MoTDecoderLayer, not {cfg.layer_module!r}")
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Qwen2MoTDecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = Qwen2RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.norm_moe_gen = Qwen2RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(cfg.hidden_size // cfg.num_attention_heads, cfg.rope_theta)


class Qwen2ForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.model = Qwen2Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward_inference(self, packed_query_sequence, query_lens, packed_query_position_ids, packed_query_indexes,
                          past_key_values=None, key_values_lens=None, packed_key_value_indexes=None,
                          update_past_key_values=True, is_causal=True, mode="und", packed_vae_token_indexes=None,
                          packed_text_indexes=None):
        route = Route(mode, packed_text_indexes, packed_vae_token_indexes)
        m, x = self.model, packed_query_sequence
        rope = m.rotary_emb(packed_query_position_ids, x.dtype)
        for layer in m.layers:
            x = layer(x, route, rope, query_lens=query_lens, packed_query_indexes=packed_query_indexes,
                      past_key_values=past_key_values, key_values_lens=key_values_lens,
                      packed_key_value_indexes=packed_key_value_indexes,
                      update_past_key_values=update_past_key_values, is_causal=is_causal)
        return BaseNavitOutputWithPast(route(m.norm, m.norm_moe_gen, x), past_key_values)
