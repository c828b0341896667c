"""Live paired fusion: sources, timestamp pairing, registration, a threaded pipeline and sinks (docs/streaming.md).

    from maefuse_deploy import Fuser
    from maefuse_deploy.stream import stream

    fuser = Fuser.from_checkpoint()
    for fused, meta in stream(fuser, "/dev/video2", "/dev/video0", homography="H.json"):
        ...

Layer: above the runtime (it calls ``Fuser.fuse_batch`` only); below the CLI.
"""

from .pairing import IndexPairer, Pair, TimestampPairer
from .pipeline import Pipeline, StreamStats, stream
from .sinks import CallbackSink, ImageSequenceSink, VideoFileSink, open_sink
from .sources import CaptureSource, Frame, PushSource, VideoFileSource, open_source
from .thermal import SmoothedRange

__all__ = [
    "CallbackSink",
    "CaptureSource",
    "Frame",
    "ImageSequenceSink",
    "IndexPairer",
    "Pair",
    "Pipeline",
    "PushSource",
    "SmoothedRange",
    "StreamStats",
    "TimestampPairer",
    "VideoFileSink",
    "VideoFileSource",
    "open_sink",
    "open_source",
    "stream",
]
