"""The attention-fusion report from TensorRT's layer information (tensorrt/layers.py).

No test here stands in a fake for TensorRT: where it must be absent, the test blocks the import.
"""

from __future__ import annotations

import json

from maefuse_deploy.tensorrt.layers import attention_report


def inspector_json(*layers) -> str:
    return json.dumps({"Layers": list(layers), "Bindings": ["ir", "vis", "fused"]})


def test_attention_fused_kernel_names():
    report = attention_report(
        inspector_json(
            {"Name": "/blocks.0/attn/qkv", "LayerType": "CaskGemm", "TacticName": "sm90_xmma_gemm"},
            {"Name": "/blocks.0/attn/core", "LayerType": "CaskFusedMHA", "TacticName": "fmha_v2_flash_attention_fp16"},
            {"Name": "mha_block_1", "LayerType": "gemm", "TacticName": "sm80_xmma_gemm_mha_v2"},
        )
    )
    assert report.status == "fused" and len(report.fused_layers) == 2
    assert report.summary().startswith("attention fused: yes")


def test_attention_layer_type_counts_as_fused():
    assert attention_report(inspector_json({"Name": "attn0", "LayerType": "Attention"})).status == "fused"


def test_attention_not_fused_when_softmax_stands_alone():
    report = attention_report(
        inspector_json(
            {"Name": "/blocks.0/attn/MatMul", "LayerType": "MatrixMultiply"},
            {"Name": "/blocks.0/attn/Softmax", "LayerType": "Softmax"},
            {"Name": "/blocks.0/attn/MatMul_1", "LayerType": "MatrixMultiply"},
        )
    )
    assert report.status == "not-fused"
    assert "scale on Q" in report.summary()


def test_attention_partly_fused():
    report = attention_report(
        inspector_json({"Name": "a", "LayerType": "CaskFusedMHA"}, {"Name": "b", "LayerType": "Softmax"})
    )
    assert report.status == "partly-fused"


def test_attention_inside_myelin_with_names_only():
    # Names-only verbosity is a list of strings; a Myelin node's name lists the ONNX nodes inside, Softmax too.
    report = attention_report(
        inspector_json("{ForeignNode[/blocks.0/attn/MatMul.../blocks.0/attn/Softmax]}", "/head/Conv")
    )
    assert report.status == "myelin"
    assert "probably" in report.summary()


def test_attention_unknown():
    assert attention_report("").status == "unknown"
    assert "no layer information" in attention_report("not json").summary()
    report = attention_report(inspector_json({"Name": "conv", "LayerType": "Convolution"}))
    assert report.status == "unknown" and "none of 1 layers" in report.summary()
    # "multiheadattention" is a module name, not a fused kernel.
    assert attention_report(inspector_json({"Name": "/fusion/MultiheadAttention/MatMul"})).status == "unknown"
