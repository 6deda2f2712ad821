"""Resize to the model's size rules (stride-divisible sides within [min, max]) and normalise to [-1, 1]."""
import numpy as np
import torch
from PIL import Image


class MaxLongEdgeMinShortEdgeResize:
    def __init__(self, max_size, min_size, stride, max_pixels):
        self.max_size, self.min_size, self.stride, self.max_pixels = max_size, min_size, stride, max_pixels

    def _sides(self, w, h, scale):
        snap = lambda v: max(self.stride, int(round(round(v * scale) / self.stride) * self.stride))  # noqa: E731
        return snap(w), snap(h)

    def __call__(self, img, img_num=1):
        w, h = img.size
        scale = max(min(self.max_size / max(w, h), 1.0), self.min_size / min(w, h))
        w, h = self._sides(w, h, scale)
        if w * h > self.max_pixels / img_num:
            w, h = self._sides(w, h, self.max_pixels / img_num / (w * h))
        if max(w, h) > self.max_size:
            w, h = self._sides(w, h, self.max_size / max(w, h))
        return img.resize((w, h), Image.Resampling.BICUBIC)


class ImageTransform:
    def __init__(self, max_image_size, min_image_size, image_stride, max_pixels=14 * 14 * 9 * 1024):
        self.stride = image_stride
        self.resize_transform = MaxLongEdgeMinShortEdgeResize(max_image_size, min_image_size, image_stride,
                                                              max_pixels)

    def __call__(self, img, img_num=1):
        arr = np.asarray(self.resize_transform(img, img_num), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1) * 2.0 - 1.0
