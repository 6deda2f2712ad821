"""A tiny convolutional VAE: 16x downsampling to a Gaussian latent, sampled on encode; and its decoder."""
from dataclasses import dataclass

import torch
from safetensors.torch import load_file
from torch import nn


@dataclass
class AutoEncoderParams:
    downsample: int = 16  # image sides are multiples of 16: the latent is exactly side / 16
    z_channels: int = 16  # as the official VAE: the model-side latent projections keep the official shapes
    ch: int = 8
    scale_factor: float = 0.5
    shift_factor: float = 0.1


class AutoEncoder(nn.Module):
    def __init__(self, p: AutoEncoderParams):
        super().__init__()
        self.params = p
        steps = p.downsample.bit_length() - 1  # stride-2 steps
        down = [nn.Conv2d(3, p.ch, 3, padding=1)]
        for _ in range(steps):
            down += [nn.SiLU(), nn.Conv2d(p.ch, p.ch, 3, stride=2, padding=1)]
        self.encoder = nn.Sequential(*down, nn.SiLU(), nn.Conv2d(p.ch, 2 * p.z_channels, 3, padding=1))
        up = [nn.Conv2d(p.z_channels, p.ch, 3, padding=1)]
        for _ in range(steps):
            up += [nn.SiLU(), nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(p.ch, p.ch, 3, padding=1)]
        self.decoder = nn.Sequential(*up, nn.SiLU(), nn.Conv2d(p.ch, 3, 3, padding=1))

    def encode(self, x):
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)  # a posterior sample (global RNG)
        return self.params.scale_factor * (z - self.params.shift_factor)

    def decode(self, z):
        return self.decoder(z / self.params.scale_factor + self.params.shift_factor)


def load_ae(local_path):
    """(the VAE with the weights at `local_path`, or freshly initialised when None; its params)."""
    params = AutoEncoderParams()
    ae = AutoEncoder(params)
    if local_path is not None:
        ae.load_state_dict(load_file(local_path))
    return ae, params
