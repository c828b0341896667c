"""runtime/video.py, the one video-file reader of maefuse-fuse and maefuse-stream: 16-bit thermal files read as
16 bits (real FFV1 gray16le files), 8-bit files as before, still images refused, and maefuse-fuse's refusal to
pair videos of different frame rates by index. Real files written with OpenCV's FFmpeg backend."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from maefuse_deploy.cli.fuse import main as fuse_main
from maefuse_deploy.errors import InputError
from maefuse_deploy.runtime.video import SmoothedRange, VideoReader, fuse_video, plan_video
from maefuse_deploy.stream import Pipeline

SIZE = (128, 96)  # (W, H)
RANDOM = "random:maefuse-micro"


def thermal_frames(count: int) -> list[np.ndarray]:
    """16-bit frames whose values span 3000-12000 (a radiometric core's counts), a warm blob moving across."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    frames = []
    for n in range(count):
        blob = np.exp(-((xx - 20 - 10 * n) ** 2 + (yy - 48) ** 2) / 300.0)
        image = 3000 + 6000 * (xx / SIZE[0]) + 3000 * blob + rng.integers(0, 50, (SIZE[1], SIZE[0]))
        frames.append(np.clip(image, 3000, 12000).astype(np.uint16))
    frames[0][0, 0], frames[0][0, 1] = 3000, 12000
    return frames


def write_gray16(path: Path, frames: list[np.ndarray], fps: float = 25) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), fps, SIZE,
                             [cv2.VIDEOWRITER_PROP_DEPTH, cv2.CV_16U, cv2.VIDEOWRITER_PROP_IS_COLOR, 0])
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def write_bgr(path: Path, frames: list[np.ndarray], fps: float = 25, fourcc: str = "FFV1") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, SIZE)
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def visible_frames(msrs: Path, count: int) -> list[np.ndarray]:
    vis = cv2.imread(str(msrs / "vi" / "00537D.png"))
    return [cv2.resize(vis[n * 8 : n * 8 + 384, n * 10 : n * 10 + 512], SIZE, interpolation=cv2.INTER_AREA)
            for n in range(count)]


def test_16_bit_ffv1_video_reads_back_exactly(tmp_path):
    frames = thermal_frames(6)
    path = write_gray16(tmp_path / "thermal.mkv", frames)
    with VideoReader(path, "IR") as reader:
        assert reader.depth == 16 and (reader.width, reader.height) == SIZE and reader.fps == 25
        read = []
        while (item := reader.read()) is not None:
            image, timestamp = item
            read.append(image)
            assert timestamp == pytest.approx((len(read) - 1) / 25, abs=1e-3)
    assert len(read) == 6
    for got, want in zip(read, frames, strict=True):
        assert got.dtype == np.uint16 and got.shape == (SIZE[1], SIZE[0])
        assert np.array_equal(got, want)  # exact: 3000-12000, not the high byte (11-46)
    assert read[0].min() == 3000 and read[0].max() == 12000


def test_8_bit_videos_read_as_opencv_decodes_them(tmp_path):
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8) for _ in range(3)]
    for name, fourcc in (("a.mkv", "FFV1"), ("b.avi", "MJPG"), ("c.mp4", "mp4v")):
        path = write_bgr(tmp_path / name, frames, fourcc=fourcc)
        capture = cv2.VideoCapture(str(path))
        with VideoReader(path) as reader:
            assert reader.depth == 8
            for _ in frames:
                ok, expected = capture.read()
                item = reader.read()
                assert ok and item is not None
                assert item[0].dtype == np.uint8 and np.array_equal(item[0], expected), name
        capture.release()


def test_a_still_image_is_not_a_video(tmp_path):
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((SIZE[1], SIZE[0]), np.uint8))
    with pytest.raises(InputError, match="still image"):
        VideoReader(image, "IR")


def test_fuse_video_fuses_16_bit_ir_through_the_smoothed_range(fuser, msrs, tmp_path):
    thermal = thermal_frames(6)
    vis = visible_frames(msrs, 6)
    ir_path = write_gray16(tmp_path / "ir.mkv", thermal)
    vis_path = write_bgr(tmp_path / "vis.mkv", vis)
    job = plan_video(ir_path, vis_path, tmp_path / "fused.mkv")
    result = fuse_video(fuser, job, codec="FFV1")
    assert result.frames == 6 and result.problems == []
    mapping = SmoothedRange()
    capture = cv2.VideoCapture(str(tmp_path / "fused.mkv"))
    for n in range(6):
        ok, got = capture.read()
        assert ok
        expected = fuser.fuse(mapping(thermal[n]), vis[n])
        assert np.abs(got.astype(np.int16) - expected.astype(np.int16)).max() <= 1, n
    capture.release()


def test_stream_fuses_16_bit_ir_files(fuser, msrs, tmp_path):
    thermal = thermal_frames(6)
    vis = visible_frames(msrs, 6)
    ir_path = write_gray16(tmp_path / "ir.mkv", thermal)
    vis_path = write_bgr(tmp_path / "vis.mkv", vis)
    got = []
    with Pipeline(fuser, str(ir_path), str(vis_path), pair="index",
                  sink=lambda image, meta: got.append((meta["ir_index"], image))) as pipeline:
        assert pipeline.wait(60)
    assert [n for n, _ in got] == list(range(6))
    mapping = SmoothedRange()
    for n, image in got:
        expected = fuser.fuse(mapping(thermal[n]), vis[n])
        assert np.abs(image.astype(np.int16) - expected.astype(np.int16)).max() <= 1, n


def test_videos_of_different_frame_rates_are_refused_before_the_model_loads(msrs, tmp_path):
    vis = visible_frames(msrs, 4)
    ir_path = write_bgr(tmp_path / "ir.mkv", vis, fps=25)
    vis_path = write_bgr(tmp_path / "vis.mkv", vis, fps=30)
    with pytest.raises(InputError, match=r"25 fps.*30 fps.*maefuse-stream"):
        plan_video(ir_path, vis_path, tmp_path / "out.mkv")
    # A model that does not exist: the error must be the rates, found before any model is looked at.
    result = CliRunner().invoke(fuse_main, ["--ir", str(ir_path), "--vis", str(vis_path), "--out",
                                            str(tmp_path / "out.mkv"), "-m", str(tmp_path / "none.safetensors")])
    assert result.exit_code == 1, result.output
    assert "25 fps" in result.output and "maefuse-stream" in result.output
    assert not (tmp_path / "out.mkv").exists()
    same = write_bgr(tmp_path / "same.mkv", vis, fps=25)
    assert plan_video(ir_path, same, tmp_path / "out.mkv").width == SIZE[0]
