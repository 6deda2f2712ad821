"""Write a BAGEL weights folder with random weights, built from configs with the official code.

    python perf/bagel_random.py --code .bagel/Bagel --out .bagel/random-7b --shape 7b   # BAGEL-7B-MoT shapes
    python perf/bagel_random.py --code .bagel/Bagel --out .bagel/random-tiny --shape tiny

The folder has what a downloaded BAGEL-7B-MoT has (llm_config.json, vit_config.json, Qwen2 tokenizer
files, ae.safetensors, ema.safetensors) plus a g2u model card saying the weights are random; it loads
through the `bagel` backend exactly like the real weights. The tokenizer is a small byte-level BPE
trained here (the real Qwen2 vocabulary cannot be downloaded); ids stay below the model's vocab size.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from g2u_tasks.backends.tiny_models import MODEL_CARD  # noqa: E402
from g2u_tasks.backends.unified.bagel_official import import_official  # noqa: E402

# Qwen2-7B (BAGEL-7B-MoT's language model) and SigLIP so400m/14 (its vision tower) shapes.
SHAPES = {
    "7b": ({"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
            "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
            "rope_theta": 1000000.0},
           {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16}),
    "tiny": ({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 2048, "max_position_embeddings": 4096, "rope_theta": 10000.0},
             {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}),
}
CORPUS = ("The quick brown fox jumps over the lazy dog. Answer with the option's letter from the given choices "
          "directly. Which colour is the small mark? A. red B. blue C. green D. yellow. How many objects are "
          "there? Zoom in on the region that matters and enhance its details. Expand the scene around the "
          "image. Draw a structure map of the shapes. 0 1 2 3 4 5 6 7 8 9 yes no")


N_ADDED = 5  # <|endoftext|> (the Qwen2 tokenizer's own) + BAGEL's im_start, im_end, vision_start, vision_end


def write_tokenizer(out: Path, vocab_size: int) -> None:
    """A byte-level BPE trained on a small corpus, its vocabulary filled with plain filler tokens so
    that every id the random model can emit decodes (the tokenizer ends up exactly vocab_size long)."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([CORPUS] * 50, vocab_size=600, min_frequency=1, show_progress=False)
    bpe.save_model(str(out))
    vocab = json.loads((out / "vocab.json").read_text())
    for i in range(len(vocab), vocab_size - N_ADDED):
        vocab[f"filler{i}"] = i
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32768}))


def write_random_bagel(code: str, out: Path, shape: str, device: str) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    llm, vit = SHAPES[shape]
    llm_config = {"model_type": "qwen2", "hidden_act": "silu", "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                  "torch_dtype": "bfloat16", "use_sliding_window": False, "attention_dropout": 0.0, **llm}
    vit_config = {"model_type": "siglip_vision_model", "image_size": 980, "patch_size": 14, "num_channels": 3,
                  "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "attention_dropout": 0.0, **vit}
    (out / "llm_config.json").write_text(json.dumps(llm_config, indent=1))
    (out / "vit_config.json").write_text(json.dumps(vit_config, indent=1))
    write_tokenizer(out, llm["vocab_size"])
    m, _ = import_official(code)
    tok, _, _ = m["data.data_utils"].add_special_tokens(m["modeling.qwen2"].Qwen2Tokenizer.from_pretrained(str(out)))
    if len(tok) != llm["vocab_size"]:
        raise RuntimeError(f"tokenizer has {len(tok)} ids, the model {llm['vocab_size']}")
    bagel = m["modeling.bagel"]
    lc = bagel.Qwen2Config.from_json_file(str(out / "llm_config.json"))
    lc.qk_norm, lc.tie_word_embeddings, lc.layer_module = True, False, "Qwen2MoTDecoderLayer"
    vc = bagel.SiglipVisionConfig.from_json_file(str(out / "vit_config.json"))
    vc.rope, vc.num_hidden_layers = False, vc.num_hidden_layers - 1
    ae, ae_params = m["modeling.autoencoder"].load_ae(local_path=None)
    config = bagel.BagelConfig(visual_gen=True, visual_und=True, llm_config=lc, vit_config=vc, vae_config=ae_params,
                               vit_max_num_patch_per_side=70, connector_act="gelu_pytorch_tanh", latent_patch_size=2,
                               max_latent_size=64)
    torch.manual_seed(0)
    with torch.device(device):
        model = bagel.Bagel(bagel.Qwen2ForCausalLM(lc), bagel.SiglipVisionModel(vc), config)
        model.vit_model.vision_model.embeddings.convert_conv2d_to_linear(vc)
    torch.nn.init.normal_(model.llm2vae.weight, std=0.02)  # the official init zeros it: images would be noise only
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    save_file(state, str(out / "ema.safetensors"))
    save_file({k: v.contiguous() for k, v in ae.state_dict().items()}, str(out / "ae.safetensors"))
    n = sum(v.numel() for v in state.values())
    (out / MODEL_CARD).write_text(json.dumps({"architecture": f"BAGEL ({shape} shapes)", "random_weights": True,
                                              "parameters": n}))
    print(f"wrote {out}: {n / 1e9:.2f} B parameters, saved in {time.perf_counter() - t0:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--code", required=True, help="checkout of github.com/ByteDance-Seed/Bagel")
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    write_random_bagel(a.code, Path(a.out), a.shape, a.device)


if __name__ == "__main__":
    main()
