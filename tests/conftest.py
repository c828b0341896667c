from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
IVIF = REPO.parent / "shared" / "data" / "ivif"
ROADSCENE = IVIF / "RoadScene"
MSRS = IVIF / "MSRS6"


@pytest.fixture(scope="session")
def ivif() -> Path:
    if not IVIF.is_dir():
        pytest.skip(f"real pairs not found at {IVIF}")
    return IVIF


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Two CI cores: intra-op threads beyond that only add contention noise.
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield
