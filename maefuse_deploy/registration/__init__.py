"""IR-to-VIS registration of a camera rig: the mapping and its calibration file (``mapping.py``: load, save,
check, warp), its estimation from point pairs or frame pairs (``estimate.py``), and which pairs of a live rig's
stream to estimate from (``collect.py``). docs/streaming.md describes the file format, the method and its measured
accuracy."""

from .collect import DEFAULT_FRAMES, FrameCollector, Progress
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
    structure_matches,
    view_change,
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
    "DEFAULT_FRAMES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MODELS",
    "TRANSFORMS",
    "CalibrationCheck",
    "FrameCollector",
    "Model",
    "Progress",
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
    "structure_matches",
    "view_change",
]
