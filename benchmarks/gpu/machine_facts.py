"""Step machine of benchmarks/gpu/run.sh: what the lent machine is and has, printed for the log and written as JSON
for the report's header (steps.md names the machine from it).

    python benchmarks/gpu/machine_facts.py --json OUT/machine.json [--require-gpu]

Every probe is allowed to fail (a missing tool is a fact, not an error); with --require-gpu the script exits 1 when
torch sees no CUDA GPU, so the report shows at once why every later GPU step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

TOOLS: dict[str, list[str]] = {
    "nvidia-smi": ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                   "--format=csv,noheader"],
    "nvcc": ["nvcc", "--version"],
    "cmake": ["cmake", "--version"],
    "ninja": ["ninja", "--version"],
    "compute-sanitizer": ["compute-sanitizer", "--version"],
    "c++": ["c++", "--version"],
    "pkg-config": ["pkg-config", "--version"],
}
PROBE_TIMEOUT_S = 20.0  # one hung tool must not take the step's whole budget


def probe(argv: list[str]) -> dict[str, Any]:
    """A tool's answer: its path and output, or why there is none."""
    path = shutil.which(argv[0])
    if path is None:
        return {"found": False, "error": f"{argv[0]} not found on PATH"}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"found": True, "path": path, "error": f"no answer in {PROBE_TIMEOUT_S:.0f} s"}
    text = (done.stdout + done.stderr).strip()
    facts: dict[str, Any] = {"found": True, "path": path, "exit_status": done.returncode, "output": text}
    lines = [line for line in text.splitlines() if line.strip()]
    # The line a reader wants: nvcc's "release" line, compute-sanitizer's last (its version), the others' first.
    releases = [line for line in lines if "release" in line]
    if argv[0] == "nvcc" and releases:
        facts["line"] = releases[0]
    else:
        facts["line"] = (lines[-1] if argv[0] == "compute-sanitizer" else lines[0]) if lines else ""
    return facts


def torch_facts() -> dict[str, Any]:
    try:
        import torch
    except ImportError as error:
        return {"error": f"torch cannot be imported: {error}"}
    facts: dict[str, Any] = {"version": torch.__version__, "cuda": torch.version.cuda,
                             "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(device_count=torch.cuda.device_count(), gpu=props.name,
                     capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                     multiprocessors=props.multi_processor_count,
                     cudnn=torch.backends.cudnn.version())
    return facts


def optional_modules() -> dict[str, str | None]:
    """Versions of what the steps may use (None: not installed). TensorRT is expected to be None on these machines."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("opencv-python-headless", "opencv-python", "safetensors", "timm", "onnx", "onnxruntime",
                 "onnxruntime-gpu", "cupy-cuda13x", "tensorrt", "tensorrt-cu13"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def collect() -> dict[str, Any]:
    tools = {name: probe(argv) for name, argv in TOOLS.items()}
    return {
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch_facts(),
        "tools": tools,
        "packages": optional_modules(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write the facts here")
    parser.add_argument("--require-gpu", action="store_true", help="exit 1 when torch sees no CUDA GPU")
    args = parser.parse_args()
    facts = collect()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(facts, indent=2) + "\n")
    # The log gets the tools' own words (nvidia-smi's table included, when there is one).
    print(f"python {facts['python']}, {facts['platform']}, {facts['cpus']} CPUs")
    print("torch:", json.dumps(facts["torch"]))
    print("packages:", json.dumps(facts["packages"]))
    for name, tool in facts["tools"].items():
        print(f"--- {name}: " + (tool.get("output") or tool.get("error", "")))
    smi = probe(["nvidia-smi"])
    if smi.get("output"):
        print("--- nvidia-smi (full)\n" + smi["output"])
    if args.require_gpu and not facts["torch"].get("cuda_available"):
        print("error: torch sees no CUDA GPU on this machine", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
