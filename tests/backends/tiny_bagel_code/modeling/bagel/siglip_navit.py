"""A SigLIP-style ViT over packed patch sequences (several images back to back, cu_seqlens apart)."""
import torch
from torch import nn

from flash_attn import flash_attn_varlen_func
from modeling.config import Config


class SiglipVisionConfig(Config):
    defaults = {"num_channels": 3, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "rope": False}


class SiglipVisionEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.patch_size, self.embed_dim = cfg.patch_size, cfg.hidden_size
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, cfg.patch_size)
        self.position_embedding = nn.Embedding((cfg.image_size // cfg.patch_size) ** 2, cfg.hidden_size)

    def convert_conv2d_to_linear(self, cfg, meta=False):
        """The patch conv as a linear map over flattened (row, col, channel) patches."""
        linear = nn.Linear(cfg.num_channels * self.patch_size ** 2, self.embed_dim, device="meta" if meta else None)
        if not meta:
            with torch.no_grad():
                linear.weight.copy_(self.patch_embedding.weight.permute(0, 2, 3, 1).reshape(self.embed_dim, -1))
                linear.bias.copy_(self.patch_embedding.bias)
        self.patch_embedding = linear

    def forward(self, packed_pixel_values, packed_flattened_position_ids):
        return self.patch_embedding(packed_pixel_values) + self.position_embedding(packed_flattened_position_ids)


class SiglipAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, name, nn.Linear(cfg.hidden_size, cfg.hidden_size))

    def forward(self, x, cu_seqlens, max_seqlen):
        q, k, v = (p(x).view(x.shape[0], self.num_heads, -1) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens, max_seqlen_q=max_seqlen,
                                     max_seqlen_k=max_seqlen, causal=False)
        return self.out_proj(out.reshape(x.shape[0], -1))


class SiglipMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh"))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn, self.mlp = SiglipAttention(cfg), SiglipMLP(cfg)
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x, cu_seqlens, max_seqlen):
        x = x + self.self_attn(self.layer_norm1(x), cu_seqlens, max_seqlen)
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))


class SiglipVisionTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        if cfg.rope:
            raise ValueError("this checkout's ViT has learned positions only (rope: false)")
        self.embeddings = SiglipVisionEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class SiglipVisionModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.vision_model = SiglipVisionTransformer(cfg)

    def forward(self, packed_pixel_values, packed_flattened_position_ids, cu_seqlens, max_seqlen):
        vm = self.vision_model
        x = vm.embeddings(packed_pixel_values, packed_flattened_position_ids)
        for layer in vm.encoder.layers:
            x = layer(x, cu_seqlens, max_seqlen)
        return vm.post_layernorm(x)
