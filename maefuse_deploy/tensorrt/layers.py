"""Did TensorRT fuse attention? A heuristic reading of the engine inspector's layer information (JSON).

TensorRT fuses multi-head attention only when the graph matches its pattern (docs/architecture.md §6), and an
unfused ViT-L runs its 1600x1600 attention through separate MatMul and Softmax kernels. The inspector does not say
"fused"; this module looks for traces, in each layer's name, type, tactic and metadata (lower-cased):

- fused: a layer of type ``Attention`` (TensorRT's own attention layer), or a token ``mha`` / ``fmha`` standing
  alone in a name (``_gemm_mha_v2``, ``fmha_v2_...``), ``fusedmha``, or ``flash`` next to ``attn``/``attention``:
  the names of TensorRT's fused multi-head-attention kernels;
- Myelin: a ``Myelin`` / ``ForeignNode`` layer. TensorRT hands transformer subgraphs to its Myelin compiler,
  which fuses attention inside but does not list its kernels, so this reads as "probably fused";
- not fused: a standalone Softmax layer outside any Myelin node.

It is a heuristic: kernel names are not a documented interface and change between TensorRT versions. The layer
information itself is saved beside the engine (``ENGINE.layers.json``) for a human to read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_FUSED = re.compile(r"(?<![a-z0-9])f?mha(?![a-z])|fused_?mha|flash[_-]?(?:attn|attention)")
_MYELIN = ("myelin", "foreignnode")
_EXAMPLES = 3


@dataclass(frozen=True)
class AttentionReport:
    status: str  # fused | partly-fused | myelin | not-fused | unknown
    fused_layers: tuple[str, ...]
    unfused_layers: tuple[str, ...]
    myelin_layers: tuple[str, ...]
    layer_count: int

    def summary(self) -> str:
        if self.status == "fused":
            return (
                f"attention fused: yes ({len(self.fused_layers)} fused attention layers, e.g. {_eg(self.fused_layers)})"
            )
        if self.status == "partly-fused":
            return (
                f"attention fused: partly ({len(self.fused_layers)} fused attention layers, but "
                f"{len(self.unfused_layers)} standalone Softmax layers remain, e.g. {_eg(self.unfused_layers)})"
            )
        if self.status == "myelin":
            return (
                "attention fused: probably (inside TensorRT's Myelin compiler, which does not list its kernels; "
                f"{len(self.myelin_layers)} Myelin layers)"
            )
        if self.status == "not-fused":
            return (
                f"attention fused: no ({len(self.unfused_layers)} standalone Softmax layers, e.g. "
                f"{_eg(self.unfused_layers)}); export attention in TensorRT's pattern (scale on Q before the "
                "first MatMul)"
            )
        if self.layer_count:
            return (
                f"attention fused: unknown (none of {self.layer_count} layers looks like attention, Softmax or Myelin)"
            )
        return "attention fused: unknown (the engine holds no layer information)"


def layer_records(info_json: str) -> list[dict[str, Any]]:
    """The ``Layers`` of an inspector JSON as dicts; names-only verbosity (a list of strings) becomes ``{"Name"}``."""
    try:
        data = json.loads(info_json)
    except (TypeError, ValueError):
        return []
    layers = data.get("Layers", []) if isinstance(data, dict) else []
    records = []
    for layer in layers:
        if isinstance(layer, dict):
            records.append(layer)
        elif isinstance(layer, str):
            records.append({"Name": layer})
    return records


def attention_report(info_json: str) -> AttentionReport:
    fused, unfused, myelin = [], [], []
    records = layer_records(info_json)
    for layer in records:
        name = str(layer.get("Name", ""))
        kind = str(layer.get("LayerType", "")).lower()
        text = " ".join(str(layer.get(key, "")) for key in ("Name", "LayerType", "TacticName", "Metadata")).lower()
        if kind == "attention" or _FUSED.search(text):
            fused.append(name)
        elif any(marker in text for marker in _MYELIN):
            myelin.append(name)
        elif kind == "softmax" or (not kind and "softmax" in name.lower()):
            unfused.append(name)
    if fused:
        status = "partly-fused" if unfused else "fused"
    elif unfused:
        status = "not-fused"
    elif myelin:
        status = "myelin"
    else:
        status = "unknown"
    return AttentionReport(status, tuple(fused), tuple(unfused), tuple(myelin), len(records))


def _eg(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:_EXAMPLES])
    return shown + (", ..." if len(names) > _EXAMPLES else "")
