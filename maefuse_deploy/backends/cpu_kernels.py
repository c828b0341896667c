"""What the CPU's kernels may use, beyond what the CPU reports: oneDNN's instruction-set caps.

``ONEDNN_MAX_CPU_ISA`` (or ``DNNL_MAX_CPU_ISA``) limits the instructions oneDNN's kernels use: OpenVINO's CPU plugin
and torch's bf16 matmuls honour it while the CPU (and OpenVINO's ``OPTIMIZATION_CAPABILITIES``) still report BF16.
Under ``AVX512_CORE_VNNI`` bf16 then runs emulated: maefuse-rt at 640x480 in 3.1 s a pair instead of 26 ms with
OpenVINO (benchmarks/README.md). One rule for every place that decides whether bf16 is worth running: auto's
candidates (openvino.bf16_units) and the benchmark's default rows (bench/settings.plan_backends).
"""

from __future__ import annotations

import os
from pathlib import Path

ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# The caps that leave out AVX-512 VNNI (oneDNN's names, case-insensitive); then BF16, then AMX as well.
ISA_CAPS_WITHOUT_VNNI = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE"})
ISA_CAPS_WITHOUT_BF16 = ISA_CAPS_WITHOUT_VNNI | {"AVX512_CORE_VNNI"}
ISA_CAPS_WITHOUT_AMX = ISA_CAPS_WITHOUT_BF16 | {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512"}


def cpu_flag_set() -> frozenset[str] | None:
    """The CPU's feature flags as the kernel reports them (/proc/cpuinfo's first ``flags`` line), or None where that
    file cannot be read (not Linux): one reader for the benchmark's machine line and the backends' checks."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return frozenset()


def isa_caps() -> dict[str, str]:
    """The oneDNN instruction-set caps this process runs under, by variable (empty: the CPU's own)."""
    return {name: os.environ[name] for name in ISA_CAP_VARIABLES if os.environ.get(name)}


def cap_leaving_out(excluded: frozenset[str], caps: dict[str, str] | None = None) -> str:
    """The first of ``caps`` (default: this process's, :func:`isa_caps`) that is one of ``excluded``, as
    ``VARIABLE=value``, or '' when none is: one rule for every check of what a cap leaves out."""
    for name, cap in (isa_caps() if caps is None else caps).items():
        if cap.upper() in excluded:
            return f"{name}={cap}"
    return ""


def bf16_cap() -> str:
    """Why the kernels have no bf16 units although the CPU may (a cap that leaves them out), or '' when no cap
    does."""
    capped = cap_leaving_out(ISA_CAPS_WITHOUT_BF16)
    return f"{capped} leaves the kernels no bf16 units" if capped else ""
