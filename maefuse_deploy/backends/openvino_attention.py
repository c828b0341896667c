"""Softmax attention on the CPU's int8 units for OpenVINO: a small C++ extension, built here on first use.

Why: OpenVINO's CPU plugin runs attention's softmax x V in float (f32, or bf16 where the CPU has BF16 units). A
calibrated uint8 range cannot hold softmax weights of about 1/1600 next to rows whose largest weight is near 1
(openvino.softmax_products), and stock OpenVINO has no way to quantize each row by its own maximum. The kernel in
``kernels/int8_attention.cpp`` does that: Q and K int8 per token, the softmax in float32, each probability row to
uint8 by its maximum, V int8 per channel, both products on AVX-512 VNNI. On maefuse-l640 at 640x640, int8 limited to
VNNI, it takes a pair from 2.27 to 1.88 s at the same PSNR from float32 (benchmarks/README.md).

The extension (``kernels/openvino_extension.cpp``: the op ``maefuse::Int8Attention``) is compiled with the
machine's C++ compiler (``$CXX``, else ``c++`` or ``g++``) against the pip OpenVINO's own headers and libraries,
and cached like a model (backends/cache.py: keyed by the sources' hash, the compiler and the flags; OpenVINO's
version makes it stale), under the cache root rather than a backend's ``cache_dir``, since it belongs to the
machine, not to a model. Where it cannot run (no AVX-512 VNNI, a oneDNN cap below VNNI, no compiler, a build
that fails, ``MAEFUSE_INT8_ATTENTION=off``) or is not known to help (a CPU with AMX, unless
``MAEFUSE_INT8_ATTENTION=on``), the int8 graphs keep OpenVINO's own attention and the backend says why in one line.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .cache import CacheKey, ModelCache
from .cpu_kernels import ISA_CAPS_WITHOUT_AMX, ISA_CAPS_WITHOUT_VNNI, cap_leaving_out, cpu_flag_set, isa_caps

KERNEL_DIR = Path(__file__).parent / "kernels"
SOURCES = ("int8_attention.cpp", "openvino_extension.cpp")
HEADERS = ("int8_attention.hpp",)
LIBRARY = "libmaefuse_openvino_attention.so"
OP_TYPE = "Int8Attention"
HEAD_DIM = 64  # kernels/int8_attention.hpp: kInt8AttentionHeadDim
CXX_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl",
             "-mavx512vnni")
SWITCH_ENV = "MAEFUSE_INT8_ATTENTION"
# /proc/cpuinfo's names for what CXX_FLAGS let the compiler use.
CPU_FLAGS = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni")


@dataclass(frozen=True)
class AttentionKernel:
    """The built extension (``library``), or None and why not (``why_not``, one line). ``identity`` goes into
    the cache keys of the models that use it."""

    library: Path | None
    identity: str
    why_not: str = ""


def why_not(flags: frozenset[str] | None, caps: dict[str, str], switch: str) -> str:
    """Why the kernel is not used ('' when it is), from the CPU's flags (/proc/cpuinfo's names, None: unreadable),
    the oneDNN caps in force (cpu_kernels.isa_caps) and the switch's value (``MAEFUSE_INT8_ATTENTION``: ``off``,
    ``on``, or ``auto``/unset).

    auto leaves it off on a CPU with AMX: OpenVINO's own attention runs on the AMX tiles there, where this VNNI
    kernel was never measured (the AMX Xeon's int8-bf16 rows, 1.61-1.75 s a maefuse-l640 pair, are stock OpenVINO's);
    ``on`` uses it there too, to measure it."""
    choice = switch.strip().lower() or "auto"
    if choice in ("0", "off", "no", "false"):
        return f"{SWITCH_ENV}={switch}"
    if choice not in ("1", "on", "yes", "true", "auto"):
        raise InputError(f"{SWITCH_ENV}={switch!r} is not a setting: use off, on or auto (the default)")
    if flags is None:
        return "/proc/cpuinfo unreadable"
    missing = [flag for flag in CPU_FLAGS if flag not in flags]
    if missing:
        return f"the CPU has no {', '.join(missing)}"
    capped = cap_leaving_out(ISA_CAPS_WITHOUT_VNNI, caps)
    if capped:  # a process run under it (emulating an older CPU) should not get the kernel either
        return f"{capped} leaves VNNI out"
    if choice == "auto" and "amx_tile" in flags and not cap_leaving_out(ISA_CAPS_WITHOUT_AMX, caps):
        return (f"the CPU has AMX, which OpenVINO's own attention uses (the kernel is AVX-512 VNNI; "
                f"{SWITCH_ENV}=on to use it anyway)")
    return ""


def cpu_why_not() -> str:
    """Why this process does not use the kernel ('' when it does): :func:`why_not` for this machine, its oneDNN caps
    and its switch."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"built for Linux x86-64, not {platform.system()} {platform.machine()}"
    return why_not(cpu_flag_set(), isa_caps(), os.environ.get(SWITCH_ENV, ""))


