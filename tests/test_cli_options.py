"""One CLI vocabulary: every console script's shared options have the same names, types and meaning, and the old
spellings still work with a deprecation note."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from maefuse_deploy.cli.options import BatchesType, BatchRangeType, DeviceType

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
OLD_SPELLINGS = {"--checkpoint", "-c", "--batch", "--dynamic-batch", "--preprocess", "--calibration",
                 "--calibration-pairs"}


def load(target: str) -> click.Command:
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


def shared_type_ok(option: click.Option) -> bool | None:
    """None when ``option`` is not a shared one; else whether its name and type are the shared definition's."""
    name = option.opts[0]
    if name == "--model":
        return option.name == "model" and option.type is click.STRING and "-m" in option.opts
    if name == "--batch-size":
        return option.name == "batch_size" and isinstance(option.type, click.IntRange) and option.type.min == 1
    if name == "--batch-range":
        return option.name == "batch_range" and isinstance(option.type, BatchRangeType)
    if name == "--batches":
        return option.name == "batches" and isinstance(option.type, BatchesType)
    if name == "--device":
        return option.name == "device" and isinstance(option.type, DeviceType)
    if name == "--processing":
        return option.name == "processing" and list(option.type.choices) == ["official", "native"]
    if name == "--int8-calibration":
        return option.name == "int8_calibration" and isinstance(option.type, click.Path)
    return None


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_command_uses_the_shared_options(script: str) -> None:
    command = load(SCRIPTS[script])
    options = [p for p in command.params if isinstance(p, click.Option)]
    for option in options:
        assert shared_type_ok(option) in (None, True), (script, option.opts, option.type)
        visible = set(option.opts) & OLD_SPELLINGS
        assert not visible or option.hidden, f"{script}: old spelling {visible} must be hidden (deprecated)"
    names = {o.opts[0] for o in options if not o.hidden}
    # What each command runs is named the same way, and every command that places work on a device says so alike.
    if script in ("maefuse-fuse", "maefuse-export", "maefuse-bench", "maefuse-build-engine"):
        assert "--model" in names, script
    if script in ("maefuse-fuse", "maefuse-bench", "maefuse-build-engine", "maefuse-train"):
        assert "--device" in names, script
    for other in ("--batch", "--dynamic-batch", "--checkpoint", "--policy", "--preprocess", "--calibration"):
        assert other not in names, (script, other)
    # One name per concept (issue 23): the processing policy is --processing wherever a command has one.
    if script in ("maefuse-fuse", "maefuse-stream", "maefuse-serve", "maefuse-train"):
        assert "--processing" in names, script


@pytest.mark.parametrize(("script", "args", "note"), [
    ("maefuse-fuse", ["--policy", "native"], "note: --policy is deprecated; use --processing"),
    ("maefuse-fuse", ["--calibration", "x"], "note: --calibration is deprecated; use --int8-calibration"),
    ("maefuse-train", ["--preprocess", "native"], "note: --preprocess is deprecated; use --processing"),
    ("maefuse-stream", ["--policy", "native"], "note: --policy native is deprecated; use --processing native"),
    ("maefuse-stream", ["--policy", "block"], "note: --policy is deprecated; use --queue-policy"),
    ("maefuse-bench", ["--calibration-pairs", "2"], "note: --calibration-pairs is deprecated; use "
                                                     "--int8-calibration-pairs"),
])
def test_renamed_options_still_work_with_a_note(script: str, args: list[str], note: str, tmp_path: Path) -> None:
    # Each run stops at a missing input after its options were read: the note comes first, the value is taken.
    missing = str(tmp_path / "none")
    rest = {"maefuse-fuse": ["--ir", missing, "--vis", missing],
            "maefuse-train": ["--stage", "fuse", "--data", missing, "--out", str(tmp_path / "run"), "--steps", "1"],
            "maefuse-stream": ["--ir", missing + ".mkv", "--vis", missing + ".mkv", "--out", str(tmp_path / "o.mkv")],
            "maefuse-bench": ["--latency", "--model", missing + ".safetensors"]}[script]
    code, lines = run(SCRIPTS[script], [*args, *rest])
    assert note in lines, lines
    assert code == 1 and lines[-1].startswith("error: ") and "none" in lines[-1], lines


