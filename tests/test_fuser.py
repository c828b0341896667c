"""Fuser's public contract: Fuser.open for any model, --device auto, tensor in -> tensor out, odd frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maefuse_deploy import Fuser
from maefuse_deploy.backends import resolve_device
from maefuse_deploy.errors import InputError, UnavailableError
from maefuse_deploy.export import ExportSpec, export_onnx
from maefuse_deploy.model import build_model, get_config

RNG = np.random.default_rng(5)
IR = RNG.integers(0, 256, (64, 64), dtype=np.uint8)
VIS = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def micro():
    return Fuser.open("random:maefuse-micro", device="cpu")


@pytest.fixture(scope="module")
def uint8_graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("graph") / "micro_u8.onnx"
    model = build_model(get_config("maefuse-micro"), seed=0)
    export_onnx(model, path, ExportSpec(64, 64, batch=(1, 1, 2), io="uint8"), verify=False)
    return path


def test_open_is_from_checkpoint_and_auto_is_the_default_device(micro):
    assert Fuser.from_checkpoint.__func__ is Fuser.open.__func__  # one constructor, two names
    assert resolve_device() == resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    auto = Fuser.open("random:maefuse-micro")
    assert auto.backend.name == "torch"
    np.testing.assert_array_equal(auto.fuse(IR, VIS), micro.fuse(IR, VIS))


@pytest.mark.parametrize(("device", "error"), [("bogus", InputError), ("cuda:x", InputError), ("gpu", InputError)])
def test_bad_device_names_are_one_line_errors(device, error):
    with pytest.raises(error) as info:
        resolve_device(device)
    assert "\n" not in str(info.value) and "auto" in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_refused_not_rewritten():
    with pytest.raises(UnavailableError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(UnavailableError):
        Fuser.open("random:maefuse-micro", device="cuda:0")


def test_result_type_follows_either_input(micro):
    """Issue 14 item 10: numpy IR + tensor VIS used to come back as numpy (the IR alone decided)."""
    expected = micro.fuse(IR, VIS)
    ir_t, vis_t = torch.from_numpy(IR), torch.from_numpy(VIS)
    for ir, vis in ((IR, vis_t), (ir_t, VIS), (ir_t, vis_t)):
        out = micro.fuse(ir, vis)
        assert isinstance(out, torch.Tensor) and out.device.type == "cpu"
        np.testing.assert_array_equal(out.numpy(), expected)
    assert isinstance(micro.fuse(IR, VIS), np.ndarray)
    mixed = micro.fuse_batch([(IR, VIS), (IR, torch.from_numpy(VIS))])
    assert isinstance(mixed[0], np.ndarray) and isinstance(mixed[1], torch.Tensor)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tensors_come_back_on_their_device(micro):
    out = micro.fuse(torch.from_numpy(IR), torch.from_numpy(VIS).cuda())
    assert out.device == torch.device("cuda", 0)


def test_single_channel_ir_on_a_uint8_graph(uint8_graph):
    """Issue 14 item 9: an HxWx1 IR frame crashed in OpenCV's BGR2GRAY on the in-graph path."""
    fuser = Fuser.open(uint8_graph, device="cpu")
    assert fuser.backend.io == "uint8"
    np.testing.assert_array_equal(fuser.fuse(IR[:, :, None], VIS), fuser.fuse(IR, VIS))


@pytest.mark.parametrize("shape", [(0, 64), (64, 0), (0, 0)])
def test_zero_size_frames_are_rejected(micro, uint8_graph, shape):
    """Issue 14 item 9: an empty pair (both the same empty size) reached OpenCV (cv2.error)."""
    ir, vis = np.zeros(shape, np.uint8), np.zeros((*shape, 3), np.uint8)
    for fuser in (micro, Fuser.open(uint8_graph, device="cpu")):
        with pytest.raises(InputError, match="IR is empty"):
            fuser.fuse(ir, vis)


def test_uint8_graph_takes_16_bit_ir_and_grey_vis_as_float_graphs_do(uint8_graph):
    """Issue 22: a uint8 graph refused 16-bit IR and grey VIS without a fix. The host converts them as on the
    float path: 16-bit IR stretched to 8 bits (processing.ir_to_grey8), grey VIS given to the graph as BGR and
    returned grey."""
    fuser = Fuser.open(uint8_graph, device="cpu")
    ir16 = (IR.astype(np.uint16) * 40 + 3000).astype(np.uint16)
    from maefuse_deploy.processing import ir_to_grey8

    np.testing.assert_array_equal(fuser.fuse(ir16, VIS), fuser.fuse(ir_to_grey8(ir16), VIS))
    grey = VIS[:, :, 1].copy()
    fused = fuser.fuse(IR, grey)
    assert fused.shape == grey.shape and fused.dtype == np.uint8
    np.testing.assert_array_equal(fused, fuser.fuse(IR, np.repeat(grey[:, :, None], 3, axis=2))[:, :, 0])


def test_batching_is_cut_by_one_rule():
    from maefuse_deploy.contract import DEFAULT_BATCH_SIZE, batch_slices

    assert batch_slices(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert batch_slices(0, 4) == [] and batch_slices(3, 8) == [slice(0, 3)]
    assert Fuser.open("random:maefuse-micro", device="cpu").batch_size == DEFAULT_BATCH_SIZE
