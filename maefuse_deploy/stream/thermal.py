"""16-bit thermal video: the files' percentile stretch with a temporally smoothed range.

A per-frame automatic gain (processing.ir16_range) flickers on video: one hot object entering the frame moves the
99.5th percentile and the whole image changes brightness. Here each frame's percentiles feed an exponential moving
average and the frame is stretched between the averaged values (processing.stretch_to_grey8, the same mapping as
for files). ``alpha`` is the weight of the newest frame: 1 reproduces the per-frame mapping exactly.
"""

from __future__ import annotations

import numpy as np

from ..processing import ir16_range, stretch_to_grey8


class SmoothedRange:
    def __init__(self, alpha: float = 0.1) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.low: float | None = None
        self.high: float | None = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """HxW uint16 IR frame -> HxW uint8; other frames pass unchanged."""
        if frame.dtype != np.uint16:
            return frame
        low, high = ir16_range(frame)
        if self.low is None or self.high is None:
            self.low, self.high = low, high
        else:
            self.low += self.alpha * (low - self.low)
            self.high += self.alpha * (high - self.high)
        return stretch_to_grey8(frame, self.low, self.high)
