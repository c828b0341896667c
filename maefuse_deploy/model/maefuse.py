"""MaeFuse: frozen MAE encoder -> fusion layer -> MAE decoder."""

from __future__ import annotations

import torch
from torch import nn

from .config import MaeFuseConfig
from .fusion import FusionLayer
from .vit import Attention, MaskedAutoencoder, unpatchify


class MaeFuse(nn.Module):
    """The whole network. ``mae`` holds the release's ``model1.*`` weights, ``fusion`` its ``model2.*``."""

    def __init__(self, config: MaeFuseConfig) -> None:
        super().__init__()
        self.config = config
        self.mae = MaskedAutoencoder(config)
        self.fusion = FusionLayer(config)

    def encode_pair(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode IR and VIS as one batch of 2B so each weight is read once per pass."""
        tokens = self.mae.encode(torch.cat([ir, vis], dim=0))
        return tokens[: ir.shape[0]], tokens[ir.shape[0] :]

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised IR and VIS -> (B, 3, H, W) fused image, normalised space.

        H and W must be multiples of the patch size; the token grid follows from them.
        """
        grid = self.mae.token_grid(ir)
        ir_tokens, vis_tokens = self.encode_pair(ir, vis)
        fused = self.fusion(ir_tokens, vis_tokens, grid)
        return unpatchify(self.mae.decode(fused, grid), grid, self.config.patch_size)


def set_fused_attention(model: nn.Module, fused: bool) -> None:
    """Switch every encoder/decoder attention between SDPA (eager) and the explicit exportable form."""
    for module in model.modules():
        if isinstance(module, Attention):
            module.fused = fused


def build_model(config: MaeFuseConfig, seed: int | None = None) -> MaeFuse:
    """A MaeFuse with MAE-style initialisation (xavier linears, zero biases, unit LayerNorms).

    ``seed`` makes the random weights reproducible (the random-weight demo model and tests rely on it).
    """
    generator_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        model = MaeFuse(config)
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d) and name.endswith("patch_embed.proj"):
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    finally:
        if seed is not None:
            torch.random.set_rng_state(generator_state)
    return model.eval()
