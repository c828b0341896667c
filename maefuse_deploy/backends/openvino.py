"""OpenVINO backend: runs a graph exported by ``maefuse-export --onnx`` on the CPU (layouts: backends/base.py).

OpenVINO reads our ONNX graphs directly and is built for this CPU's AVX-512 BF16/VNNI units. Four precisions:

``fp32``  the graph as exported, every op in float32 (``INFERENCE_PRECISION_HINT=f32``).
``bf16``  the same graph with OpenVINO's inference precision hint set to bf16: matmuls and convolutions run in
          bfloat16 with float32 accumulation; the weights stay float32 in the file.
``int8``  post-training quantization with NNCF of the linear layers (quantize_int8: the transformer preset without
          SmoothQuant, layer norms and softmax kept in float), calibrated on real IR/VIS pairs prepared exactly as
          the runtime prepares them; attention's Q K^T is int8 too unless calibrating it would hold over 1 GiB
          (ATTENTION_CALIBRATION_BUDGET; maefuse-l640 at 640x640: 625 MiB); attention's output projections, whose
          input's range follows the scene, take int8 weights and their input is quantized per frame by the CPU
          plugin (compress_projection_weights); softmax x V and everything else NNCF leaves unquantized run in
          float32. Calibration runs the float32 graph once per pair, so it costs a few calls at load time (and a
          few minutes for l640 on a 2-core CPU).
``int8-bf16``  int8 as above (the same quantized graph: Q K^T int8 too) with what stays in float (softmax x V,
          softmax and norms) in bf16 by the precision hint: on a CPU with BF16 units (AVX-512
          BF16, AMX) attention then stops being the float32 half of the time (maefuse-l640 at 640x640 on a Xeon with
          AMX: about 1.6 s per pair against 2.7 s for int8 and 2.1-2.3 s for bf16: benchmarks/README.md).

Threads: ``threads`` sets ``INFERENCE_NUM_THREADS`` (default: OpenVINO's, one per core); the latency hint runs one
request on all of them, which is what a camera pipeline calling ``run`` once per frame wants.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import INPUT_IR, INPUT_VIS, BatchProfile, read_graph_info, require_graph_file
from ..errors import InputError, UnavailableError
from ..processing import ir_to_grey8, prepare_pair, vis_to_bgr8
from ..sample_pairs import as_arrays, load_pairs
from .base import BackendBase
from .cpu_kernels import bf16_cap
from .openvino_attention import int8_attention_note, load_attention_kernel

PRECISIONS = ("fp32", "bf16", "int8", "int8-bf16")
# The registry's dtypes -> precisions.
DTYPE_PRECISIONS = {"float32": "fp32", "bfloat16": "bf16", "int8": "int8", "int8-bf16": "int8-bf16"}
DEFAULT_CALIBRATION_PAIRS = 8


def import_openvino() -> Any:
    """The ``openvino`` module, or an :class:`UnavailableError` saying how to install it."""
    try:
        import openvino
    except ImportError as exc:
        raise UnavailableError(f"OpenVINO is not available ({exc})",
                               fix='pip install "maefuse-deploy[openvino]"') from exc
    return openvino


# NNCF keeps every activation it calibrates of one pair alive at once. Attention's matmuls are worth giving it (it
# makes each Q K^T int8 and leaves softmax x V in float: maefuse-rt at 640x480 from an ONNX graph, int8 70.8 -> 45.5
# ms on a Xeon with AMX, 66.7 -> 54.4 ms limited to VNNI, the same 47.6 dB: benchmarks/README.md; int8 only, see
# quantize_int8). Softmax x V is never given to it (softmax_products): NNCF would leave it float anyway, and its
# input, heads x N x N per block, is what made calibration large (maefuse-l640 at 640x640: 16 x 1600 x 1600 x 2 images
# x 4 bytes = 330 MB a layer, 9 GB in all; a calibration that held it passed 14 GB before it was stopped). Q and K
# alone are 625 MiB there (peak memory of the whole quantization 9.2 -> 10.8 GB; limited to VNNI openvino-int8 4.39 ->
# 4.07 s a pair in maefuse-bench, its fused attention subgraphs 2.07 -> 1.46 s by PERF_COUNT). Up to this many bytes
# of their inputs they go to NNCF.
ATTENTION_CALIBRATION_BUDGET = 1 << 30
# Channels per run-time scale when the CPU plugin quantizes a compressed FullyConnected's input
# (compress_projection_weights): one scale per token and per 32 channels, so an outlier channel coarsens only its
# own group. 32 is the plugin's default; per token (a whole 1024-wide row of a random layer) had 1.5x its error
# at the same speed.
DYNAMIC_QUANTIZATION_GROUP_SIZE = 32


def activation_matmuls(model: Any) -> list[str]:
    """Names of the MatMuls whose two inputs are both activations: attention's Q x K^T and softmax x V (an ONNX
    graph's; OpenVINO's PyTorch frontend fuses each attention into one ScaledDotProductAttention op instead, which
    NNCF does not quantize)."""
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        if not any(_is_weight(op.input_value(index).get_node()) for index in range(2)):
            names.append(op.get_friendly_name())
    return names


def calibration_bytes(model: Any, names: Sequence[str]) -> float:
    """What NNCF keeps alive to calibrate the MatMuls ``names``: their inputs for one call, in bytes (float32; the
    first axis is IR and VIS of the pair together). A dynamic axis makes it unknown: infinite."""
    wanted, total = set(names), 0.0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or op.get_friendly_name() not in wanted:
            continue
        for index in range(2):
            shape = op.input(index).get_partial_shape()
            if shape.is_dynamic:
                return float("inf")
            total += 4.0 * float(np.prod([dim.get_length() for dim in shape]))
    return total


def softmax_products(model: Any, activations: Sequence[str]) -> list[str]:
    """Of the activation x activation MatMuls ``activations``, those that read a Softmax (through layout ops):
    softmax attention's softmax x V. Its softmax input, rows of weights near 1/N over 1200-1600 tokens, would round
    to 0 in uint8, and NNCF's transformer preset leaves it in float."""
    wanted = set(activations)
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() == "MatMul" and op.get_friendly_name() in wanted
            and any(_through_layout_ops(op.input_value(index).get_node()).get_type_name() == "Softmax"
                    for index in range(2))]


def attention_calibrates(model: Any, activations: Sequence[str]) -> bool:
    """Whether :func:`quantize_int8` makes attention's scores int8: the model has activation x
    activation MatMuls other than softmax x V (``activations``, :func:`activation_matmuls`: an ONNX graph's Q K^T,
    or linear attention's from either path) and calibrating those holds at most ``ATTENTION_CALIBRATION_BUDGET``
    bytes."""
    products = set(softmax_products(model, activations))
    calibrated = [name for name in activations if name not in products]
    return bool(calibrated) and calibration_bytes(model, calibrated) <= ATTENTION_CALIBRATION_BUDGET


def attention_projections(model: Any, activation_names: Sequence[str]) -> list[str]:
    """Names of the weight MatMuls that read an attention's output (softmax x V, or a fused attention op, through
    reshapes, transposes and constant scales): each block's output projection; in linear attention both parts of
    it, the fold ``(scale Cov) W^T`` and the projection of ``mean(V)``.

    Their input is an average of value vectors weighted by the softmax, whose range depends on how sharply the
    pair's tokens attend, which calibration pairs of another camera do not bound: maefuse-rt (one encoder head)
    calibrated on RoadScene day pairs read 31 dB from float32 on MSRS night pairs with a calibrated int8 range on
    them, 49 dB with these in float (the last decoder block's alone: 46 dB), so :func:`quantize_int8` quantizes
    their input per frame instead (:func:`compress_projection_weights`). They are a twelfth of a block's linear
    FLOPs. Linear block attention
    (model/vit.py: LinearAttention) folds its projection into a D x D matrix per image, ``(scale Cov) W^T``, the
    MatMul found here (graphs exported before the fold end in ``mean(V) + Q Cov``, an Add of an activation MatMul,
    read by the projection): the same holds (maefuse-rt-linear's graph at 640x480 calibrated on 8 RoadScene pairs,
    on the six MSRS pairs: 47.8-48.0 dB with the unfolded projections in float, 39.0-41.9 dB on the three night
    pairs with them int8). Folded, keeping it float costs nothing (D^3 per image, not N D^2). The projection of
    ``mean(V)`` (one token per image) is calibrated on one vector per calibration image, a range another scene
    leaves: int8, it put the three MSRS night pairs at 36.1-39.1 dB (calibrated on RoadScene day pairs), float
    47.7-48.1 dB on all six.
    """
    activations = set(activation_names)

    def attention_output(node: Any) -> bool:
        # OpenVINO's PyTorch frontend fuses softmax attention into one ScaledDotProductAttention op; an ONNX graph
        # keeps its softmax x V MatMul.
        node = _through_constant_scaling(node)
        kind = node.get_type_name()
        if kind == "ReduceMean":  # a mean over tokens, linear attention's mean(V): no other weight MatMul reads one
            return True
        if kind == "Add":
            return any(_through_layout_ops(node.input_value(index).get_node()).get_friendly_name() in activations
                       for index in range(2))
        return kind == "ScaledDotProductAttention" or (kind == "MatMul" and node.get_friendly_name() in activations)

    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() == "MatMul" and op.get_friendly_name() not in activations
            and any(attention_output(op.input_value(index).get_node()) for index in range(2))]


