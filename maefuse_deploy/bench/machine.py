"""What a benchmark ran on: CPU, GPU, driver and library versions, recorded beside every result."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..backends.cpu_kernels import ISA_CAP_VARIABLES, cpu_flag_set

LIBRARIES = ("maefuse-deploy", "torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf",
             "opencv-python-headless", "tensorrt", "cuda-python")


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (what ``lscpu`` shows as 'Model name')."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_generation() -> str | None:
    """``family F model M`` from /proc/cpuinfo. A cloud VM's model name is often just "AMD EPYC" while the host
    behind it changes between machines of the same kind (family 25 is Zen 4, whose AVX-512 runs on 256-bit units;
    family 26 is Zen 5, with full 512-bit units): recorded so that two tables from "the same machine" can be told apart.
    """
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("cpu family", "model") and key.strip() not in fields:
                fields[key.strip()] = value.strip()
            if not line.strip():
                break
    except OSError:
        return None
    return f"family {fields['cpu family']} model {fields['model']}" if len(fields) == 2 else None


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages when the run started: above the core count, the machine was not quiet."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_flags() -> list[str]:
    """The vector extensions that decide CPU matmul speed (AVX2, AVX-512, their BF16/FP16/VNNI forms, AMX)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_tile")
    present = cpu_flag_set() or frozenset()
    return [flag for flag in wanted if flag in present]


def memory_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


# Variables that cap which instruction sets the kernels use: a run under ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI (no
# AMX, no AVX-512 BF16 for OpenVINO's oneDNN kernels) stands for another CPU while /proc/cpuinfo still lists AMX, so
# a table must say it was made that way. (Thread counts are recorded already: torch_threads, and the bench's
# settings.omp_num_threads.)
KERNEL_ENVIRONMENT = (*ISA_CAP_VARIABLES, "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def kernel_environment() -> dict[str, str]:
    """The ``KERNEL_ENVIRONMENT`` variables this process has set, by name."""
    return {name: os.environ[name] for name in KERNEL_ENVIRONMENT if name in os.environ}


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def gpu_info() -> dict[str, Any] | None:
    """The visible CUDA GPU (name, memory, capability, driver, CUDA), or None without one."""
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "memory_gb": round(props.total_memory / 2**30, 1),
        "compute_capability": f"{props.major}.{props.minor}",
        "count": torch.cuda.device_count(),
        "driver": _nvidia_driver(),
        "cuda_runtime": torch.version.cuda,
    }


def _nvidia_driver() -> str | None:
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return None
    try:
        done = subprocess.run(
            [tool, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def describe_machine() -> dict[str, Any]:
    """Everything a reader needs to compare a table with theirs."""
    return {
        "cpu": cpu_model(),
        "cpu_generation": cpu_generation(),
        "cores": usable_cores(),
        "load_average": load_average(),
        "cpu_flags": cpu_flags(),
        "environment": kernel_environment(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": memory_total_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "gpu": gpu_info(),
        "libraries": library_versions(),
    }
