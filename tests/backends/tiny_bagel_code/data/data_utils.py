"""Token ids, image tensors and position ids shared by the model and the inferencer."""
import torch
from PIL import Image

MARKERS = {"bos_token_id": "<|im_start|>", "eos_token_id": "<|im_end|>", "start_of_image": "<|vision_start|>",
           "end_of_image": "<|vision_end|>"}


def add_special_tokens(tokenizer):
    """(tokenizer with the four marker tokens, their ids by role, how many tokens were added)."""
    present = set(tokenizer.all_special_tokens) | set(tokenizer.get_vocab())
    added = tokenizer.add_tokens([t for t in MARKERS.values() if t not in present])
    return tokenizer, {role: tokenizer.convert_tokens_to_ids(t) for role, t in MARKERS.items()}, added


def pil_img2rgb(image):
    """RGB; transparent pixels composited over white."""
    if image.mode == "RGBA" or "transparency" in image.info:
        rgba = image.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return image.convert("RGB")


def patchify(image, patch_size):
    """(C, H, W) -> (H/p * W/p, p * p * C), patches in row-major order, each flattened (row, col, channel)."""
    c, h, w = image.shape
    p = patch_size
    return image.reshape(c, h // p, p, w // p, p).permute(1, 3, 2, 4, 0).reshape(-1, p * p * c)


def get_flattened_position_ids_extrapolate(img_h, img_w, patch_size, max_num_patches_per_side):
    """Each patch's id on a fixed max_num_patches_per_side-wide grid (row * width + col)."""
    rows, cols = torch.arange(img_h // patch_size), torch.arange(img_w // patch_size)
    return (rows[:, None] * max_num_patches_per_side + cols[None, :]).flatten()
