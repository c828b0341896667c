"""Why CPU numbers move between runs: the GEMM library each runtime uses, and how each reacts to a busy machine.

Part 1 (valid on a busy machine): the ViT-L MLP matmul of one l640 pair (IR+VIS batched: 3200 x 1024 @ 1024 x
4096) on ONE thread, rated by the process CPU time it consumes (the work, not the wait), in each library:
torch float32 (MKL sgemm), torch bfloat16 (oneDNN), onnxruntime float32 (MLAS) and dynamic int8, OpenVINO float32
and bf16. Part 2 (meant for a busy machine): wall time of the same matmul with 2 threads vs 1 per library, and
onnxruntime with its threads spinning (its default) vs not, which is how each degrades when another job holds a core.

Usage: python benchmarks/cpu_gemm_probe.py [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

M, K, N = 3200, 1024, 4096
FLOP = 2 * M * K * N


def rate(fn: Callable[[], object], calls: int = 5) -> tuple[float, float]:
    """(GFLOP/s by CPU time, GFLOP/s by wall time), best of ``calls`` after one warm-up."""
    fn()
    best_cpu = best_wall = float("inf")
    for _ in range(calls):
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return FLOP / best_cpu / 1e9, FLOP / best_wall / 1e9


def matmul_graph(folder: Path, weight: np.ndarray) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mlp", [x], [y],
                              [numpy_helper.from_array(weight, "w")])
    path = folder / "matmul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def ort_session(path: Path, threads: int, spinning: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = (rng.standard_normal((K, N), dtype=np.float32) * 0.03).astype(np.float32)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    bx, bw = tx.bfloat16(), tw.bfloat16()
    results: dict[str, object] = {"load_average_start": list(os.getloadavg()), "shape": [M, K, N]}
    one: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = matmul_graph(Path(tmp), w)
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = Path(tmp) / "matmul-int8.onnx"
        quantize_dynamic(path, quantized, weight_type=QuantType.QInt8, per_channel=True)
        torch.set_num_threads(1)
        one["torch float32 (MKL sgemm)"] = rate(lambda: tx @ tw)[0]
        one["torch bfloat16 (oneDNN)"] = rate(lambda: bx @ bw)[0]
        session = ort_session(path, 1)
        one["onnxruntime float32 (MLAS)"] = rate(lambda: session.run(None, {"x": x}))[0]
        session_q = ort_session(quantized, 1)
        one["onnxruntime dynamic int8 (MatMulInteger)"] = rate(lambda: session_q.run(None, {"x": x}))[0]
        try:
            import openvino as ov

            core = ov.Core()
            for hint in ("f32", "bf16"):
                compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": 1,
                                                                   "INFERENCE_PRECISION_HINT": hint})
                request = compiled.create_infer_request()
                one[f"openvino {hint}"] = rate(lambda r=request: r.infer({"x": x}))[0]
        except ImportError:
            pass
        results["one_thread_gflops_by_cpu_time"] = {k: round(v, 1) for k, v in one.items()}
        for name, value in one.items():
            print(f"1 thread, CPU-time rate: {name:45s} {value:7.1f} GFLOP/s", flush=True)

        contention: dict[str, float] = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            contention[f"torch float32, {threads} threads"] = rate(lambda: tx @ tw)[1]
            contention[f"torch bfloat16, {threads} threads"] = rate(lambda: bx @ bw)[1]
            for spinning in (True, False):
                if threads == 1 and not spinning:
                    continue
                session = ort_session(path, threads, spinning)
                label = f"onnxruntime float32, {threads} threads" + ("" if threads == 1 else
                                                                      f", spinning {'on' if spinning else 'off'}")
                contention[label] = rate(lambda s=session: s.run(None, {"x": x}))[1]
        results["wall_gflops"] = {k: round(v, 1) for k, v in contention.items()}
        results["load_average_end"] = list(os.getloadavg())
        for name, value in contention.items():
            print(f"wall-clock rate: {name:45s} {value:7.1f} GFLOP/s", flush=True)
    print(f"load average {results['load_average_start']} -> {results['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
