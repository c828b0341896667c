"""BatchProfile: the one batch-range type and its parser (contract.py).

No test here stands in a fake for TensorRT: where it must be absent, the test blocks the import.
"""

from __future__ import annotations

import pytest

from maefuse_deploy.contract import BatchProfile
from maefuse_deploy.contract import parse_batch_profile as parse_batch
from maefuse_deploy.errors import InputError


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1:4:8", (1, 4, 8)), ("8", (8, 8, 8)), (" 2:2:2 ", (2, 2, 2)), ("1:1:1", (1, 1, 1)), ("3:3:16", (3, 3, 16))],
)
def test_parse_batch(text, expected):
    profile = parse_batch(text)
    assert (profile.min, profile.opt, profile.max) == expected
    assert profile.is_static == (expected[0] == expected[2])
    assert BatchProfile.from_dict(profile.to_dict()) == profile


@pytest.mark.parametrize(
    "text", ["0", "0:1:2", "4:2:8", "1:8:4", "2:1:1", "-1:1:1", "a", "1.5", "1:2", "1:2:3:4", "", "1::8", "1:2:x"]
)
def test_parse_batch_rejects(text):
    with pytest.raises(InputError) as info:
        parse_batch(text)
    assert "MIN:OPT:MAX" in str(info.value)
    assert "\n" not in str(info.value)


def test_batch_profile_rejects_non_integers():
    with pytest.raises(InputError):
        BatchProfile(1, 2.0, 4)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        BatchProfile(True, 1, 1)  # type: ignore[arg-type]
