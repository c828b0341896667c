"""Pre/post-processing against an independent step-by-step rendering of the released script (docs/model.md §4)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from maefuse_deploy import Fuser
from maefuse_deploy.backends.torch import TorchBackend
from maefuse_deploy.errors import InputError
from maefuse_deploy.model import build_model, get_config
from maefuse_deploy.processing import ir_to_grey8, prepare_pair

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
# A 640x640 model (the released size) that is cheap enough for a unit test.
CONFIG_640 = get_config("maefuse-micro").replace(name="micro-640", img_size=(640, 640))


def released_script(ir_path, vis_path, network):
    """docs/model.md §4, written step by step with OpenCV and float64 numpy, independent of the package."""
    ir = cv2.imread(str(ir_path))  # 1. 8-bit BGR
    vis = cv2.imread(str(vis_path))
    height, width = vis.shape[:2]
    ycrcb = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)
    y3 = cv2.merge([ycrcb[:, :, 0]] * 3)
    ir = cv2.resize(ir, (640, 640))  # 2. the default (bilinear) interpolation actually runs
    y3 = cv2.resize(y3, (640, 640))

    def to_tensor(image):  # 3.
        x = (image / 255.0 - MEAN) / STD
        return torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))

    out = network(to_tensor(ir), to_tensor(y3))[0].numpy().transpose(1, 2, 0)
    out = np.clip((out * STD + MEAN) * 255, 0, 255).astype(np.uint8)  # 4.
    grey = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)  # 5.
    ycrcb640 = cv2.resize(ycrcb, (640, 640))
    ycrcb640[:, :, 0] = grey
    bgr = cv2.cvtColor(ycrcb640, cv2.COLOR_YCrCb2BGR)
    return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_CUBIC)


def cropped_pair(msrs, name, folder, box):
    """A real MSRS pair cut to ``box`` (top, left, height, width) and written as PNG into ``folder``: sizes that
    are neither 640x480 nor multiples of the patch size, like RoadScene's."""
    top, left, height, width = box
    paths = []
    for side in ("ir", "vi"):
        image = cv2.imread(str(msrs / side / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        (folder / side).mkdir(exist_ok=True)
        paths.append(folder / side / f"{name}.png")
        cv2.imwrite(str(paths[-1]), image[top : top + height, left : left + width])
    return paths


@pytest.mark.parametrize("name, box", [("00537D", (40, 70, 329, 500)), ("01023N", (0, 0, 371, 549)),
                                       ("00858N", None)])
def test_official_policy_matches_the_released_script_on_real_pairs(msrs, tmp_path, name, box):
    if box is None:
        ir_path, vis_path = msrs / "ir" / f"{name}.png", msrs / "vi" / f"{name}.png"
    else:
        ir_path, vis_path = cropped_pair(msrs, name, tmp_path, box)
    model = build_model(CONFIG_640, seed=3)
    fuser = Fuser(TorchBackend(model), policy="official", model_size=(640, 640))
    with torch.no_grad():
        expected = released_script(ir_path, vis_path, model)
    ours = fuser.fuse(cv2.imread(str(ir_path), cv2.IMREAD_UNCHANGED), cv2.imread(str(vis_path)))
    assert ours.shape == expected.shape == cv2.imread(str(vis_path)).shape
    diff = np.abs(ours.astype(int) - expected.astype(int))
    assert diff.max() <= 1, f"max {diff.max()}, mean {diff.mean():.4f}"
    # A colour VIS gives a colour output.
    assert np.abs(ours[:, :, 0].astype(int) - ours[:, :, 2].astype(int)).mean() > 1


def test_native_policy_keeps_size_and_pads_to_the_patch(msrs, tmp_path):
    ir_path, vis_path = cropped_pair(msrs, "00537D", tmp_path, (40, 70, 329, 500))
    ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(vis_path))
    ir_net, vis_net, _ = prepare_pair(ir, vis, "native", (0, 0), 16)
    assert ir_net.shape == vis_net.shape == (3, 336, 512)  # 329x500 padded up to multiples of 16
    fused = Fuser(TorchBackend(build_model(get_config("maefuse-micro"), seed=0)), policy="native").fuse(ir, vis)
    assert fused.shape == vis.shape


def test_grey_vis_gives_grey_output_and_bgra_is_accepted():
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (70, 90), dtype=np.uint8)
    vis = rng.integers(0, 256, (70, 90), dtype=np.uint8)
    fuser = Fuser.from_checkpoint("random:maefuse-micro")
    assert fuser.fuse(ir, vis).shape == (70, 90)
    bgra = rng.integers(0, 256, (70, 90, 4), dtype=np.uint8)
    assert fuser.fuse(ir, bgra).shape == (70, 90, 3)


def test_sixteen_bit_ir_is_stretched_between_percentiles():
    frame = np.full((100, 100), 30000, dtype=np.uint16)
    frame[:50] = 31000  # a warm upper half, as a thermal camera's raw counts
    frame[0, 0] = 65535  # one hot pixel must not crush the contrast
    grey = ir_to_grey8(frame)
    assert grey.dtype == np.uint8
    assert grey[10, 10] == 255 and grey[90, 90] == 0


def test_pair_of_different_sizes_is_an_error_unless_resize_is_asked():
    ir = np.zeros((60, 80), np.uint8)
    vis = np.zeros((64, 80, 3), np.uint8)
    with pytest.raises(InputError, match=r"IR is 80x60 but VIS is 80x64"):
        prepare_pair(ir, vis, "official", (64, 64), 16)
    _, _, context = prepare_pair(ir, vis, "official", (64, 64), 16, resize=True)
    assert context.original_size == (64, 80)


def test_fuse_batch_equals_single_calls_and_accepts_tensors(msrs):
    names = ["00537D.png", "00556D.png", "00858N.png", "00881N.png"]
    pairs = [(cv2.imread(str(msrs / "ir" / n), 0), cv2.imread(str(msrs / "vi" / n))) for n in names]
    fuser = Fuser.from_checkpoint("random:maefuse-micro", batch_size=4)
    batched = fuser.fuse_batch(pairs)
    for (ir, vis), together in zip(pairs, batched, strict=True):
        alone = fuser.fuse(ir, vis)
        assert np.abs(alone.astype(int) - together.astype(int)).max() <= 1
        assert (alone == together).mean() > 0.999
    as_tensor = fuser.fuse(torch.from_numpy(pairs[0][0]), torch.from_numpy(pairs[0][1]))
    assert isinstance(as_tensor, torch.Tensor) and torch.equal(as_tensor, torch.from_numpy(batched[0]))


def test_normalise_and_denormalise_equal_their_per_pixel_arithmetic_bit_for_bit():
    """The fast forms (a per-grey-level table; plane by plane) give exactly the release's float32 arithmetic, on
    strided views and odd sizes too, and out-of-range network values clip the same way."""
    from maefuse_deploy.processing import IMAGENET_MEAN, IMAGENET_STD, denormalise, normalise

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (300, 517), dtype=np.uint8)
    for grey in (frame, frame[3:200:2, 5:400], frame[:, ::3], np.asfortranarray(frame), frame[:1, :1]):
        expected = (grey.astype(np.float32) / np.float32(255.0))[None] - IMAGENET_MEAN[:, None, None]
        expected = expected / IMAGENET_STD[:, None, None]
        assert np.array_equal(normalise(grey), expected)
    decoded = (rng.standard_normal((3, 67, 91)) * 3).astype(np.float32)  # far past [0, 255] after denormalising
    rgb = decoded.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    assert np.array_equal(denormalise(decoded), np.clip(rgb * np.float32(255.0), 0, 255).astype(np.uint8))
