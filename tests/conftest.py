"""Shared fixtures. Real IR/VIS pairs come from ONE place, resolved by :func:`data_root`:

1. ``$MAEFUSE_DATA`` when set (a folder laid out as ``<set>/{ir,vi}/NAME.png``, e.g. the full RoadScene);
2. else ``../shared/data/ivif`` beside the repository, where the development machines keep the larger sets;
3. else ``tests/data``: the small set shipped in the repository (MSRS6, see tests/data/SOURCES.md), so a fresh
   clone runs every real-pair test.

Every set the default suite uses is in ``tests/data``. Tests of the larger sets are marked ``large_data`` and run
with ``MAEFUSE_DATA=DIR python -m pytest -m large_data``. A set a test needs that is missing skips with the fix
on a workstation and FAILS in CI (``CI=true``): CI must never pass by skipping its data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA_ENV = "MAEFUSE_DATA"
IN_REPO_DATA = REPO / "tests" / "data"
SHARED_DATA = REPO.parent / "shared" / "data" / "ivif"


def pytest_configure(config: pytest.Config) -> None:
    """Compiled models (backend auto, openvino-weights) go to a cache of this run, never the user's ~/.cache:
    a test must not depend on, or leave behind, what another run compiled. Commands the tests start inherit it."""
    import tempfile

    from maefuse_deploy.backends.cache import CACHE_ENV

    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="maefuse-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    from maefuse_deploy.backends.cache import CACHE_ENV

    shutil.rmtree(os.environ.get(CACHE_ENV, ""), ignore_errors=True)


def data_root() -> Path:
    """The folder real-pair tests read: $MAEFUSE_DATA, else ../shared/data/ivif, else tests/data."""
    configured = os.environ.get(DATA_ENV)
    if configured:
        return Path(configured)
    return SHARED_DATA if SHARED_DATA.is_dir() else IN_REPO_DATA


def missing_data(message: str) -> None:
    """Fail in CI, skip elsewhere: a missing data set must not let CI pass quietly."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: missing data is a failure)", pytrace=False)
    pytest.skip(message)


def require_module(name: str, fix: str) -> None:
    """An optional extra a test needs (GStreamer's ``gi``, ``openvino``): skip with the fix on a workstation that
    lacks it, FAIL in CI, which installs every extra (.ci/run)."""
    import importlib.util

    if importlib.util.find_spec(name) is None:
        message = f"{name} is not installed (fix: {fix})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: .ci/run installs every extra)", pytrace=False)
        pytest.skip(message, allow_module_level=True)


def data_set(name: str) -> Path:
    """``<root>/<name>`` with its ``ir/`` and ``vi/`` folders, or skip/fail (see :func:`missing_data`)."""
    folder = data_root() / name
    if not (folder / "ir").is_dir() or not (folder / "vi").is_dir():
        missing_data(f"data set {name!r} not found at {folder}; set {DATA_ENV} to a folder holding {name}/ir, vi")
    return folder


@pytest.fixture(scope="session")
def ivif() -> Path:
    """The data root (see the module docstring); its ``MSRS6`` set is always there."""
    data_set("MSRS6")
    return data_root()


@pytest.fixture(scope="session")
def msrs() -> Path:
    """The MSRS6 set: 6 registered 640x480 PNG pairs (IR grey, VIS colour), shipped in tests/data."""
    return data_set("MSRS6")


@pytest.fixture(scope="session")
def roadscene() -> Path:
    """The full RoadScene set (221 JPEG pairs, test50.txt): not shipped (licence, tests/data/SOURCES.md)."""
    return data_set("RoadScene")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests of the larger sets need the roadscene fixture: mark them so `-m large_data` selects them.
    for item in items:
        if "roadscene" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.large_data)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Two CI cores: intra-op threads beyond that only add contention noise.
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield


def write_video(path: Path, images, fps: float = 25, fourcc: str = "FFV1") -> Path:
    """A real video file of ``images`` (HxWx3 BGR uint8) at ``fps``; FFV1 is lossless, so the frames read back
    equal the ones written."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps,
                             (images[0].shape[1], images[0].shape[0]))
    assert writer.isOpened()
    for image in images:
        writer.write(image)
    writer.release()
    return path


@pytest.fixture(scope="module")
def fuser():
    """The micro model with random weights, batch 4, for tests that check plumbing, not fusion (a test module may
    define its own ``fuser``)."""
    from maefuse_deploy.runtime.fuser import Fuser

    with Fuser.from_checkpoint("random:maefuse-micro", batch_size=4) as fuser:
        yield fuser

