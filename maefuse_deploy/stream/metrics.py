"""A running pipeline's counters as Prometheus metrics (``maefuse-stream --metrics-port``, docs/streaming.md).

The collector reads :attr:`Pipeline.stats` when Prometheus scrapes, so the numbers are the pipeline's own (one
bookkeeping, the same the status line and the summary print), served by ``prometheus_client`` on 127.0.0.1 unless
another address is asked for. Every counter covers the whole run: frames read and unpaired per source,
outages (count and seconds) per source, pairs, IR reuse, drops, fused and written frames, the capture-to-fused
latency histogram and the time spent fusing.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..errors import InputError
from .pipeline import Pipeline

PREFIX = "maefuse_stream"


class PipelineCollector:
    """A ``prometheus_client`` collector over one pipeline's :class:`StreamStats` (nothing until it has one)."""

    def __init__(self, pipeline: Pipeline | None = None) -> None:
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        if self.pipeline is None:
            return
        stats = self.pipeline.stats
        read = CounterMetricFamily(f"{PREFIX}_frames_read", "Frames read from each source", labels=["source"])
        read.add_metric(["ir"], stats.read_ir)
        read.add_metric(["vis"], stats.read_vis)
        yield read
        unpaired = CounterMetricFamily(f"{PREFIX}_frames_unpaired", "Frames no partner was found for, per source",
                                       labels=["source"])
        unpaired.add_metric(["ir"], stats.unpaired_ir)
        unpaired.add_metric(["vis"], stats.unpaired_vis)
        yield unpaired
        outages = CounterMetricFamily(f"{PREFIX}_outages", "Times a live source dropped or stalled (and was reopened)",
                                      labels=["source"])
        outages.add_metric(["ir"], stats.outages_ir)
        outages.add_metric(["vis"], stats.outages_vis)
        yield outages
        away = CounterMetricFamily(f"{PREFIX}_outage_seconds", "Seconds a live source was away", labels=["source"])
        away.add_metric(["ir"], stats.outage_s_ir)
        away.add_metric(["vis"], stats.outage_s_vis)
        yield away
        for name, value, text in (
            ("pairs", stats.paired, "IR/VIS pairs formed"),
            ("ir_reused", stats.reused_ir, "Pairs whose IR frame already served an earlier VIS frame"),
            ("pairs_dropped", stats.dropped, "Frames or pairs dropped by full queues or the latency limit"),
            ("frames_fused", stats.fused, "Pairs fused"),
            ("frames_written", stats.written, "Fused frames written to the output"),
            ("fuse_seconds", stats.fuse_seconds, "Time spent in the Fuser's calls"),
            ("fuse_calls", stats.fuse_calls, "Calls to the Fuser (each fuses a batch of pairs)"),
        ):
            yield CounterMetricFamily(f"{PREFIX}_{name}", text, value=value)
        buckets: list[tuple[str, float]] = [(repr(bound), count) for bound, count in stats.latency_buckets]
        buckets.append(("+Inf", stats.fused))
        yield HistogramMetricFamily(f"{PREFIX}_latency_seconds", "Capture-to-fused latency of each fused pair",
                                    buckets=buckets, sum_value=stats.latency_sum_s)
        yield GaugeMetricFamily(f"{PREFIX}_running", "1 while the pipeline runs", value=float(stats.running))


class MetricsServer:
    """An HTTP endpoint serving one pipeline's metrics in the Prometheus text format; :meth:`close` stops it.

    It binds its port when created (a port in use is an error before any model loads); :meth:`watch` gives it the
    pipeline to report on. ``port=0`` takes a free port (``.port`` says which).
    """

    def __init__(self, port: int, host: str = "127.0.0.1", pipeline: Pipeline | None = None) -> None:
        self._collector = PipelineCollector(pipeline)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self._collector)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except socket.gaierror as exc:  # the host is what is wrong, not the port
            raise InputError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
                             fix="give --metrics-host an address of this machine, e.g. 127.0.0.1") from exc
        except OSError as exc:
            raise InputError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
                             fix="choose a free --metrics-port") from exc
        self.host, self.port = host, int(self._server.server_port)

    def watch(self, pipeline: Pipeline) -> None:
        self._collector.pipeline = pipeline

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._server.shutdown()
            self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
