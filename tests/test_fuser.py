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


# -- issue 27: the device path (CUDA frames stay on the GPU) and DLPack objects --------------------------------------


class DLPackFrame:
    """A DLPack producer that is neither numpy nor torch (as a CuPy or JAX array is), over a numpy array."""

    def __init__(self, array: np.ndarray, device: tuple[int, int] | None = None) -> None:
        self._array = array
        self._device = device  # what __dlpack_device__ reports; None: the array's own (CPU)

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device or self._array.__dlpack_device__()


def test_path_selection_by_where_the_frames_and_the_backend_are():
    from maefuse_deploy.runtime.fuser import fuse_path, image_device

    cuda0, cuda1, cpu = torch.device("cuda", 0), torch.device("cuda", 1), torch.device("cpu")
    cuda_frame = DLPackFrame(VIS, device=(2, 0))  # reports kDLCUDA device 0; only its device is asked
    assert image_device(IR) is None and image_device(torch.from_numpy(IR)) == cpu
    assert image_device(DLPackFrame(IR)) == cpu and image_device(cuda_frame) == cuda0
    # a CUDA tensor pair on the backend's GPU (torch on CUDA, TensorRT): processed there
    assert fuse_path(cuda0, cuda0, cuda0) == "device"
    assert fuse_path(image_device(cuda_frame), cuda0, torch.device("cuda")) == "device"  # DLPack; "cuda" = GPU 0
    # everything else: host processing, the result moved back to the caller's device
    assert fuse_path(cpu, cpu, cpu) == "host"  # CPU tensors
    assert fuse_path(None, None, cuda0) == "host"  # numpy arrays
    assert fuse_path(image_device(DLPackFrame(IR)), cuda0, cuda0) == "host"  # a CPU DLPack object
    assert fuse_path(cuda0, None, cuda0) == "host"  # one numpy image
    assert fuse_path(cuda0, cuda0, cuda1) == "host"  # frames on another GPU than the backend's
    assert fuse_path(cuda0, cuda0, None) == "host"  # onnxruntime / OpenVINO: no tensor device
    assert fuse_path(cuda0, cuda0, cpu) == "host"
    with pytest.raises(InputError, match="DLPack"):
        image_device([[1, 2]])


def test_dlpack_objects_are_accepted_and_come_back_as_tensors(micro):
    out = micro.fuse(DLPackFrame(IR), DLPackFrame(VIS))
    assert isinstance(out, torch.Tensor) and out.device.type == "cpu"
    np.testing.assert_array_equal(out.numpy(), micro.fuse(IR, VIS))


@pytest.mark.parametrize("policy", ["official", "native"])
def test_device_processing_matches_the_host_path(msrs, policy):
    """The device path's steps run on CPU tensors here: colour conversions are OpenCV's integer arithmetic (exact),
    the official policy's resizes are floating point (OpenCV's are fixed point): a few grey levels at most."""
    import cv2

    fuser = Fuser.open("random:maefuse-micro", device="cpu", policy=policy)
    ir16 = (cv2.imread(str(msrs / "ir" / "00633D.png"), cv2.IMREAD_UNCHANGED).astype(np.uint16) * 200 + 900)
    vis = cv2.imread(str(msrs / "vi" / "00633D.png"))
    pairs = [(ir16, vis), (ir16, vis[:, :, 1].copy()), (ir16[:, :, None], cv2.cvtColor(vis, cv2.COLOR_BGR2BGRA))]
    host = fuser.fuse_batch(pairs)
    device = fuser.run_on_device([(torch.from_numpy(ir), torch.from_numpy(v)) for ir, v in pairs],
                                 ["a", "b", "c"])
    for want, got in zip(host, device, strict=True):
        assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8 and tuple(got.shape) == want.shape
        diff = np.abs(want.astype(int) - got.numpy())
        if policy == "native":
            assert diff.max() == 0
        else:
            assert diff.max() <= 3 and (diff > 1).mean() < 0.03


def test_device_path_of_a_uint8_graph_is_exact(uint8_graph):
    fuser = Fuser.open(uint8_graph, device="cpu")
    ir16 = (IR.astype(np.uint16) * 40 + 3000).astype(np.uint16)
    pairs = [(ir16, VIS), (IR, VIS[:, :, 0].copy())]
    device = fuser.run_on_device([(torch.from_numpy(ir), torch.from_numpy(vis)) for ir, vis in pairs], ["a", "b"])
    for want, got in zip(fuser.fuse_batch(pairs), device, strict=True):
        np.testing.assert_array_equal(got.numpy(), want)


def test_device_path_refuses_what_the_host_path_refuses(micro):
    with pytest.raises(InputError, match="uint8 or uint16"):
        micro.run_on_device([(torch.zeros(64, 64), torch.zeros(64, 64, 3))], ["pair 0"])
    with pytest.raises(InputError, match="IR is 32x32 but VIS is 64x64"):
        micro.run_on_device([(torch.zeros(32, 32, dtype=torch.uint8), torch.from_numpy(VIS))], ["pair 0"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_pairs_stay_on_the_gpu():
    fuser = Fuser.open("random:maefuse-micro", device="cuda")
    ir, vis = torch.from_numpy(IR).cuda(), torch.from_numpy(VIS).cuda()
    out = fuser.fuse(ir, vis)
    assert out.device == ir.device and out.dtype == torch.uint8
    cpu = fuser.run_on_device([(ir.cpu(), vis.cpu())], ["cpu"])[0]
    assert np.abs(out.cpu().numpy().astype(int) - cpu.numpy()).max() <= 1  # same steps, GPU float rounding
