"""Step fuser-cuda-tensors of benchmarks/gpu/run.sh: the Python Fuser's device path on a real GPU.

A pair of CUDA tensors through ``Fuser.open("random:maefuse-micro", backend="torch", device="cuda")`` must take the
device path (``fuse_path`` says "device"), come back as a CUDA uint8 tensor of the VIS's shape, and equal the same
pair fused from numpy arrays by the same Fuser (host processing, the same network on the same GPU) within:

* native policy: 1 grey level (processing is exact, OpenCV's integer colour conversions bit for bit; 1 allows for
  the GPU's float rounding in the colour restore, which numpy does on the host);
* official policy: 3 grey levels, more than 1 on under 3 % of the pixels (its resizes are floating point on the
  device and fixed point in OpenCV: docs/runtime.md).

A CUDA DLPack object that is not a torch tensor (a CuPy array where CuPy is installed, else a small producer class)
must be accepted and give the tensor path's result exactly. Cases: real sample pairs (640x480), 8-bit IR and
16-bit IR (its percentile gain runs on the device).

    python benchmarks/gpu/fuser_device_check.py --json OUT/fuser_device.json            # the GPU
    python benchmarks/gpu/fuser_device_check.py --json OUT/fuser_device.json --dry-run  # the same code on the CPU

--dry-run runs every comparison on CPU tensors: ``Fuser.fuse`` then takes the host path (there is no GPU), so the
device steps are run through ``Fuser.run_on_device``, the method ``fuse`` calls for CUDA pairs. Exit status 1 when a
check fails; the JSON holds every case's max and mean absolute error in grey levels either way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a plain checkout (the GPU machine has no editable install)

from maefuse_deploy import Fuser  # noqa: E402
from maefuse_deploy.runtime.fuser import fuse_path, image_device  # noqa: E402
from maefuse_deploy.sample_pairs import load_pairs  # noqa: E402

MODEL = "random:maefuse-micro"  # small enough for the dry run; the device path does not depend on the network size
TOLERANCE = {"native": (1, 0.0), "official": (3, 0.03)}  # (max grey levels, share of pixels over 1 allowed)


class DLPackFrame:
    """A DLPack producer that is not a torch tensor (as a CuPy or JAX array is), over a torch tensor's memory."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self._tensor = tensor

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self._tensor.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._tensor.__dlpack_device__()


def dlpack_producer(tensor: torch.Tensor) -> tuple[Any, str]:
    """CuPy's view of a CUDA tensor where CuPy imports (a real third-party producer), else DLPackFrame."""
    if tensor.is_cuda:
        try:
            import cupy

            return cupy.from_dlpack(tensor), f"cupy {cupy.__version__}"
        except Exception as error:  # any CuPy problem only changes which producer is used
            return DLPackFrame(tensor), f"DLPackFrame (cupy unusable: {type(error).__name__}: {error})"
    return DLPackFrame(tensor), "DLPackFrame"


def difference(want: np.ndarray, got: np.ndarray) -> dict[str, float]:
    diff = np.abs(want.astype(np.int32) - got.astype(np.int32))
    return {"max_abs": int(diff.max()), "mean_abs": float(diff.mean()), "share_over_1": float((diff > 1).mean())}