def _compiler() -> str | None:
    named = os.environ.get("CXX")
    if named:
        return shutil.which(named)
    return shutil.which("c++") or shutil.which("g++")


def _openvino_paths(ov: Any) -> tuple[Path, list[Path]]:
    """OpenVINO's include folder and the libraries the extension links: the pip package ships both."""
    root = Path(ov.__file__).parent
    libs = root / "libs"
    runtime = sorted(libs.glob("libopenvino.so*"))
    tbb = sorted(libs.glob("libtbb.so*"))
    if not (root / "include" / "openvino").is_dir() or not runtime or not tbb:
        raise FileNotFoundError(f"OpenVINO's headers or libraries are not in {root}")
    return root / "include", [runtime[0], tbb[0]]


def attention_kernel(ov: Any) -> AttentionKernel:
    """The extension for this machine: checked, then read from the cache or compiled into it (2.2 s on the Zen 5)."""
    why = cpu_why_not()
    if why:
        return AttentionKernel(None, f"off: {why}", why)
    compiler = _compiler()
    if compiler is None:
        why = "no C++ compiler (set CXX, or install g++)"
        return AttentionKernel(None, f"off: {why}", why)
    try:
        include, libraries = _openvino_paths(ov)
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60,
                                 check=True).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError) as exc:
        why = f"cannot build the int8 attention kernel: {exc}"
        return AttentionKernel(None, f"off: {why}", why)
    digest = hashlib.sha256()
    for name in (*SOURCES, *HEADERS):
        digest.update(name.encode())
        digest.update((KERNEL_DIR / name).read_bytes())
    key = CacheKey("openvino-extension",
                   (("sources", digest.hexdigest()), ("compiler", version), ("flags", " ".join(CXX_FLAGS))),
                   (("openvino", ov.__version__),))

    def build(folder: Path) -> dict[str, str]:
        command = [compiler, *CXX_FLAGS, f"-I{include}", *(str(KERNEL_DIR / name) for name in SOURCES),
                   *(str(path) for path in libraries), f"-Wl,-rpath,{libraries[0].parent}",
                   "-o", str(folder / LIBRARY)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            errors = [line for line in lines if "error" in line.lower()]
            raise RuntimeError((errors or lines or [f"{compiler} exited with {done.returncode}"])[0])
        return {"compiler": version}

    try:
        result = ModelCache().get_or_build(key, build)
    except (OSError, RuntimeError, subprocess.SubprocessError, InputError) as exc:
        why = f"the int8 attention kernel did not build: {exc}"
        return AttentionKernel(None, f"off: {why}", why)
    return AttentionKernel(result.folder / LIBRARY, f"{digest.hexdigest()[:16]} {version}")


def load_attention_kernel(ov: Any, core: Any) -> AttentionKernel:
    """:func:`attention_kernel`, loaded into ``core`` where it built, so that graphs holding its op compile and read
    back."""
    kernel = attention_kernel(ov)
    if kernel.library is not None:
        core.add_extension(str(kernel.library))
    return kernel


def _sdpa_inputs(op: Any) -> tuple[list[Any], float] | None:
    """Q, K, V and the scale of a ScaledDotProductAttention op (OpenVINO's PyTorch frontend makes one of softmax
    attention): with no mask or an all-zero one, a constant scale or none (then 1/sqrt(64)), not causal."""
    if op.get_attributes().get("causal"):
        return None
    if op.get_input_size() > 3:
        mask = op.input_value(3).get_node()
        if mask.get_type_name() != "Constant" or np.any(mask.get_data()):
            return None
    scale = HEAD_DIM ** -0.5  # the op's default: 1/sqrt(head width)
    if op.get_input_size() > 4:
        node = op.input_value(4).get_node()
        if node.get_type_name() != "Constant" or node.get_data().size != 1:
            return None
        scale = float(node.get_data().reshape(()))
    return [_before_fake_quantize(op.input_value(index)) for index in range(3)], scale


def _before_fake_quantize(value: Any) -> Any:
    """The value a FakeQuantize reads (NNCF's int8 Q and K): the kernel quantizes them itself, per token."""
    node = value.get_node()
    return node.input_value(0) if node.get_type_name() == "FakeQuantize" else value


def _constant(value: Any) -> np.ndarray | None:
    node = value.get_node()
    return node.get_data() if node.get_type_name() == "Constant" else None


def _permutation(node: Any) -> list[int] | None:
    """The order a Transpose with a constant order applies, or None for any other node."""
    order = _constant(node.input_value(1)) if node.get_type_name() == "Transpose" else None
    return None if order is None else [int(axis) for axis in order.ravel()]


def _ones(value: Any) -> bool:
    """Whether ``value`` is all ones: a constant, or a Broadcast of one (the ONNX frontend's Slice steps)."""
    node = value.get_node()
    if node.get_type_name() == "Broadcast":
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant" and bool(np.all(node.get_data() == 1))


@dataclass(frozen=True)
class _Head:
    """Where Q, K or V comes from in the qkv projection's output: [B, N, 3, H, 64] ``source``, which of the three
    (``index``), and the constant it was multiplied by on the way (``factor``: the softmax scale folded into Q)."""

    source: Any
    index: int
    factor: float


def _qkv_head(value: Any) -> _Head | None:
    """``value`` as one of Q, K, V picked from the qkv projection's output, or None. The pattern is what both
    OpenVINO frontends make of model/vit.py's ``qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)`` and its
    unbinding: Transpose(2, 0, 3, 1, 4), then Split (PyTorch), Slice (ONNX) or Gather on axis 0 (Squeeze after the
    first two), then a scalar Multiply and NNCF's FakeQuantize or not."""
    factor = 1.0
    node = value.get_node()
    while node.get_type_name() in ("FakeQuantize", "Multiply"):
        if node.get_type_name() == "Multiply":
            scalar = _constant(node.input_value(1))
            if scalar is None or scalar.size != 1:
                return None
            factor *= float(scalar.reshape(()))
        value = node.input_value(0)
        node = value.get_node()
    if node.get_type_name() == "Squeeze":
        axes = _constant(node.input_value(1)) if node.get_input_size() > 1 else None
        if axes is None or axes.ravel().tolist() != [0]:
            return None
        value = node.input_value(0)
        node = value.get_node()
        if node.get_type_name() == "Split":
            axis = _constant(node.input_value(1))
            if axis is None or int(axis.reshape(())) != 0 or node.get_output_size() != 3:
                return None
            index = value.get_index()
        elif node.get_type_name() == "Slice" and node.get_input_size() == 5:
            start, stop, axes = (_constant(node.input_value(i)) for i in (1, 2, 4))
            if (start is None or stop is None or axes is None or start.size != 1 or axes.ravel().tolist() != [0]
                    or stop.ravel().tolist() != [int(start.reshape(())) + 1] or not _ones(node.input_value(3))):
                return None
            index = int(start.reshape(()))
        else:
            return None
    elif node.get_type_name() == "Gather":
        picked, axis = _constant(node.input_value(1)), _constant(node.input_value(2))
        if picked is None or axis is None or picked.size != 1 or picked.ndim != 0 or int(axis.reshape(())) != 0:
            return None
        index = int(picked.reshape(())) % 3
    else:
        return None
    transpose = node.input_value(0).get_node()
    if _permutation(transpose) != [2, 0, 3, 1, 4]:
        return None
    source = transpose.input_value(0)
    shape = source.get_partial_shape()
    if shape.is_dynamic or shape[2].get_length() != 3:
        return None
    return _Head(source, index, factor)


def _packed_qkv(inputs: list[Any]) -> tuple[Any, float] | None:
    """The qkv projection's output [B, N, 3, H, 64] and the factor Q and K were scaled by, where Q, K and V are its
    three parts in order (the kernel then reads them there, strided, instead of from transposed copies)."""
    heads = [_qkv_head(value) for value in inputs]
    if any(head is None for head in heads):
        return None
    q, k, v = heads
    assert q is not None and k is not None and v is not None
    if ([q.index, k.index, v.index] != [0, 1, 2] or v.factor != 1.0
            or not (q.source.get_node() is k.source.get_node() is v.source.get_node())
            or not (q.source.get_index() == k.source.get_index() == v.source.get_index())):
        return None
    return q.source, q.factor * k.factor


def _merging_transpose(site: Any) -> Any | None:
    """The Transpose(0, 2, 1, 3) that alone reads the attention's [B, H, N, 64] output, turning it tokens first
    for the output projection: the kernel then writes [B, N, H, 64] itself."""
    consumers = [target.get_node() for target in site.output(0).get_target_inputs()]
    if len(consumers) != 1 or _permutation(consumers[0]) != [0, 2, 1, 3]:
        return None
    return consumers[0]


def _matmul_attention_inputs(softmax: Any) -> tuple[list[Any], float, Any] | None:
    """An exported graph's attention, ``MatMul(Softmax(MatMul(Q, K^T)), V)`` with Q already scaled and NNCF's
    FakeQuantize on Q and K or not: Q, K, V, the scale (1) and the product to replace."""
    rank = softmax.get_output_partial_shape(0).rank
    axis = softmax.get_attributes().get("axis")
    if rank.is_dynamic or axis not in (-1, rank.get_length() - 1):
        return None
    consumers = [target.get_node() for target in softmax.output(0).get_target_inputs()]
    scores = softmax.input_value(0).get_node()
    if len(consumers) != 1 or scores.get_type_name() != "MatMul" or scores.get_attributes()["transpose_a"]:
        return None
    product = consumers[0]
    if (product.get_type_name() != "MatMul" or product.input_value(0).get_node() is not softmax
            or product.get_attributes()["transpose_a"] or product.get_attributes()["transpose_b"]):
        return None
    key = scores.input_value(1)
    if not scores.get_attributes()["transpose_b"]:
        last = rank.get_length() - 1
        if _permutation(key.get_node()) != [*range(last - 1), last, last - 1]:
            return None
        key = key.get_node().input_value(0)
    return ([_before_fake_quantize(scores.input_value(0)), _before_fake_quantize(key), product.input_value(1)],
            1.0, product)


def attention_sites(model: Any) -> list[tuple[Any, list[Any] | None, float]]:
    """Every softmax attention of ``model``: (the op whose output is the attention's, its Q, K and V when the kernel
    computes it exactly, else None, the scale). The kernel's cases: self-attention on float32 Q, K and V of one
    static shape [..., N, 64], no mask, not causal."""
    sites: list[tuple[Any, list[Any] | None, float]] = []
    for op in model.get_ordered_ops():
        inputs: list[Any] | None
        if op.get_type_name() == "ScaledDotProductAttention":
            found = _sdpa_inputs(op)
            site, (inputs, scale) = op, found if found is not None else (None, 0.0)
        elif op.get_type_name() == "Softmax":
            matched = _matmul_attention_inputs(op)
            if matched is None:
                continue  # a softmax that is not attention's
            inputs, scale, site = matched
        else:
            continue
        if inputs is not None:
            shapes = [value.get_partial_shape() for value in inputs]
            if (shapes[0].is_dynamic or len(shapes[0]) < 2 or shapes[0][-1].get_length() != HEAD_DIM
                    or any(shape != shapes[0] for shape in shapes)
                    or any(value.get_element_type().get_type_name() != "f32" for value in inputs)):
                inputs = None
        sites.append((site, inputs, scale))
    return sites


def use_int8_attention(model: Any, library: Path, *, in_place: bool = True) -> tuple[int, int]:
    """Puts ``maefuse::Int8Attention`` in place of each softmax attention of ``model`` that it computes exactly
    (:func:`attention_sites`); returns (replaced, softmax attentions in all). Where Q, K and V are the qkv
    projection's output split into heads, the op reads that output as it is, and where the attention's output is
    only transposed back to tokens first, the op writes it so: the transposes, which OpenVINO's own attention
    absorbs, then do not run as copies. ``in_place=False`` keeps them (the A/B in benchmarks/int8_attention_ab.py)."""
    from openvino.utils.node_factory import NodeFactory

    factory = NodeFactory()
    factory.add_extension(str(library))
    sites = attention_sites(model)
    replaced = 0
    for site, inputs, scale in sites:
        if inputs is None:
            continue
        packed = _packed_qkv(inputs) if in_place else None
        arguments, layout = (inputs, "heads_first") if packed is None else ([packed[0]], "packed_qkv")
        scale *= 1.0 if packed is None else packed[1]
        merge = _merging_transpose(site) if in_place and len(site.get_output_partial_shape(0)) == 4 else None
        node = factory.create(OP_TYPE, arguments, {"scale": scale, "layout": layout,
                                                   "output": "heads_first" if merge is None else "tokens_first"})
        node.set_friendly_name(site.get_friendly_name())
        (site if merge is None else merge).output(0).replace(node.output(0))
        replaced += 1
    if replaced:
        model.validate_nodes_and_infer_types()
    return replaced, len(sites)


def int8_attention_note(kernel: AttentionKernel, model: Any) -> str:
    """Applies the kernel to an int8 ``model`` where it runs (:func:`use_int8_attention`) and says what happened,
    in the words of the backends' lines."""
    if kernel.library is None:
        return f"int8 attention kernel off: {kernel.why_not}"
    replaced, total = use_int8_attention(model, kernel.library)
    if not total:  # linear block attention (maefuse-rt-linear): no softmax to take
        return "int8 attention kernel unused: no softmax attention"
    return f"int8 attention kernel on {replaced} of {total} attention ops"
