"""Step aoti-cuda of benchmarks/gpu/run.sh: an AOTInductor package compiled for CUDA, run through the C++ runtime.

    python benchmarks/gpu/aoti_cuda_check.py --build-dir BUILD --work DIR

Where the exporter can target CUDA (``maefuse_deploy.export.aoti.export_aoti`` takes a ``device``), this exports the
built-in maefuse-tiny for the sample pairs' size on ``cuda``, fuses one real pair with the C++ sample
(``BUILD/engines/maefuse-fuse-cpp``, from step cpp-build) and compares it with the Python Fuser (torch backend on
CUDA, native policy) within 1 grey level. Where it cannot, the script says "not available: <why>" and exits with
status 3, which the step runner records as not-available rather than as a failure: nothing is faked.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a plain checkout (the GPU machine has no editable install)

NOT_AVAILABLE = 3  # steps.py: this exit status means "the capability does not exist yet", reported as such
TOLERANCE_GREY_LEVELS = 1  # the C++ AOTI CPU package's measured parity with the Python Fuser (docs/cpp.md)


def why_not_available() -> str | None:
    """None where the exporter and the C++ runtime can take a CUDA package, else the reasons, read off the code."""
    from maefuse_deploy.export.aoti import export_aoti

    reasons = []
    if "device" not in inspect.signature(export_aoti).parameters:
        reasons.append("maefuse_deploy.export.aoti.export_aoti has no device option: it traces with CPU example "
                       "tensors and aoti_compile_and_package compiles for the CPU (maefuse-export --aoti likewise)")
    backend = (REPO / "engines" / "runtime" / "src" / "aoti_backend.cpp").read_text()
    if "kCUDA" not in backend:
        reasons.append("the C++ AOTInductor backend (engines/runtime/src/aoti_backend.cpp, 'aoti-cpu') wraps host "
                       "memory as CPU tensors and has no CUDA device option")
    return "; ".join(reasons) or None


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, required=True, help="the C++ build of step cpp-build")
    parser.add_argument("--work", type=Path, required=True, help="folder for the package and the fused image")
    args = parser.parse_args()
    reason = why_not_available()
    if reason is not None:
        print(f"not available: {reason}")
        return NOT_AVAILABLE

    import numpy as np

    from maefuse_deploy import Fuser
    from maefuse_deploy.export.aoti import export_aoti
    from maefuse_deploy.hashing import file_sha256
    from maefuse_deploy.io import find_pairs, read_image
    from maefuse_deploy.model.sources import resolve_torch_model
    from maefuse_deploy.sample_pairs import SAMPLES_DIR

    sample = args.build_dir / "engines" / "maefuse-fuse-cpp"
    if not sample.exists():
        print(f"error: {sample} is missing (step cpp-build did not finish)", file=sys.stderr)
        return 1
    pair = find_pairs(SAMPLES_DIR / "ir", SAMPLES_DIR / "vi")[0]
    ir, vis = read_image(pair.ir, "IR"), read_image(pair.vis, "VIS")
    resolved = resolve_torch_model(None)
    args.work.mkdir(parents=True, exist_ok=True)
    package = args.work / "maefuse-tiny-cuda.pt2"
    began = time.perf_counter()
    export_aoti(resolved.model, package, vis.shape[:2], checkpoint_sha256=file_sha256(resolved.path)
                if resolved.path else "", device="cuda")  # type: ignore[call-arg]  # the option this step waits for
    print(f"exported {package} for cuda in {time.perf_counter() - began:.0f} s")
    fused_path = args.work / "fused-cpp.png"
    done = subprocess.run([str(sample), str(package), str(pair.ir), str(pair.vis), str(fused_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    print(done.stdout + done.stderr)
    if done.returncode != 0:
        print(f"error: maefuse-fuse-cpp exited with {done.returncode}", file=sys.stderr)
        return 1
    with Fuser.open(None, backend="torch", device="cuda", policy="native") as fuser:
        want = fuser.fuse(ir, vis)
    got = read_image(fused_path, "fused")
    worst = int(np.abs(want.astype(np.int32) - got.astype(np.int32)).max())
    print(f"C++ runtime (CUDA AOTI package) vs Python Fuser (torch, cuda) on {pair.name}: max {worst} grey levels "
          f"(allowed {TOLERANCE_GREY_LEVELS})")
    return 0 if worst <= TOLERANCE_GREY_LEVELS else 1


if __name__ == "__main__":
    sys.exit(main())
