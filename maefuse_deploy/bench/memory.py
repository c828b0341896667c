"""Peak host and device memory of one benchmark row.

Host: the kernel's resident-set high-water mark (VmHWM in /proc/self/status), which counts every allocator
(torch, onnxruntime, TensorRT, numpy), unlike tracemalloc, which only sees Python's. Writing "5" to
/proc/self/clear_refs resets the mark (Linux 4.0+), so each row gets its own peak; where that is refused the mark
covers the whole process so far, and the row says so.
Device: torch's CUDA allocator peak, which sees torch backends only (onnxruntime and TensorRT allocate outside it).
"""

from __future__ import annotations

from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakMemory:
    """Start a row's measurement with :meth:`reset`, read it with :meth:`host_mb` / :meth:`device_mb`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.host_scope = "row"

    def reset(self) -> None:
        try:
            CLEAR_REFS.write_text("5")
        except OSError:
            self.host_scope = "process"
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def host_mb(self) -> float | None:
        """Peak resident memory in MiB since :meth:`reset` (or since the process started, see ``host_scope``)."""
        try:
            for line in STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return None

    def device_mb(self) -> float | None:
        """Peak memory torch allocated on the GPU since :meth:`reset`; None on a CPU."""
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20
