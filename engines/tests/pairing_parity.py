"""maefuse-stream and maefusemux make the same frames from the same recordings (one pairing rule, docs/streaming.md).

    python pairing_parity.py --package maefuse-tiny-640x480.pt2 --samples SAMPLES --work DIR

Two raw-video recordings made from the shipped pairs (IR 25 fps, VIS 30 fps, every frame a different scene from
its neighbours, so a frame paired differently fuses to a different image) go through gst-launch-1.0 with
maefusemux (the C++ runtime, the AOTInductor package) and through maefuse-stream (the Python Fuser, the same
built-in model), with the same IR offset and the default tolerance. Passes when both write the same number of
frames and every frame agrees to 1 grey level (the C++ runtime's parity with the Python Fuser, test_capi). ctest
runs it with GST_PLUGIN_PATH set to the build's plugin folder.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

IR_FRAMES, VIS_FRAMES = 12, 14  # about 0.47 s at 25 and 30 fps
IR_OFFSET_MS = 60.0  # IR stamped 60 ms later: the first VIS frames have no IR frame within the tolerance
STEMS = ("00537D", "00858N", "01023N")


def make_recording(samples: Path, work: Path, role: str, count: int, fps: int, fmt: str) -> Path:
    frames = work / f"{role}-frames"
    frames.mkdir(parents=True)
    for k in range(count):
        side = "ir" if role == "ir" else "vi"
        shutil.copy(samples / side / f"{STEMS[k % len(STEMS)]}.png", frames / f"{k:04d}.png")
    out = work / f"{role}.mkv"
    gst(f"multifilesrc location={frames}/%04d.png index=0 caps=image/png,framerate={fps}/1 ! pngdec ! videoconvert "
        f"! video/x-raw,format={fmt} ! matroskamux ! filesink location={out}")
    return out


def gst(description: str) -> None:
    subprocess.run(["gst-launch-1.0", "-q", *description.split()], check=True, timeout=300)


def source(recording: Path) -> str:
    return f"filesrc location={recording} ! matroskademux"


def read_frames(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in sorted(folder.glob("*.png"))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", type=Path, required=True)
    parser.add_argument("--samples", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    ir = make_recording(args.samples, args.work, "ir", IR_FRAMES, 25, "GRAY8")
    vis = make_recording(args.samples, args.work, "vis", VIS_FRAMES, 30, "BGR")

    element_out = args.work / "element"
    element_out.mkdir()
    gst(f"maefusemux name=m model={args.package} ir-offset-ms={IR_OFFSET_MS} ! videoconvert ! pngenc "
        f"! multifilesink location={element_out}/%04d.png {source(ir)} ! queue ! m.ir {source(vis)} ! queue ! m.vis")
    stream_out = args.work / "stream"
    subprocess.run([sys.executable, "-m", "maefuse_deploy.cli.stream", "--ir", source(ir), "--vis", source(vis),
                    "--out", str(stream_out), "--ir-offset-ms", str(IR_OFFSET_MS), "--policy", "block", "--quiet",
                    "--backend", "torch"],  # float32 like the element's package, not auto's int8
                   check=True, timeout=600)

    from_element, from_stream = read_frames(element_out), read_frames(stream_out)
    print(f"IR {IR_FRAMES} frames at 25 fps, VIS {VIS_FRAMES} at 30 fps, IR offset {IR_OFFSET_MS:g} ms: "
          f"maefusemux wrote {len(from_element)} frames, maefuse-stream {len(from_stream)}")
    failures = 0
    if len(from_element) != len(from_stream) or not from_element:
        print("FAILED: the two pipelines wrote different numbers of frames")
        failures += 1
    for index, (a, b) in enumerate(zip(from_element, from_stream, strict=False)):
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        print(f"frame {index}: max |diff| {diff.max()}, mean {diff.mean():.4f}")
        if diff.max() > 1:
            print(f"FAILED: frame {index} differs: the two pipelines paired it with different IR frames")
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
