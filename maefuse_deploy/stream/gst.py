"""GStreamer pipelines as sources (``appsink``) and sinks (``appsrc``) through PyGObject (the ``gst`` extra).

PyPI's OpenCV has no GStreamer backend, so pipeline strings go through GStreamer itself. A source string ends
in (or is completed with) ``videoconvert ! video/x-raw,format=BGR|GRAY8|GRAY16_LE ! appsink``; each sample becomes
a :class:`Frame` with the buffer PTS in seconds. A sink string starts with (or is given) an ``appsrc``; fused
frames are pushed as BGR buffers with the source timestamps, and ``close`` sends end-of-stream and waits for it,
so a muxer finishes its file.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from ..errors import InputError, UnavailableError
from .sources import DEFAULT_TIMEOUT_S, Frame

_INIT_LOCK = threading.Lock()
SOURCE_SINK_NAME = "maefuse_sink"
SINK_SOURCE_NAME = "maefuse_src"
FORMATS = {"BGR": (np.uint8, 3), "GRAY8": (np.uint8, 1), "GRAY16_LE": (np.uint16, 1)}


def load_gst() -> Any:
    """The initialised ``Gst`` module, or an UnavailableError saying how to install it."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ImportError, ValueError) as exc:
        raise UnavailableError(
            f"GStreamer pipelines need PyGObject and GStreamer's introspection data ({exc})",
            fix="apt-get install gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 libgirepository1.0-dev "
            "libcairo2-dev, then pip install 'maefuse-deploy[gst]'",
        ) from exc
    with _INIT_LOCK:
        if not Gst.is_initialized():
            Gst.init(None)
    return Gst


def _parse(gst: Any, description: str, role: str) -> Any:
    try:
        return gst.parse_launch(description)
    except Exception as exc:  # GLib.Error: a bad element name or property
        message = getattr(exc, "message", str(exc))
        raise InputError(f"{role} GStreamer pipeline is invalid: {message}: {description!r}",
                         fix="check it with gst-launch-1.0") from exc


def _bus_error(pipeline: Any, gst: Any) -> str | None:
    bus = pipeline.get_bus()
    while True:
        message = bus.pop_filtered(gst.MessageType.ERROR)
        if message is None:
            return None
        error, _debug = message.parse_error()
        return str(error.message)


