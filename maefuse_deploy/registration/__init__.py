"""IR-to-VIS registration of a camera rig: the mapping and its calibration file (``mapping.py``: load, save,
check, warp), and its estimation from point pairs or frame pairs (``estimate.py``). docs/streaming.md describes
the file format, the method and its measured accuracy."""

from .estimate import (
    TRANSFORMS,
    CalibrationCheck,
    alignment_residuals,
    check_calibration,
    corner_error,
    from_frames,
    from_points,
    overlay,
    read_point_pairs,
)
from .mapping import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MODELS,
    Model,
    Registration,
    frame_corners,
    load_registration,
    map_points,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MODELS",
    "TRANSFORMS",
    "CalibrationCheck",
    "Model",
    "Registration",
    "alignment_residuals",
    "check_calibration",
    "corner_error",
    "frame_corners",
    "from_frames",
    "from_points",
    "load_registration",
    "map_points",
    "overlay",
    "read_point_pairs",
]
