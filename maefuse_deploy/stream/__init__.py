"""Live paired fusion: sources, timestamp pairing, registration, a threaded pipeline and sinks (docs/streaming.md).

    from maefuse_deploy import Fuser
    from maefuse_deploy.stream import stream

    fuser = Fuser.from_checkpoint()
    for fused, meta in stream(fuser, "/dev/video2", "/dev/video0", homography="H.json"):
        ...

Layer: above the runtime (it calls ``Fuser.fuse_batch`` only); below the CLI.
"""

from ..runtime.video import SmoothedRange
from .pairing import IndexPairer, Pair, TimestampPairer
from .pipeline import Endpoints, Pipeline, StreamStats, open_endpoints, open_source, stream
from .sinks import CallbackSink, ImageSequenceSink, VideoFileSink, open_sink
from .sources import GAP, CaptureSource, Frame, Gap, PushSource, Reconnect, ReconnectingSource, VideoFileSource

__all__ = [
    "GAP",
    "CallbackSink",
    "CaptureSource",
    "Endpoints",
    "Frame",
    "Gap",
    "ImageSequenceSink",
    "IndexPairer",
    "Pair",
    "Pipeline",
    "PushSource",
    "Reconnect",
    "ReconnectingSource",
    "SmoothedRange",
    "StreamStats",
    "TimestampPairer",
    "VideoFileSink",
    "VideoFileSource",
    "open_endpoints",
    "open_sink",
    "open_source",
    "stream",
]
