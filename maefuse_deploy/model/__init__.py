"""MaeFuse network, configs and checkpoints."""

from .config import CONFIGS, MaeFuseConfig, get_config
from .maefuse import MaeFuse, build_model, set_fused_attention
from .posembed import sincos_2d

__all__ = ["CONFIGS", "MaeFuse", "MaeFuseConfig", "build_model", "get_config", "set_fused_attention", "sincos_2d"]
