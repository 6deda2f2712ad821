from .bagel import Bagel, BagelConfig
from .qwen2_navit import NaiveCache, Qwen2Config, Qwen2ForCausalLM
from .siglip_navit import SiglipVisionConfig, SiglipVisionModel

__all__ = ["Bagel", "BagelConfig", "NaiveCache", "Qwen2Config", "Qwen2ForCausalLM", "SiglipVisionConfig",
           "SiglipVisionModel"]