class GstSource:
    """Frames from a GStreamer pipeline string through ``appsink``; timestamps are the buffer PTS (seconds)."""

    def __init__(self, description: str, role: str = "gst", *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._gst = gst = load_gst()
        self.name = f"{role} GStreamer pipeline"
        if "appsink" not in description:
            description = (f"{description} ! videoconvert ! video/x-raw,format={{BGR,GRAY8,GRAY16_LE}} ! "
                           f"appsink name={SOURCE_SINK_NAME}")
        self.description = description
        self.timeout_ns = int(timeout_s * 1e9)
        self._pipeline = _parse(gst, description, role)
        sink = self._pipeline.get_by_name(SOURCE_SINK_NAME) or _first_of(self._pipeline, "GstAppSink")
        if sink is None:
            raise InputError(f"{role} GStreamer pipeline has no appsink", fix=f"end it with appsink "
                             f"name={SOURCE_SINK_NAME}, or leave the appsink out")
        # The appsink never drops: a sample it dropped would be lost without a count. Its two buffers push back on
        # a file (decoding waits for us, every frame arrives); a live camera is drained at once by the reader
        # thread into the pipeline's queues, whose drop-oldest policy counts every frame it discards.
        sink.set_property("max-buffers", 2)
        sink.set_property("drop", False)
        sink.set_property("sync", False)
        self._sink = sink
        self.live = False
        self.nominal_fps: float | None = None
        self._index = 0
        self._ended = False
        self.frame_size: tuple[int, int] | None = None
        # A live source (a camera, is-live=true) answers PAUSED with NO_PREROLL: it produces data only when playing.
        paused = self._pipeline.set_state(gst.State.PAUSED)
        playing = self._pipeline.set_state(gst.State.PLAYING)
        if gst.StateChangeReturn.FAILURE not in (paused, playing):
            # Wait for the start (a file prerolls its first frame): a missing file fails here, and the negotiated
            # caps give the frame size, both before any model loads.
            playing = self._pipeline.get_state(self.timeout_ns)[0]
        if playing == gst.StateChangeReturn.FAILURE:
            error = _bus_error(self._pipeline, gst)
            self._pipeline.set_state(gst.State.NULL)
            raise InputError(f"{self.name} cannot start: {error or 'state change failed'}",
                             fix="check it with gst-launch-1.0")
        self.live = paused == gst.StateChangeReturn.NO_PREROLL
        caps = sink.get_static_pad("sink").get_current_caps()
        if caps is not None and caps.get_size() > 0:
            structure = caps.get_structure(0)
            self.frame_size = (structure.get_value("width"), structure.get_value("height"))

    def read(self) -> Frame | None:
        if self._ended:
            return None
        gst = self._gst
        sample = self._sink.emit("try-pull-sample", self.timeout_ns)
        now = time.monotonic()
        if sample is None:
            self._ended = True
            error = _bus_error(self._pipeline, gst)
            if error:
                raise InputError(f"{self.name} failed: {error}", fix="check the source with gst-launch-1.0")
            if self._sink.get_property("eos"):
                if self._index == 0:
                    raise InputError(f"{self.name} ended before its first frame", fix="check the source")
                return None
            raise InputError(f"{self.name} delivered no frame for {self.timeout_ns / 1e9:.0f} s",
                             fix="check that the source is running")
        caps = sample.get_caps().get_structure(0)
        width, height = caps.get_value("width"), caps.get_value("height")
        fmt = caps.get_value("format")
        if self.nominal_fps is None and caps.has_field("framerate"):
            ok, num, den = caps.get_fraction("framerate")
            if ok and num > 0 and den > 0:
                self.nominal_fps = num / den
        if fmt not in FORMATS:
            raise InputError(f"{self.name} delivers {fmt}", fix="convert to BGR, GRAY8 or GRAY16_LE before appsink")
        dtype, channels = FORMATS[fmt]
        buffer = sample.get_buffer()
        ok, info = buffer.map(gst.MapFlags.READ)
        if not ok:
            raise InputError(f"{self.name}: cannot map a buffer")
        try:
            itemsize = np.dtype(dtype).itemsize
            stride = len(info.data) // height  # rows may be padded to 4 bytes
            rows = np.frombuffer(info.data, dtype=np.uint8).reshape(height, stride)[:, : width * channels * itemsize]
            image = rows.copy().view(dtype).reshape((height, width, channels) if channels > 1 else (height, width))
        finally:
            buffer.unmap(info)
        pts = buffer.pts
        timestamp = pts / 1e9 if pts != gst.CLOCK_TIME_NONE else now
        frame = Frame(image, timestamp, self._index, now)
        self._index += 1
        return frame

    def close(self) -> None:
        self._pipeline.set_state(self._gst.State.NULL)


class GstSink:
    """Fused frames (HxWx3 BGR or HxW grey, uint8) into a GStreamer pipeline through ``appsrc``."""

    def __init__(self, description: str, fps: float | None = None, *, timeout_s: float = 10.0) -> None:
        self._gst = load_gst()
        if "appsrc" not in description:
            description = f"appsrc name={SINK_SOURCE_NAME} ! videoconvert ! {description}"
        self.description = description
        self.name = "GStreamer sink pipeline"
        self.fps = fps or 30.0
        self.timeout_s = timeout_s
        self.written = 0
        self._pipeline = _parse(self._gst, description, "sink")
        self._appsrc = self._pipeline.get_by_name(SINK_SOURCE_NAME) or _first_of(self._pipeline, "GstAppSrc")
        if self._appsrc is None:
            raise InputError("sink GStreamer pipeline has no appsrc", fix="start it with appsrc, or leave it out")
        self._caps_shape: tuple[int, ...] | None = None
        self._first_ts: float | None = None

    def write(self, image: np.ndarray, timestamp: float) -> None:
        gst = self._gst
        if self._caps_shape is None:
            height, width = image.shape[:2]
            fmt = "BGR" if image.ndim == 3 else "GRAY8"
            num, den = _fraction(self.fps)
            caps = gst.Caps.from_string(f"video/x-raw,format={fmt},width={width},height={height},"
                                        f"framerate={num}/{den}")
            self._appsrc.set_property("caps", caps)
            self._appsrc.set_property("format", gst.Format.TIME)
            self._appsrc.set_property("block", True)
            self._appsrc.set_property("max-bytes", image.nbytes * 4)
            if self._pipeline.set_state(gst.State.PLAYING) == gst.StateChangeReturn.FAILURE:
                raise InputError(f"{self.name} cannot start: {_bus_error(self._pipeline, gst) or 'state change'}",
                                 fix="check it with gst-launch-1.0")
            self._caps_shape = image.shape
            self._first_ts = timestamp
        elif image.shape != self._caps_shape:
            raise InputError(f"{self.name}: frame size changed from {self._caps_shape} to {image.shape}")
        buffer = gst.Buffer.new_wrapped(np.ascontiguousarray(image).tobytes())
        buffer.pts = int(max(timestamp - (self._first_ts or 0.0), 0.0) * 1e9)
        buffer.duration = int(1e9 / self.fps)
        result = self._appsrc.emit("push-buffer", buffer)
        if result != gst.FlowReturn.OK:
            raise InputError(f"{self.name} refused a frame ({result.value_nick}): "
                             f"{_bus_error(self._pipeline, gst) or 'downstream stopped'}")
        self.written += 1

    def close(self) -> None:
        gst = self._gst
        if self._caps_shape is not None:
            self._appsrc.emit("end-of-stream")
            bus = self._pipeline.get_bus()
            message = bus.timed_pop_filtered(int(self.timeout_s * 1e9), gst.MessageType.EOS | gst.MessageType.ERROR)
            self._pipeline.set_state(gst.State.NULL)
            if message is not None and message.type == gst.MessageType.ERROR:
                error, _ = message.parse_error()
                raise InputError(f"{self.name} failed at end of stream: {error.message}")
        else:
            self._pipeline.set_state(gst.State.NULL)


def _first_of(pipeline: Any, type_name: str) -> Any:
    iterator = pipeline.iterate_elements()
    while True:
        ok, element = iterator.next()
        if ok != 1:  # Gst.IteratorResult.OK
            return None
        if type(element).__name__.endswith(type_name.removeprefix("Gst")):
            return element


def _fraction(fps: float) -> tuple[int, int]:
    if abs(fps - round(fps)) < 1e-6:
        return round(fps), 1
    return round(fps * 1001), 1001