def test_stream_old_policy_values_reach_their_new_options() -> None:
    from maefuse_deploy.cli.stream import _old_policy

    assert _old_policy("native", None, None) == ("auto", "native")
    assert _old_policy("drop-oldest", None, None) == ("drop-oldest", None)
    assert _old_policy(None, "block", "official") == ("block", "official")  # the new spellings
    assert _old_policy("block", "drop-oldest", None) == ("drop-oldest", None)  # the new spelling wins


def test_the_shared_vocabulary_covers_the_commands() -> None:
    seen = {o.opts[0] for target in SCRIPTS.values() for o in load(target).params if isinstance(o, click.Option)}
    assert {"--model", "--batch-size", "--batch-range", "--batches", "--device"} <= seen


def run(target: str, args: list[str]) -> tuple[int, list[str]]:
    result = CliRunner().invoke(load(target), args)
    return result.exit_code, result.stderr.splitlines()


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "cuda1", "tpu:0"])
def test_a_bad_device_is_one_line_before_anything_loads(value: str) -> None:
    code, lines = run(SCRIPTS["maefuse-fuse"], ["--device", value, "--model", "does-not-exist.safetensors"])
    assert code == 2  # a usage error (docs/reliability.md, exit codes)
    assert lines == [f"error: --device {value!r} is not a device (fix: use auto, cpu, cuda or cuda:N)"]


def test_old_spellings_still_work_with_a_deprecation_note(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.safetensors")
    # maefuse-fuse: --checkpoint and --batch reach the library as --model and --batch-size.
    code, lines = run(SCRIPTS["maefuse-fuse"], ["--checkpoint", missing, "--batch", "2", "--out", str(tmp_path)])
    assert "note: --checkpoint is deprecated; use --model" in lines
    assert "note: --batch is deprecated; use --batch-size" in lines
    assert code == 1 and lines[-1].startswith("error:") and "none.safetensors" in lines[-1]
    # maefuse-bench: --batch (the sweep) reaches parse_batches as --batches.
    code, lines = run(SCRIPTS["maefuse-bench"], ["--latency", "--batch", "0", "--model", "random:maefuse-micro"])
    assert "note: --batch is deprecated; use --batches" in lines
    assert code == 1 and "every batch size must be at least 1" in lines[-1]
    # maefuse-export: --dynamic-batch reaches parse_batch_profile as --batch-range.
    code, lines = run(SCRIPTS["maefuse-export"], ["--onnx", str(tmp_path / "g.onnx"), "--checkpoint",
                                                  "random:maefuse-micro", "--dynamic-batch", "4:2:1"])
    assert "note: --dynamic-batch is deprecated; use --batch-range" in lines
    assert code == 1 and "1 <= MIN <= OPT <= MAX" in lines[-1] and not (tmp_path / "g.onnx").exists()
    # maefuse-build-engine: --batch (the profile) and an integer --device; the graph as --model or positional.
    engine = str(tmp_path / "g.engine")
    code, lines = run(SCRIPTS["maefuse-build-engine"],
                      ["--model", str(tmp_path / "g.onnx"), "-o", engine, "--batch", "1:2:4", "--device", "0"])
    assert "note: --batch is deprecated; use --batch-range" in lines
    assert "note: --device 0 is deprecated; use --device cuda:0" in lines
    assert code == 1 and "g.onnx" in lines[-1]
    code, lines = run(SCRIPTS["maefuse-build-engine"], [str(tmp_path / "g.onnx"), "-o", str(tmp_path / "g.engine"),
                                                        "--batch-range", "nine"])
    assert code == 2 and lines == ["error: --batch-range 'nine' is not N or MIN:OPT:MAX (fix: e.g. 1 or 1:4:8)"]
