"""A real RTSP server for the reconnection tests: GStreamer's gst-rtsp-server through PyGObject (Debian's
gir1.2-gst-rtsp-server-1.0), serving a live test pattern as MJPEG over RTP at rtsp://127.0.0.1:PORT/cam.

    python tests/rtsp_server.py PORT [WIDTHxHEIGHT] [FPS]

Prints "ready" once it listens; runs until killed (the tests kill it to make an outage, SIGSTOP it to make a stall,
and start it again on the same port).
"""

from __future__ import annotations

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port = sys.argv[1]
    width, height = (int(v) for v in (sys.argv[2] if len(sys.argv) > 2 else "64x48").split("x"))
    fps = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
                       f"framerate={fps}/1,format=I420 ! jpegenc ! rtpjpegpay name=pay0 pt=96 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print("cannot listen", flush=True)
        sys.exit(1)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