def check_case(fuser: Fuser, policy: str, ir: np.ndarray, vis: np.ndarray, device: torch.device,
               label: str) -> dict[str, Any]:
    """One pair: tensor path vs numpy path on the same Fuser, and a DLPack object vs the tensor path."""
    problems: list[str] = []
    ir_t, vis_t = torch.from_numpy(ir).to(device), torch.from_numpy(vis).to(device)
    path = fuse_path(image_device(ir_t), image_device(vis_t), fuser.backend.tensor_device)
    expected_path = "device" if device.type == "cuda" else "host"
    if path != expected_path:
        problems.append(f"fuse_path is {path!r}, expected {expected_path!r}")
    began = time.perf_counter()
    # GPU: the public call (CUDA pairs take the device path inside fuse_batch); CPU: the same device steps, which
    # fuse_batch would not choose for CPU tensors.
    out = fuser.fuse(ir_t, vis_t) if device.type == "cuda" else fuser.run_on_device([(ir_t, vis_t)], [label])[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    if not isinstance(out, torch.Tensor):
        problems.append(f"result is {type(out).__name__}, not a torch tensor")
        out = torch.as_tensor(np.asarray(out))
    if out.device != ir_t.device:
        problems.append(f"result is on {out.device}, the inputs on {ir_t.device}")
    if out.dtype != torch.uint8 or tuple(out.shape) != vis.shape:
        problems.append(f"result is {out.dtype} {tuple(out.shape)}, expected uint8 {vis.shape}")
    reference = fuser.fuse(ir, vis)  # numpy in: host processing, the same network on the same device
    if not isinstance(reference, np.ndarray):
        problems.append(f"numpy pair came back as {type(reference).__name__}")
        reference = np.asarray(reference)
    errors = difference(reference, out.cpu().numpy())
    limit, share = TOLERANCE[policy]
    if errors["max_abs"] > limit or (share and errors["share_over_1"] > share):
        problems.append(f"tensor path vs numpy path: max {errors['max_abs']} grey levels "
                        f"({errors['share_over_1']:.2%} over 1), allowed {limit}")
    # DLPack objects through the public call, against the tensor pair through the same call (on the CPU that is the
    # host path, so it is fused again here; on the GPU it is ``out``).
    ir_d, producer = dlpack_producer(ir_t)
    vis_d, _ = dlpack_producer(vis_t)
    via_dlpack = fuser.fuse(ir_d, vis_d)
    via_tensors = out if device.type == "cuda" else fuser.fuse(ir_t, vis_t)
    if not isinstance(via_dlpack, torch.Tensor) or via_dlpack.device != ir_t.device:
        problems.append(f"DLPack pair came back as {type(via_dlpack).__name__} on "
                        f"{getattr(via_dlpack, 'device', 'the host')}")
    elif not torch.equal(via_dlpack, via_tensors):
        problems.append("DLPack pair differs from the tensor pair")
    return {"case": label, "policy": policy, "ir_dtype": str(ir.dtype), "size": f"{vis.shape[1]}x{vis.shape[0]}",
            "path": path, "result_device": str(out.device), "tolerance_grey_levels": limit, **errors,
            "dlpack_producer": producer, "seconds": seconds, "ok": not problems, "problems": problems}


def guarded(fuser: Fuser, policy: str, ir: np.ndarray, vis: np.ndarray, device: torch.device,
            label: str) -> dict[str, Any]:
    """check_case, with an exception recorded as the case's failure so that the other cases still report (the one
    GPU call must show every problem it can, not the first)."""
    try:
        return check_case(fuser, policy, ir, vis, device, label)
    except Exception as error:  # the report is the point: any error of the path under test is a result
        return {"case": label, "policy": policy, "ir_dtype": str(ir.dtype), "size": f"{vis.shape[1]}x{vis.shape[0]}",
                "path": None, "result_device": None, "tolerance_grey_levels": TOLERANCE[policy][0], "max_abs": None,
                "mean_abs": None, "share_over_1": None, "dlpack_producer": None, "seconds": None, "ok": False,
                "problems": [f"{type(error).__name__}: {error}"]}


def run(device: torch.device) -> dict[str, Any]:
    pairs = load_pairs(None, 2)
    cases = []
    for policy in ("native", "official"):
        fuser = Fuser.open(MODEL, backend="torch", device=str(device), policy=policy)
        for pair in pairs:
            cases.append(guarded(fuser, policy, pair.ir, pair.vis, device, f"{policy} {pair.name} ir8"))
        # 16-bit IR: the per-frame percentile gain, on the device for CUDA pairs.
        ir16 = (pairs[0].ir.astype(np.uint16) * 200 + 900).astype(np.uint16)
        cases.append(guarded(fuser, policy, ir16, pairs[0].vis, device, f"{policy} {pairs[0].name} ir16"))
        fuser.close()
    return {"model": MODEL, "device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "tolerances": {k: {"max_grey_levels": v[0], "share_over_1": v[1]} for k, v in TOLERANCE.items()},
            "cases": cases, "ok": all(case["ok"] for case in cases)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write the cases here")
    parser.add_argument("--dry-run", action="store_true", help="CPU tensors through the same device steps")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA GPU visible to torch (fix: run on the GPU machine, or pass --dry-run)", file=sys.stderr)
        return 1
    result = run(torch.device("cpu" if args.dry_run else "cuda"))
    result["dry_run"] = args.dry_run
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    for case in result["cases"]:
        mean = "-" if case["mean_abs"] is None else f"{case['mean_abs']:.4f}"
        print(f"{case['case']}: path {case['path']}, result on {case['result_device']}, max {case['max_abs']} grey "
              f"levels (mean {mean}, allowed {case['tolerance_grey_levels']}), DLPack via "
              f"{case['dlpack_producer']}: {'ok' if case['ok'] else 'FAILED: ' + '; '.join(case['problems'])}")
    print("fuser device check:", "ok" if result["ok"] else "FAILED")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
