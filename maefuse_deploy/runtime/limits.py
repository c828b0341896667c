"""Memory a native-policy pass will need, checked before running it.

Under the native policy the token grid follows the frame (a 4K frame is 32400 tokens of 16x16 pixels), so one
large frame can ask for more memory than the machine has. The estimate below is checked against the free memory
of the device before a batch runs, so the user gets a one-line error instead of an out-of-memory kill.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import InputError

# Live float32 values per token and unit of width at a transformer block's peak, for IR and VIS (2 sequences):
# residual, norm, q/k/v, attention output and projection, and the MLP hidden layer (mlp_ratio widths) with its
# activation, plus allocator slack. Calibrated on maefuse-tiny on the CPU: measured peak increases 220 MB
# (1024x1024, batch 1), 505 MB (2048x1536) and 770 MB (1024x1024, batch 4) against estimates of 224, 672 and
# 896 MB.
_VALUES_PER_TOKEN_AND_WIDTH = 2 * 24
# Per pixel: the 8-bit frames, their YCrCb and float copies, the padded network inputs and the output.
_BYTES_PER_PIXEL = 80


def native_pass_bytes(config: Any, height: int, width: int, batch: int) -> int:
    """Estimated bytes one native-policy pass of ``batch`` frames of ``height`` x ``width`` needs (weights aside).

    ``config``: a MaeFuseConfig (patch_size, embed_dim, decoder_embed_dim, mlp_ratio). Attention itself adds
    little: scaled_dot_product_attention runs blockwise (flash-style) on CPU and CUDA, linear in the tokens.
    """
    patch = config.patch_size
    tokens = math.ceil(height / patch) * math.ceil(width / patch)
    model_width = max(config.embed_dim, config.decoder_embed_dim) * (2 + config.mlp_ratio) / 6
    per_frame = tokens * _VALUES_PER_TOKEN_AND_WIDTH * model_width * 4 + height * width * _BYTES_PER_PIXEL
    return int(batch * per_frame)


def free_bytes(device: Any) -> int | None:
    """Memory free for a new allocation on ``device`` (a torch.device); None when it cannot be read."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_native_pass(config: Any, device: Any, height: int, width: int, batch: int) -> None:
    """Refuse a native-policy pass whose estimated memory exceeds what ``device`` has free."""
    needed = native_pass_bytes(config, height, width, batch)
    available = free_bytes(device)
    if available is not None and needed > available:
        patch = config.patch_size
        raise InputError(
            f"native policy: {batch} frame(s) of {width}x{height} make a {math.ceil(width / patch)}x"
            f"{math.ceil(height / patch)} token grid needing about {needed / 2**30:.1f} GiB, but "
            f"{available / 2**30:.1f} GiB is free on {device}",
            fix="lower --batch, use --policy official (fixed model size), or fuse smaller frames",
        )
