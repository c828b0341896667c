"""The wire contract between ``maefuse-serve`` and its clients (one request = one or more pairs of one size).

Inputs (batch axis first, as Triton counts it; each request carries ``ir`` or ``ir16``, not both):
  ``ir``     UINT8  [B, H, W]     grey infrared frame
  ``ir16``   UINT16 [B, H, W]     16-bit radiometric infrared frame (stretched to 8 bits on the server, as Fuser does)
  ``vis``    UINT8  [B, H, W, C]  visible frame, C = 3 (BGR) or 1 (grey)
Output:
  ``fused``  UINT8  [B, H, W, C]  fused frame at the VIS size, BGR for a BGR VIS, grey (C = 1) for a grey one
"""

from __future__ import annotations

from ..contract import INPUT_IR, INPUT_VIS, OUTPUT_FUSED

INPUT_IR16 = "ir16"
DEFAULT_MODEL_NAME = "maefuse"
VIS_CHANNELS = (1, 3)

__all__ = ["DEFAULT_MODEL_NAME", "INPUT_IR", "INPUT_IR16", "INPUT_VIS", "OUTPUT_FUSED", "VIS_CHANNELS"]