def compress_projection_weights(model: Any, names: Sequence[str]) -> int:
    """Gives the weight MatMuls ``names`` (attention's output projections, :func:`attention_projections`) int8
    weights, symmetric per output channel, stored as an int8 Constant, a Convert and a Multiply by the scales: the
    pattern OpenVINO's CPU plugin runs as a compressed FullyConnected, which quantizes its input at run time per
    token and per DYNAMIC_QUANTIZATION_GROUP_SIZE channels (compile_config) and multiplies on the int8 units.
    Nothing is calibrated: the weights' ranges are the weights', the input's are each frame's own, so a scene no
    calibration pair resembled cannot clip them. Returns how many it changed (a weight reaching its MatMul through
    a layout op is left float)."""
    import openvino.opset13 as ops

    wanted, changed = set(names), 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or op.get_friendly_name() not in wanted:
            continue
        source = op.input_value(1).get_node()
        if source.get_type_name() != "Constant" or len(source.get_output_partial_shape(0)) != 2:
            continue
        weight = source.get_data().astype(np.float32)
        # B is K x N (or N x K transposed): each output channel's scale is over its K inputs.
        reduce_axis = 1 if op.get_attributes()["transpose_b"] else 0
        scale = np.abs(weight).max(axis=reduce_axis, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        quantized = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
        dequantized = ops.multiply(ops.convert(ops.constant(quantized), np.float32),
                                   ops.constant(scale.astype(np.float32)))
        op.input(1).replace_source_output(dequantized.output(0))
        changed += 1
    return changed


def _through_layout_ops(node: Any) -> Any:
    """The node a value comes from past any Convert, Transpose or Reshape (ops that move it, not compute it)."""
    while node.get_type_name() in ("Convert", "Transpose", "Reshape") and node.get_input_size():
        node = node.input_value(0).get_node()
    return node


def _through_constant_scaling(node: Any) -> Any:
    """The node a value comes from past layout ops and multiplications by a constant (a scale, a head mask)."""
    node = _through_layout_ops(node)
    while node.get_type_name() == "Multiply":
        inputs = [node.input_value(index).get_node() for index in range(2)]
        constants = [_is_weight(source) for source in inputs]
        if constants.count(True) != 1:
            break
        node = _through_layout_ops(inputs[constants.index(False)])
    return node


def _is_weight(node: Any) -> bool:
    # A weight reaches its MatMul as a Constant, possibly through a Convert, Transpose or Reshape.
    return bool(_through_layout_ops(node).get_type_name() == "Constant")


def bf16_units(core: Any) -> tuple[bool, str]:
    """Whether OpenVINO runs bf16 on units of this CPU, and if not, why (for the backend's notes): the plugin's
    capabilities, less a oneDNN cap that leaves them out (cpu_kernels.bf16_cap)."""
    if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return False, "the CPU has no bf16 units"
    capped = bf16_cap()
    return not capped, capped


def compile_config(precision: str, threads: int | None = None) -> dict[str, Any]:
    """The CPU plugin's settings for one of PRECISIONS: the latency hint (one request on every core), and the
    precision of what runs in float: bf16 for ``bf16`` and ``int8-bf16``; f32 otherwise, so that what NNCF left in
    float under ``int8`` runs in float32 and not at the plugin's choice."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                              "INFERENCE_PRECISION_HINT": "bf16" if precision in ("bf16", "int8-bf16") else "f32"}
    if precision.startswith("int8"):
        # The run-time quantization of the projections' inputs (compress_projection_weights), pinned rather than
        # left to the plugin's default: a scale per token and per 32 channels.
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = DYNAMIC_QUANTIZATION_GROUP_SIZE
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def quantize_int8(model: Any, feeds: Sequence[dict[Any, np.ndarray]]) -> Any:
    """NNCF post-training int8 of an OpenVINO model, calibrated on ``feeds`` (one input dict per call, keyed by input
    name or index): the transformer preset without SmoothQuant; softmax x V (:func:`softmax_products`) and the
    other activation x activation matmuls (Q K^T) where calibrating them would hold over
    ``ATTENTION_CALIBRATION_BUDGET`` bytes (:func:`attention_calibrates`) left in float; under it NNCF makes Q K^T
    int8. Attention's output projections (:func:`attention_projections`) are not calibrated, because their input's
    range follows the scene: they get int8 weights and the plugin quantizes their input per frame
    (:func:`compress_projection_weights`). Both int8 precisions use this graph; they differ in what the float part
    runs in.

    Q K^T int8 with the rest in bf16 holds the same accuracy and is faster on a CPU without AMX (the AMD EPYC Zen 5,
    640x480 graphs calibrated on RoadScene, fused PSNR on the six MSRS pairs: maefuse-tiny 40.2 -> 36.1 ms,
    maefuse-rt 36.6 -> 32.6 ms, maefuse-rt-linear 19.5 -> 18.4 ms, maefuse-l640 at 640x640 2.25 -> 2.07 s, every
    pair within 0.1 dB of Q K^T in bf16; benchmarks/README.md). An earlier recipe kept int8-bf16's Q K^T in bf16: it
    gained nothing on maefuse-rt with AMX (31.6 vs 32.0 ms) and read 37 dB on maefuse-micro; with the recipe since
    (recipe 7: no SmoothQuant, the output projections in float) micro reads 52.3-53.9 dB either way (64x64,
    three MSRS pairs).

    SmoothQuant is off because its per-channel scales, fitted to the calibration pairs, do not carry to other
    cameras: maefuse-tiny at 640x480 calibrated on RoadScene and checked on MSRS read 24.5-27.0 dB from float32 with
    it and 44.8-45.2 dB without it, at the same speed (random maefuse-l640: benchmarks/README.md). A deployment
    calibrates on whatever pairs it has, rarely its own camera's.
    """
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters
    except ImportError as exc:
        raise UnavailableError(f"NNCF is not available for OpenVINO INT8 ({exc})",
                               fix='pip install "maefuse-deploy[openvino]"') from exc
    activations = activation_matmuls(model)
    products = softmax_products(model, activations)
    calibrated = attention_calibrates(model, activations)
    ignored = [*products, *(name for name in activations if name not in products and not calibrated)]
    projections = attention_projections(model, activations)
    logger = logging.getLogger("nncf")
    saved = logger.level
    logger.setLevel(logging.WARNING)  # one INFO line per ignored matmul (48 for l640); the progress bars stay
    try:
        quantized = nncf.quantize(
            model,
            nncf.Dataset(list(feeds)),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(feeds),
            ignored_scope=nncf.IgnoredScope(names=[*ignored, *projections], validate=False),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1, convolution=-1)),
        )
    finally:
        logger.setLevel(saved)
    compress_projection_weights(quantized, projections)
    return quantized


def load_calibration_pairs(folder: str | os.PathLike[str], count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``count`` pairs of ``folder`` (``ir/`` and ``vi/`` inside) as camera frames: IR HxW uint8 grey,
    VIS HxWx3 uint8 BGR (OpenCV layout), in name order.
    """
    folder = Path(folder)
    if count < 1:
        raise InputError(f"calibration needs at least 1 pair, got {count}")
    if not (folder / "ir").is_dir() or not (folder / "vi").is_dir():
        raise InputError(f"calibration folder {folder} has no ir/ and vi/ subfolders",
                         fix="pass a folder of registered pairs such as ../shared/data/ivif/RoadScene")
    return as_arrays(load_pairs(folder, count))


class OpenVinoBackend(BackendBase):
    """An OpenVINO compiled model over an exported graph; the graph's metadata says its size, io mode and batch.

    ``calibration``: for ``int8``, real pairs as camera frames (OpenCV layout, what ``Fuser.fuse`` takes), or a
    folder with ``ir/`` and ``vi/`` (``calibration_pairs`` of them are used). They are prepared the way this
    graph is fed (float io: the official policy at the graph's size; uint8 io: frames at the camera size).
    """

    name = "openvino"
    native = "numpy"

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str = "cpu",
        *,
        precision: str = "fp32",
        threads: int | None = None,
        calibration: str | os.PathLike[str] | Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        calibration_pairs: int = DEFAULT_CALIBRATION_PAIRS,
    ) -> None:
        path = Path(path)
        if precision not in PRECISIONS:
            raise InputError(f"unknown OpenVINO precision {precision!r}", fix=f"use one of {', '.join(PRECISIONS)}")
        if device != "cpu":
            raise InputError(f"the openvino backend runs on the CPU, not {device!r}", fix="pass --device cpu")
        require_graph_file(path)
        if precision.startswith("int8") and calibration is None:
            raise InputError("OpenVINO INT8 needs real calibration pairs",
                             fix="pass a folder of registered pairs (ir/ and vi/), e.g. ../shared/data/ivif/RoadScene")
        ov = import_openvino()
        self.info, self.static_batch = read_graph_info(path)
        if self.info.precision != "fp32":
            raise InputError(f"{path} is a {self.info.precision} graph; OpenVINO takes the fp32 export and lowers "
                             "the precision itself", fix="export with --precision fp32")
        self.precision = precision
        self.io = "uint8" if self.info.io == "uint8" else "float"
        self.patch_size = int(self.info.config["patch_size"])
        if self.io == "uint8":
            self.input_size: tuple[int, int] | None = (self.info.camera_height, self.info.camera_width)
        else:
            self.input_size = (self.info.height, self.info.width)
        self.model_size = (self.info.height, self.info.width)
        # A static-batch graph takes exactly its batch (the base pads); a dynamic one the range it was exported for.
        batch = self.static_batch
        self.profile = BatchProfile(batch, batch, batch) if batch else self.info.batch
        self.quantize_s: float | None = None

        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line text
            raise InputError(f"OpenVINO cannot read {path}: {first_line(exc)}", fix="re-export the graph") from exc
        if precision.startswith("int8"):
            if calibration is None:  # rejected at the top already, before OpenVINO loads
                raise AssertionError("int8 without calibration pairs")
            frames = (load_calibration_pairs(calibration, calibration_pairs)
                      if isinstance(calibration, str | os.PathLike) else list(calibration)[:calibration_pairs])
            start = time.perf_counter()
            model = self._quantize(model, frames)
            self.quantize_s = time.perf_counter() - start
            # Softmax x V on the int8 units too, where the kernel runs here (openvino_attention.py).
            attention_note = int8_attention_note(load_attention_kernel(ov, core), model)
        try:
            self.compiled = core.compile_model(model, "CPU", compile_config(precision, threads))
        except Exception as exc:
            raise InputError(f"OpenVINO cannot compile {path} for the CPU: {first_line(exc)}",
                             fix="check that the CPU supports the precision (bf16 needs AVX-512 BF16 or AMX)") from exc
        self.request = self.compiled.create_infer_request()
        self.description = (f"openvino {precision}: {path} (io {self.io}, {self.info.width}x{self.info.height}, "
                            f"batch {self.profile})")
        if self.quantize_s is not None:
            self.build_notes = (f"NNCF int8, calibrated on {len(frames)} real pairs in {self.quantize_s:.1f} s; "
                                f"{attention_note}",)

    @classmethod
    def open(cls, source: str | os.PathLike[str] | None, *, device: str = "cpu", dtype: str | None = None,
             config: str | None = None, **options: Any) -> OpenVinoBackend:
        if source is None:
            raise InputError("the openvino backend needs a graph", fix="pass the fp32 .onnx path")
        return cls(source, device, precision=DTYPE_PRECISIONS[dtype or "float32"], **options)

    def _network_inputs(self, frames: list[tuple[np.ndarray, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Camera frames -> one feed per pair at batch 1, in this graph's io layout."""
        import cv2

        feeds = []
        for index, (ir, vis) in enumerate(frames):
            if self.io == "uint8":
                assert self.input_size is not None
                size = (self.input_size[1], self.input_size[0])
                ir8 = cv2.resize(ir_to_grey8(ir), size, interpolation=cv2.INTER_LINEAR)
                vis8 = vis_to_bgr8(vis)
                vis8 = cv2.cvtColor(vis8, cv2.COLOR_GRAY2BGR) if vis8.ndim == 2 else vis8
                feeds.append({INPUT_IR: ir8[None], INPUT_VIS: cv2.resize(vis8, size)[None]})
            else:
                assert self.input_size is not None
                ir_net, vis_net, _ = prepare_pair(ir, vis, "official", self.input_size, self.patch_size,
                                                  name=f"calibration pair {index}", resize=True)
                feeds.append({INPUT_IR: ir_net[None], INPUT_VIS: vis_net[None]})
        if self.static_batch and self.static_batch > 1:
            feeds = [{k: np.repeat(v, self.static_batch, axis=0) for k, v in feed.items()} for feed in feeds]
        return feeds

    def _quantize(self, model: Any, frames: list[tuple[np.ndarray, np.ndarray]]) -> Any:
        if not frames:
            raise InputError("OpenVINO INT8 calibration found no pairs", fix="pass a folder with ir/ and vi/ pairs")
        return quantize_int8(model, self._network_inputs(frames))

    def _run_impl(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        if self.request is None:
            raise InputError(f"the {self.name} backend is closed", fix="open a new one")
        # share_inputs: read in place, not copied (a synchronous call; nothing writes the arrays meanwhile).
        feeds = {INPUT_IR: np.ascontiguousarray(ir), INPUT_VIS: np.ascontiguousarray(vis)}
        self.request.infer(feeds, share_inputs=True)
        # The output tensor is the request's own buffer, overwritten by the next call: copy it out.
        return np.array(self.request.get_output_tensor(0).data, copy=True)

    def close(self) -> None:
        self.request = None
        self.compiled = None


def first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
