"""The pairing rule, one for Python and C++: the cases in tests/data/pairing_cases.json run through the Python
pairer here and through the element's rule in ctest (engines/tests/test_internal.cpp, case pairing_rule)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from maefuse_deploy.stream.pairing import TimestampPairer
from maefuse_deploy.stream.sources import Frame

CASES = json.loads((Path(__file__).parent / "data" / "pairing_cases.json").read_text())["cases"]
PIXEL = np.zeros((1, 1), np.uint8)


def frames(times_ns: list[int]) -> list[Frame]:
    return [Frame(PIXEL, t / 1e9, index, 0.0) for index, t in enumerate(times_ns)]


def pairer_for(case: dict) -> TimestampPairer:
    rate = {role: case[f"{role}_rate"][0] / case[f"{role}_rate"][1] for role in ("ir", "vis")}
    tolerance = None if case["tolerance_ns"] is None else case["tolerance_ns"] / 1e9
    return TimestampPairer(tolerance, case["ir_offset_ns"] / 1e9, (rate["ir"], rate["vis"]))


def outcome(pairer: TimestampPairer, pairs: list) -> dict:
    return {"pairs": [[p.vis.index, p.ir.index] for p in pairs], "vis_unpaired": pairer.unpaired["vis"],
            "ir_unpaired": pairer.unpaired["ir"], "ir_reused": pairer.reused}


def expected(case: dict) -> dict:
    return {key: case[key] for key in ("pairs", "vis_unpaired", "ir_unpaired", "ir_reused")}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_online_pairer_driven_by_needs_follows_the_shared_cases(case):
    # As the pipeline runs it: read whichever stream the pairer waits for.
    pairer = pairer_for(case)
    streams = {"ir": iter(frames(case["ir_ns"])), "vis": iter(frames(case["vis_ns"]))}
    pairs = []
    while (role := pairer.needs()) is not None:
        pairs += pairer.add(role, next(streams[role], None))
    assert outcome(pairer, pairs) == expected(case), case["why"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_decision_does_not_depend_on_arrival_order(case):
    # A source that runs ahead (every IR frame first) or behind (every VIS frame first) changes nothing.
    for first in ("ir", "vis"):
        pairer = pairer_for(case)
        second = "vis" if first == "ir" else "ir"
        pairs = []
        for role in (first, second):
            for frame in frames(case[f"{role}_ns"]):
                pairs += pairer.add(role, frame)
            pairs += pairer.add(role, None)
        assert outcome(pairer, pairs) == expected(case), (first, case["why"])


def test_the_cases_cover_what_the_rule_decides():
    # Reuse, unpaired frames on both sides, a tie and the tolerance boundary each appear in at least one case.
    assert any(c["ir_reused"] for c in CASES) and any(c["vis_unpaired"] for c in CASES)
    assert any(c["ir_unpaired"] for c in CASES) and any(c["ir_offset_ns"] for c in CASES)
    assert {"tolerance_boundary", "ir25_vis30"} <= {c["name"] for c in CASES}
