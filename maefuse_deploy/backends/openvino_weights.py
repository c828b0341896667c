"""OpenVINO straight from torch weights: each input shape converted, lowered to the fastest precision that keeps
the output, compiled, and cached on disk (layouts: backends/base.py, float io).

The ``openvino`` backend runs an exported fixed-size graph; a camera pipeline on the built-in model has a
checkpoint and frames of its own size (the native policy: any size). This backend takes the weights and, on the
first call of each input shape (B=1, 3, H, W), converts the module with ``openvino.convert_model`` (no ONNX file),
and picks the precision:

``auto``      the fastest of these whose output stays within ``min_psnr`` dB of torch float32 on the calibration
              pairs: int8 (NNCF, the ``openvino`` backend's recipe) with the layers it leaves in float in bf16
              (``int8-bf16``, CPUs with BF16 units), int8 with them in float32, bf16 (BF16 CPUs), each timed here on
              one pair; float32 when none does. Which is fastest depends on the CPU and the model (maefuse-tiny at
              640x480 with AMX: bf16; maefuse-l640: int8-bf16; without BF16: int8), so it is measured, and an int8
              kind must be 5 % faster than a float one to be taken. What was timed and measured is kept with the
              entry and said in the shape's line.
``int8-bf16`` / ``int8`` / ``bfloat16`` / ``float32``  that precision, measured the same way; below the bound it
              is a warning.

Calibration and the accuracy check use real pairs (the shipped samples unless ``calibration`` names a folder),
resized to the shape and prepared the way the runtime prepares frames; int8 calibrates on all but the last pair,
and the check (the worst pair) includes that one, which the quantization never saw. The converted (and quantized)
model is cached (backends/cache.py, keyed by the weights' hash, shape, precision, calibration and library
versions), so a second start reads it instead of converting and calibrating again; OpenVINO's own blob cache under
the same root saves the compile. A batch runs pair by pair through one request: on a CPU the latency hint gives
one request every core, so a batch gains nothing from being one call.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..compare import psnr
from ..errors import InputError
from ..model.maefuse import MaeFuse, set_fused_attention
from ..model.sources import resolve_torch_model
from ..processing import denormalise, prepare_pair
from ..sample_pairs import as_arrays, load_pairs
from ..version import __version__
from .base import BackendBase
from .cache import CacheKey, ModelCache
from .cpu_kernels import isa_caps
from .openvino import (
    DEFAULT_CALIBRATION_PAIRS,
    DTYPE_PRECISIONS,
    bf16_units,
    compile_config,
    first_line,
    import_openvino,
    load_calibration_pairs,
    quantize_int8,
)
from .openvino_attention import AttentionKernel, int8_attention_note, load_attention_kernel

PRECISIONS = ("auto", "int8-bf16", "int8", "bfloat16", "float32")
MIN_PSNR_DB = 40.0  # what "keeps the fused image" means: the bound, and the benchmark's
INT8_MARGIN = 1.05  # an int8 precision is chosen over a float one only when at least 5 % faster
TIMED_RUNS = 3  # after one warm-up run: the best of these is a candidate's speed
# How an entry is built (the candidates, what int8 calibrates on, what the check measures): raise it with any
# change there, so that entries an earlier recipe built are stale, not hits (the package version moves too rarely).
# 2: int8 calibrates on all but the last pair and the check includes that one.
# 3: int8 without SmoothQuant; auto takes the fastest precision that keeps the image, measured, not a fixed order.
# 4: int8 leaves attention's output projections in float (openvino.attention_projections).
# 5: int8 (not int8-bf16) makes attention's activation MatMuls int8 where the converted model has them (linear
#    attention); the key names the CPU's kernels.
# 6: linear attention is converted token-major with its output projection folded in (model/vit.py), and int8 keeps
#    both parts of that projection (Cov x W^T, and mean(V)'s) in float: entries of recipe 5 hold the slower
#    per-head graph.
# 7: int8-bf16 makes attention's activation MatMuls int8 as int8 does (one quantization for both).
# 8: int8 gives attention's output projections int8 weights, their input quantized per frame by the plugin
#    (openvino.compress_projection_weights).
# 9: int8 runs softmax attention with 64-wide heads on the int8 attention kernel where this machine builds it
#    (openvino_attention.py); the key names the kernel or why it is off.
BUILD_RECIPE = "9"


@dataclass
class _Compiled:
    precision: str
    psnr_db: float
    request: Any
    cache_status: str


class OpenVinoWeightsBackend(BackendBase):
    name = "openvino-weights"
    native = "numpy"

    def __init__(
        self,
        model: MaeFuse,
        device: str = "cpu",
        dtype: str = "auto",
        *,
        threads: int | None = None,
        calibration: str | os.PathLike[str] | None = None,
        calibration_pairs: int = DEFAULT_CALIBRATION_PAIRS,
        cache_dir: str | os.PathLike[str] | None = None,
        min_psnr: float = MIN_PSNR_DB,
        description: str = "",
        warnings: tuple[str, ...] = (),
    ) -> None:
        if device != "cpu":
            raise InputError(f"the {self.name} backend runs on the CPU, not {device!r}", fix="pass --device cpu")
        if dtype not in PRECISIONS:
            raise InputError(f"the {self.name} backend computes in {', '.join(PRECISIONS)}, not {dtype!r}",
                             fix="use --dtype auto")
        self.ov = import_openvino()
        self.core = self.ov.Core()
        self.model = model.float().eval().requires_grad_(False)
        self.config = model.config
        self.requested = dtype
        self.threads = threads
        self.min_psnr = min_psnr
        frames = (load_calibration_pairs(calibration, calibration_pairs) if calibration is not None
                  else as_arrays(load_pairs(None, calibration_pairs)))
        self.calibration_frames = frames
        digest = hashlib.sha256()  # part of every cache key: hashed once, not per frame size
        for ir, vis in frames:
            digest.update(np.ascontiguousarray(ir).tobytes())
            digest.update(np.ascontiguousarray(vis).tobytes())
        self._calibration_sha256 = digest.hexdigest()
        self.calibration_name = str(calibration) if calibration is not None else "the shipped samples"
        self.cache = ModelCache(cache_dir)
        self.cache.require_writable()
        # OpenVINO's compiled-blob cache (its own format and checks) beside ours: a second start skips the compile.
        self.core.set_property({"CACHE_DIR": str(self.cache.root / "openvino-blobs")})
        self.patch_size = model.config.patch_size
        self.model_size = model.config.img_size
        self.default_policy = model.config.policy
        self.source_description = description or model.config.name
        self.description = f"{self.name} ({dtype}): {self.source_description}"
        self.warnings = tuple(warnings)
        self._weights_digest: str | None = None
        self._kernel: AttentionKernel | None = None
        self._compiled: dict[tuple[int, int], _Compiled] = {}
        # One infer request per shape, and OpenVINO's requests are not thread-safe: callers on several threads
        # (a server's instances) take turns, as they would for the CPU's cores anyway.
        self._lock = threading.Lock()
        self.events: list[str] = []  # one line per shape prepared (what a CLI prints and a test reads)

    @classmethod
    def open(cls, source: str | os.PathLike[str] | None, *, device: str = "cpu", dtype: str | None = None,
             config: str | None = None, **options: Any) -> OpenVinoWeightsBackend:
        resolved = resolve_torch_model(source, config)
        return cls(resolved.model, device, dtype or "auto", description=resolved.description,
                   warnings=tuple(resolved.warnings), **options)

    # -- per shape ---------------------------------------------------------------------------------------------

    def prepare(self, height: int, width: int) -> _Compiled:
        """Convert, choose the precision, compile (or read all of it from the cache) for (1, 3, height, width)."""
        shape = (height, width)
        if shape not in self._compiled:
            start = time.perf_counter()
            key = self._key(shape)
            result = self.cache.get_or_build(key, lambda folder: self._build(shape, folder))
            try:
                request = self._compile(result.folder, result.notes["precision"])
            except InputError:
                if not result.hit:
                    raise
                # A cached file OpenVINO cannot read is corrupt whatever its hash says: rebuild it once.
                self.cache.remove(key)
                result = self.cache.get_or_build(key, lambda folder: self._build(shape, folder))
                request = self._compile(result.folder, result.notes["precision"])
            compiled = _Compiled(result.notes["precision"], float(result.notes["psnr_db"]), request, result.status)
            self._compiled[shape] = compiled
            psnr_db = "identical" if compiled.psnr_db == float("inf") else f"{compiled.psnr_db:.1f} dB"
            self.events.append(
                f"{self.name}: {width}x{height} in {compiled.precision} ({psnr_db} from torch float32 on "
                f"{self.calibration_name}; {result.notes.get('tried', '')}); cache {result.status}, "
                f"{time.perf_counter() - start:.1f} s"
            )
            self.description = f"{self.name} {compiled.precision}: {self.source_description}"
            if compiled.psnr_db < self.min_psnr:
                self.warnings = (*self.warnings, f"{self.name} {compiled.precision} at {width}x{height} is "
                                 f"{compiled.psnr_db:.1f} dB from float32, below {self.min_psnr:g} dB")
        return self._compiled[shape]

    def _key(self, shape: tuple[int, int]) -> CacheKey:
        try:
            import nncf

            nncf_version = nncf.__version__
        except ImportError:  # float precisions need no NNCF; int8 says how to install it when it is tried
            nncf_version = "absent"
        identity: tuple[tuple[str, str], ...] = (
            ("weights", self._weights_sha256()), ("config", self.config.to_json()),
            ("shape", f"1x3x{shape[0]}x{shape[1]}"), ("precision", self.requested),
            ("min_psnr", repr(self.min_psnr)), ("calibration", self._calibration_sha256),
            ("cpu", self._cpu_kernels()))
        if self.requested.startswith("int8") or self.requested == "auto":
            # An int8 graph holds the kernel's op where it was built: reading it needs that extension.
            identity = (*identity, ("int8-attention", self._attention_kernel().identity))
        versions = (("maefuse-deploy", __version__), ("recipe", BUILD_RECIPE), ("openvino", self.ov.__version__),
                    ("nncf", nncf_version), ("torch", torch.__version__))
        return CacheKey("openvino", identity, versions)

    def _cpu_kernels(self) -> str:
        """What the CPU kernels can run here: auto's choice and its timings hold for this, not for another CPU or
        under another oneDNN cap, whatever the CPU (a bf16 choice made with AMX ran 150x slower under
        ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI; a cap below VNNI slows int8 on any CPU)."""
        capabilities = " ".join(sorted(self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")))
        return "; ".join([capabilities, *(f"{name}={cap}" for name, cap in sorted(isa_caps().items()))])

    def _attention_kernel(self) -> AttentionKernel:
        """The int8 attention extension (built once per machine, then cached), loaded into this backend's Core."""
        if self._kernel is None:
            self._kernel = load_attention_kernel(self.ov, self.core)
        return self._kernel

    def _weights_sha256(self) -> str:
        if self._weights_digest is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.model.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
            self._weights_digest = digest.hexdigest()
        return self._weights_digest

    def _inputs(self, shape: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The calibration pairs at ``shape``, prepared as the runtime prepares frames: (1, 3, H, W) float32."""
        import cv2

        height, width = shape
        feeds = []
        for index, (ir, vis) in enumerate(self.calibration_frames):
            ir = cv2.resize(ir, (width, height), interpolation=cv2.INTER_AREA)
            vis = cv2.resize(vis, (width, height), interpolation=cv2.INTER_AREA)
            ir_net, vis_net, _ = prepare_pair(ir, vis, self.default_policy, shape, self.patch_size,  # type: ignore[arg-type]
                                              name=f"calibration pair {index}")
            feeds.append((ir_net[None], vis_net[None]))
        return feeds

    def _build(self, shape: tuple[int, int], folder: Path) -> dict[str, str]:
        """Convert at ``shape``, try precisions in order, save the chosen model into ``folder``; the notes say what."""
        ov = self.ov
        feeds = self._inputs(shape)
        with torch.inference_mode():
            references = [self.model(torch.from_numpy(ir), torch.from_numpy(vis)).numpy() for ir, vis in feeds]
        set_fused_attention(self.model, False)  # the explicit attention converts op for op
        try:
            example = (torch.from_numpy(feeds[0][0]), torch.from_numpy(feeds[0][1]))
            with warnings.catch_warnings():
                # The trace fixes the grid's Python arithmetic to this shape, which is what a per-shape model wants.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                # OpenVINO's converter traces with torch.jit, which torch now marks deprecated: not the user's concern.
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace", category=FutureWarning)
                converted = ov.convert_model(self.model, example_input=example,
                                             input=[ov.PartialShape([1, 3, *shape])] * 2)
        except Exception as exc:
            raise InputError(f"OpenVINO cannot convert {self.config.name} at {shape[1]}x{shape[0]}: "
                             f"{first_line(exc)}", fix="use --backend torch") from exc
        finally:
            set_fused_attention(self.model, True)
        notes: list[str] = []
        if self.requested != "auto":
            candidates = [self.requested]
        else:
            candidates = ["int8-bf16", "int8", "bfloat16", "float32"]
            if importlib.util.find_spec("nncf") is None:
                candidates = [c for c in candidates if not c.startswith("int8")]
                notes.append("int8 skipped: NNCF not installed")
            native_bf16, why_not = bf16_units(self.core)
            if not native_bf16:
                candidates = [c for c in candidates
                              if self._compile_config(c)["INFERENCE_PRECISION_HINT"] != "bf16"]
                notes.append(f"bf16 skipped: {why_not}")
        quantized: list[Any] = []  # both int8 kinds run the one quantization; they differ in the float part

        def lowered(precision: str) -> Any:
            if not precision.startswith("int8"):
                return converted
            if not quantized:
                # Calibrated WITHOUT the last pair: the accuracy check then includes a pair the quantization never
                # saw (with SmoothQuant, random maefuse-l640 read 46 dB on its calibration pairs and 27 dB on others:
                # a check on seen pairs alone would have accepted it). Converted from the torch module, softmax
                # attention is one ScaledDotProductAttention op that NNCF leaves alone; linear attention has two
                # activation MatMuls a block, which it makes int8 (quantize_int8; maefuse-rt-linear under the VNNI
                # cap, int8: Fuser.fuse 45 -> 40 ms a 640x480 pair, 48.1 -> 48.0 dB).
                seen = feeds[:-1] if len(feeds) > 1 else feeds
                model = quantize_int8(converted, [{0: ir, 1: vis} for ir, vis in seen])
                # Softmax x V on the int8 units too, where the kernel runs here (openvino_attention.py).
                notes.append(int8_attention_note(self._attention_kernel(), model))
                quantized.append(model)
            return quantized[0]

        # float32 is the answer when nothing faster keeps the image; the others are timed, and tried for accuracy
        # fastest first (which is fastest depends on the CPU and the model: maefuse-tiny at 640x480 on a Xeon with
        # AMX runs bf16 in 44 ms and int8-bf16 in 49; on a CPU without BF16, int8 is the only speed-up).
        fallback = candidates[-1]

        def compile_request(precision: str) -> Any:
            return self.core.compile_model(lowered(precision), "CPU",
                                           self._compile_config(precision)).create_infer_request()

        # Only the time is kept: one compiled l640 holds 0.3-0.6 GB, and the checks below compile again.
        timed = {precision: _seconds_per_pair(compile_request(precision), feeds[0]) for precision in candidates[:-1]}
        if timed:
            notes.append("timed " + ", ".join(f"{p} {seconds * 1e3:.1f} ms" for p, seconds in timed.items()))
        checked: list[str] = []
        for precision in [*check_order(timed), fallback]:
            request = compile_request(precision)
            psnr_db = min(psnr(_grey8(out), _grey8(ref)) for out, ref in
                          zip(self._run_all(request, feeds), references, strict=True))
            checked.append(f"{precision} {psnr_db:.1f} dB")
            if psnr_db >= self.min_psnr or precision == fallback:
                ov.save_model(lowered(precision), str(folder / "model.xml"), compress_to_fp16=False)
                return {"precision": precision, "psnr_db": repr(psnr_db),
                        "tried": "; ".join([*notes, "checked " + ", ".join(checked)])}
        raise AssertionError("the fallback always returns")

    def _compile_config(self, precision: str) -> dict[str, Any]:
        return compile_config(DTYPE_PRECISIONS[precision], self.threads)

    def _compile(self, folder: Path, precision: str) -> Any:
        try:
            model = self.core.read_model(str(folder / "model.xml"))
            return self.core.compile_model(model, "CPU", self._compile_config(precision)).create_infer_request()
        except Exception as exc:
            raise InputError(f"OpenVINO cannot read the cached model in {folder}: {first_line(exc)}",
                             fix="delete that folder") from exc

    @staticmethod
    def _run_all(request: Any, feeds: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        outputs = []
        for ir, vis in feeds:
            # share_inputs: OpenVINO reads the arrays in place (a synchronous call; nothing writes them meanwhile)
            # instead of copying 7 MB per 640x480 pair into its own tensors.
            request.infer({0: ir, 1: vis}, share_inputs=True)
            outputs.append(np.array(request.get_output_tensor(0).data, copy=True))
        return outputs

    # -- the backend hooks ---------------------------------------------------------------------------------------

    def _run_impl(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        pairs = [(np.ascontiguousarray(ir[i : i + 1], np.float32), np.ascontiguousarray(vis[i : i + 1], np.float32))
                 for i in range(ir.shape[0])]
        with self._lock:
            compiled = self.prepare(int(ir.shape[2]), int(ir.shape[3]))
            outputs = self._run_all(compiled.request, pairs)  # each a copy, (1, 3, H, W)
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=0)

    def close(self) -> None:
        self._compiled.clear()


def check_order(seconds: dict[str, float]) -> list[str]:
    """Precisions timed at ``seconds`` a pair, in the order their accuracy is checked (the first within the bound
    is taken): fastest first, an int8 kind counted INT8_MARGIN slower than it ran, so that it is taken over a float
    precision only when clearly faster: it is the least exact, and the only one whose accuracy depends on the
    calibration pairs."""
    return sorted(seconds, key=lambda p: seconds[p] * (INT8_MARGIN if p.startswith("int8") else 1.0))


def _seconds_per_pair(request: Any, feed: tuple[np.ndarray, np.ndarray]) -> float:
    """The best of TIMED_RUNS calls of ``request`` on one (1, 3, H, W) float32 pair, after one warm-up call."""
    request.infer({0: feed[0], 1: feed[1]})
    best = float("inf")
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        request.infer({0: feed[0], 1: feed[1]})
        best = min(best, time.perf_counter() - start)
    return best


def _grey8(decoded: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) network output -> the HxWx3 uint8 image the runtime makes of it (what PSNR is taken on)."""
    return denormalise(decoded[0])
