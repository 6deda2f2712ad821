"""The Qwen2 byte-level BPE tokenizer (vocab.json + merges.txt in the weights folder)."""
from transformers import Qwen2Tokenizer

__all__ = ["Qwen2Tokenizer"]
