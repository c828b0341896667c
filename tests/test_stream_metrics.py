"""Watching a pipeline (issue 26): Prometheus metrics read by prometheus_client's own parser, and a soak run of tens
of thousands of frames with every frame accounted for and no growth in memory, threads or open files."""

from __future__ import annotations

import gc
import itertools
import os
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from maefuse_deploy.cli.stream import main as stream_main
from maefuse_deploy.runtime.fuser import Fuser
from maefuse_deploy.stream import Pipeline, PushSource
from maefuse_deploy.stream.metrics import MetricsServer

RNG = np.random.default_rng(7)
IR = RNG.integers(0, 256, (32, 32), dtype=np.uint8)
VIS = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def fuser():
    with Fuser.open("random:maefuse-micro", device="cpu", batch_size=8) as opened:
        yield opened


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def feed(ir_source: PushSource, vis_source: PushSource, count: int, fps: float = 25.0) -> None:
    for index in range(count):
        ir_source.push(IR, index / fps)
        vis_source.push(VIS, index / fps + 0.002)
    ir_source.end()
    vis_source.end()


def test_metrics_endpoint_serves_the_pipelines_counters(fuser):
    ir_source, vis_source = PushSource("ir", fps=25), PushSource("vis", fps=25)
    fused: list[int] = []
    with MetricsServer(0) as server:
        pipeline = Pipeline(fuser, ir_source, vis_source, sink=lambda image, meta: fused.append(meta["vis_index"]),
                            policy="block")
        server.watch(pipeline)
        assert server.host == "127.0.0.1"
        with pipeline:
            feed(ir_source, vis_source, 40)
        stats = pipeline.join()
        metrics = scrape(server.url)
    assert stats.fused == len(fused) == 40
    assert metrics[("maefuse_stream_frames_read_total", (("source", "ir"),))] == 40
    assert metrics[("maefuse_stream_frames_read_total", (("source", "vis"),))] == 40
    assert metrics[("maefuse_stream_frames_fused_total", ())] == metrics[("maefuse_stream_pairs_total", ())] == 40
    assert metrics[("maefuse_stream_frames_unpaired_total", (("source", "vis"),))] == 0
    # The histogram is cumulative and counts every fused pair once.
    buckets = sorted((float(dict(labels)["le"]), value) for (name, labels), value in metrics.items()
                     if name == "maefuse_stream_latency_seconds_bucket")
    assert buckets[-1] == (float("inf"), 40) and all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))
    assert metrics[("maefuse_stream_latency_seconds_count", ())] == 40
    assert metrics[("maefuse_stream_latency_seconds_sum", ())] > 0
    assert metrics[("maefuse_stream_fuse_seconds_total", ())] > 0
    assert metrics[("maefuse_stream_running", ())] == 0


def test_a_metrics_port_in_use_is_refused_before_the_model_loads(tmp_path):
    import cv2

    for name in ("ir", "vis"):
        writer = cv2.VideoWriter(str(tmp_path / f"{name}.mkv"), cv2.VideoWriter_fourcc(*"FFV1"), 25, (32, 32))
        for _ in range(3):
            writer.write(VIS)
        writer.release()
    with MetricsServer(0) as taken:
        result = CliRunner().invoke(stream_main, [
            "--ir", str(tmp_path / "ir.mkv"), "--vis", str(tmp_path / "vis.mkv"), "--out", str(tmp_path / "o.mkv"),
            "--metrics-port", str(taken.port), "-m", "does-not-exist.safetensors"])
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert f"cannot serve metrics on 127.0.0.1:{taken.port}" in lines[0] and "--metrics-port" in lines[0]
    assert "does-not-exist" not in result.output  # refused before the model was looked for
    assert not (tmp_path / "o.mkv").exists()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_soak_every_frame_accounted_for_and_nothing_grows(fuser):
    """20,000 pairs (a quarter of them with a VIS frame missing, so pairing and unpaired counting run too) in
    five rounds of a new Pipeline each: read = paired + unpaired, paired = fused + dropped; between rounds the
    resident memory, the thread count and the open file descriptors come back to the first round's values."""
    rounds, per_round = 5, 4000
    samples = []
    for _ in range(rounds):
        ir_source, vis_source = PushSource("ir", fps=25), PushSource("vis", fps=25)
        written: list[int] = []
        pipeline = Pipeline(fuser, ir_source, vis_source, sink=lambda image, meta, out=written: out.append(1),
                            policy="block", queue_size=8)
        with pipeline:
            for index in range(per_round):
                ir_source.push(IR, index / 25)
                if index % 4 != 3:  # every fourth VIS frame is missing: its IR frame is unpaired
                    vis_source.push(VIS, index / 25 + 0.002)
            ir_source.end()
            vis_source.end()
        stats = pipeline.join()
        assert (stats.read_ir, stats.read_vis) == (per_round, per_round * 3 // 4)
        assert stats.read_ir == stats.paired - stats.reused_ir + stats.unpaired_ir
        assert stats.read_vis == stats.paired + stats.unpaired_vis
        assert stats.paired == stats.fused + stats.dropped == stats.written + stats.dropped == len(written)
        assert stats.dropped == 0  # block loses nothing
        del pipeline, ir_source, vis_source, written
        gc.collect()
        samples.append((_rss_mib(), threading.active_count(), _fds()))
    first = samples[0]
    for rss, threads, fds in samples[1:]:
        assert threads == first[1] and fds == first[2], samples
        assert rss - first[0] < 30, samples  # MiB: allocator noise, no per-frame or per-round growth


def test_an_address_that_does_not_resolve_names_the_host_not_the_port():
    """Found by a sweep of bad inputs: --metrics-host 999.1.1.1 was told to choose a free port."""
    from maefuse_deploy.errors import InputError

    with pytest.raises(InputError) as refused:
        MetricsServer(0, host="999.1.1.1")
    assert "cannot serve metrics on 999.1.1.1:0" in str(refused.value) and "--metrics-host" in str(refused.value)
