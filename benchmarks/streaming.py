"""Stream throughput and capture-to-fused latency of maefuse_deploy.stream vs bare Fuser.fuse_batch.

    python benchmarks/streaming.py --frames 12 --rounds 3 [--backend torch] --out benchmarks/streaming.json

The built-in model (or ``--model``, native policy) at 640x480 on the six MSRS pairs, cycled. Rows:
* bare: ``Fuser.fuse_batch`` on the decoded frames, batches of ``--batch`` (the ceiling).
* files/block: two lossless 25 fps video files -> pipeline (timestamp pairing, block policy) -> no-op callback.
* files/block + registration: the same with a homography warp of every IR frame (a 640x512 IR file).
* live/drop-oldest: two push sources fed at ``--fps`` by a thread (a camera that does not wait), queue depth 2.
* live/block: the same with blocking push sources (nothing lost; the camera rate is throttled).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from maefuse_deploy import Fuser
from maefuse_deploy.registration import Registration
from maefuse_deploy.stream import Pipeline, PushSource

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "MSRS6"  # shipped with the repository
DISTORTION = np.array([[0.92 * np.cos(0.035), -0.92 * np.sin(0.035), 30.0],
                       [0.92 * np.sin(0.035), 0.92 * np.cos(0.035), 18.0], [2e-6, -2e-6, 1.0]])


def write_video(path: Path, images: list[np.ndarray], fps: float) -> None:
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), fps,
                             (images[0].shape[1], images[0].shape[0]))
    for image in images:
        writer.write(image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    writer.release()


def run_pipeline(fuser: Fuser, ir, vis, **options) -> dict:
    pipeline = Pipeline(fuser, ir, vis, sink=lambda image, meta: None, **options)
    start = time.perf_counter()
    pipeline.start()
    pipeline.wait()
    stats = pipeline.join()
    elapsed = time.perf_counter() - start
    return {"fused": stats.fused, "dropped": stats.dropped, "unpaired": stats.unpaired, "seconds": elapsed,
            "fps": stats.written / elapsed, "latency_ms": {k: round(float(v), 1) for k, v in stats.latency_ms.items()}}


def feed(sources: list[PushSource], pools: list[list[np.ndarray]], fps: float, count: int) -> threading.Thread:
    def run() -> None:
        start = time.monotonic()
        for n in range(count):
            time.sleep(max(0.0, start + n / fps - time.monotonic()))
            for source, pool in zip(sources, pools, strict=True):
                source.push(pool[n % len(pool)], n / fps)
        for source in sources:
            source.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", help="checkpoint or trained model name [default: the built-in model]")
    parser.add_argument("--backend", default="auto", help="Fuser backend (auto: what maefuse-stream uses by default)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = sorted(p.stem for p in (DATA / "ir").glob("*.png"))
    ir = [cv2.imread(str(DATA / "ir" / f"{n}.png"), cv2.IMREAD_GRAYSCALE) for n in names]
    vis = [cv2.imread(str(DATA / "vi" / f"{n}.png")) for n in names]
    ir_frames = [ir[n % len(ir)] for n in range(args.frames)]
    vis_frames = [vis[n % len(vis)] for n in range(args.frames)]
    registration = Registration(np.linalg.inv(DISTORTION), (640, 512), (640, 480))
    fuser = Fuser.open(args.model, backend=args.backend, batch_size=args.batch)
    print(fuser.backend.chosen or f"backend {args.backend}", "|", fuser.description)
    fuser.fuse_batch(list(zip(ir_frames[:2], vis_frames[:2], strict=True)))  # warm-up (and a first compile)
    print(*fuser.backend.events, sep="\n")
    rounds: list[dict[str, dict]] = []
    # The machine is shared: its load changes over minutes. Each round measures every row on the same frames
    # back to back, and the ratios to bare are taken within a round.
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_video(folder / "ir.mkv", ir_frames, 25)
        write_video(folder / "vis.mkv", vis_frames, 25)
        write_video(folder / "ir512.mkv", [cv2.warpPerspective(f, DISTORTION, (640, 512)) for f in ir_frames], 25)
        for round_index in range(args.rounds):
            results: dict[str, dict] = {}
            start = time.perf_counter()
            for i in range(0, args.frames, args.batch):
                fuser.fuse_batch(list(zip(ir_frames[i:i + args.batch], vis_frames[i:i + args.batch], strict=True)))
            elapsed = time.perf_counter() - start
            results["bare fuse_batch"] = {"fused": args.frames, "seconds": elapsed, "fps": args.frames / elapsed}
            results["files/block"] = run_pipeline(fuser, str(folder / "ir.mkv"), str(folder / "vis.mkv"))
            results["files/block + registration"] = run_pipeline(
                fuser, str(folder / "ir512.mkv"), str(folder / "vis.mkv"), registration=registration)
            for policy in ("drop-oldest", "block"):
                for registered in (False, True):
                    sources = [PushSource("IR", fps=args.fps, policy=policy, maxsize=2),
                               PushSource("VIS", fps=args.fps, policy=policy, maxsize=2)]
                    pools = [[cv2.warpPerspective(f, DISTORTION, (640, 512)) for f in ir] if registered else ir, vis]
                    feeder = feed(sources, pools, args.fps, args.frames)
                    name = f"live {args.fps:g} fps/{policy}" + (" + registration" if registered else "")
                    results[name] = run_pipeline(fuser, sources[0], sources[1], policy=policy, queue_size=2,
                                                 registration=registration if registered else None)
                    feeder.join()
            bare = results["bare fuse_batch"]["fps"]
            print(f"round {round_index + 1}")
            for name, row in results.items():
                row["vs_bare"] = round(row["fps"] / bare, 3)
                print(f"  {name:40s} {row['fps']:6.3f} fps ({row['vs_bare']:.0%} of bare) fused {row['fused']:3d} "
                      f"dropped {row.get('dropped', 0):3d} latency {row.get('latency_ms', {})}", flush=True)
            rounds.append(results)
    print("median over rounds")
    for name in rounds[0]:
        ratio = float(np.median([r[name]["vs_bare"] for r in rounds]))
        fps = float(np.median([r[name]["fps"] for r in rounds]))
        print(f"  {name:40s} {fps:6.3f} fps, {ratio:.0%} of bare")
    if args.out:
        args.out.write_text(json.dumps(rounds, indent=2) + "\n")


if __name__ == "__main__":
    main()
