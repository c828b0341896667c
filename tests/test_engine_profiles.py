"""Optimization profiles per engine (``maefuse-build-engine --profiles``, tensorrt/build.py): as many as the
backend's pool has contexts, since TensorRT runs each concurrent context of a dynamic-shape engine on its own profile.

No test here stands in a fake for TensorRT: where it must be absent, the test blocks the import. The one test of
``add_profiles`` passes recorders that return what TensorRT's calls return; the code under test is ours.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from engine_support import H100, block_tensorrt, write_graph

from maefuse_deploy.backends.tensorrt import DEFAULT_POOL_SIZE, _pool_size
from maefuse_deploy.cli.build_engine import main as build_engine_cli
from maefuse_deploy.contract import BatchProfile
from maefuse_deploy.errors import InputError
from maefuse_deploy.tensorrt.build import (
    DEFAULT_DYNAMIC_BATCH,
    TYPING_FP16_FLAG,
    BuildOptions,
    BuildPlan,
    add_profiles,
    engine_sidecar,
    prepare_build,
)
from maefuse_deploy.tensorrt.errors import EngineError
from maefuse_deploy.tensorrt.sidecar import read_sidecar, write_sidecar


def run_cli(args: list[str]):
    return CliRunner().invoke(build_engine_cli, args)


def sidecar_of(plan: BuildPlan):
    """The sidecar ``build_engine`` writes for ``plan``, as if built on an H100 (the build itself needs a GPU)."""
    return engine_sidecar(plan, H100, typing=TYPING_FP16_FLAG, onnx_sha256="0" * 64, external_data_sha256={},
                          build_seconds=1.0, attention_fused="unknown")


def test_cli_refuses_several_profiles_for_a_fixed_batch_graph(monkeypatch, tmp_path):
    block_tensorrt(monkeypatch)  # refused before TensorRT is looked for: the exit code is 1, not 3
    graph = write_graph(tmp_path / "g.onnx", batch=4)
    result = run_cli([str(graph), "-o", str(tmp_path / "g.engine"), "--profiles", "2"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "fixed batch of 4" in lines[0] and "--profiles 2" in lines[0] and "(fix: " in lines[0]
    assert not (tmp_path / "g.engine").exists() and not (tmp_path / "g.engine.json").exists()
    # One profile is what such a graph needs: accepted, so the run goes on to look for TensorRT (exit 3).
    assert run_cli([str(graph), "-o", str(tmp_path / "g.engine"), "--profiles", "1"]).exit_code == 3
    # Fewer than one is a usage error from the option itself.
    assert run_cli([str(graph), "-o", str(tmp_path / "g.engine"), "--profiles", "0"]).exit_code == 2


def test_library_refuses_a_profile_count_below_one(tmp_path):
    with pytest.raises(InputError, match="at least 1"):
        prepare_build(write_graph(tmp_path / "g.onnx"), tmp_path / "g.engine", BuildOptions(profiles=0))


def test_dynamic_batch_plan_and_sidecar_carry_the_pool_default_of_profiles(tmp_path):
    assert DEFAULT_POOL_SIZE > 1  # else the default would not show that a second profile is built
    plan = prepare_build(write_graph(tmp_path / "g.onnx"), tmp_path / "g.engine")
    assert plan.profile_count == DEFAULT_POOL_SIZE
    assert plan.profiles == (DEFAULT_DYNAMIC_BATCH,) * DEFAULT_POOL_SIZE
    assert sidecar_of(plan).profiles == (DEFAULT_DYNAMIC_BATCH,) * DEFAULT_POOL_SIZE
    assert f"{DEFAULT_POOL_SIZE} optimization profiles" in plan.profiles_summary
    # A fixed profile on a dynamic-batch graph still makes a dynamic-shape engine: its contexts need a profile each.
    fixed = prepare_build(tmp_path / "g.onnx", tmp_path / "g.engine", BuildOptions(batch="4"))
    assert fixed.profiles == (BatchProfile(4, 4, 4),) * DEFAULT_POOL_SIZE
    chosen = prepare_build(tmp_path / "g.onnx", tmp_path / "g.engine", BuildOptions(profiles=3))
    assert sidecar_of(chosen).profiles == (DEFAULT_DYNAMIC_BATCH,) * 3


def test_fixed_batch_plan_has_one_shared_profile(tmp_path):
    plan = prepare_build(write_graph(tmp_path / "g.onnx", batch=4), tmp_path / "g.engine")
    assert plan.profiles == (BatchProfile(4, 4, 4),)
    assert sidecar_of(plan).profiles == (BatchProfile(4, 4, 4),)
    assert "1 optimization profile," in plan.profiles_summary and "shared" in plan.profiles_summary


@pytest.mark.parametrize("profiles", [None, 4])
def test_sidecar_round_trip_keeps_the_profiles_and_the_pool_they_allow(tmp_path, profiles):
    plan = prepare_build(write_graph(tmp_path / "g.onnx", declared_batch="1:2:4"), tmp_path / "g.engine",
                         BuildOptions(profiles=profiles))
    count = profiles or DEFAULT_POOL_SIZE
    engine = tmp_path / "g.engine"
    engine.write_bytes(b"plan")
    write_sidecar(engine, sidecar_of(plan))
    read = read_sidecar(engine)
    assert read.profiles == (BatchProfile(1, 2, 4),) * count
    assert (read.min_batch, read.max_batch) == (1, 4)
    # The backend's pool for a dynamic-batch engine with that many profiles: all of them, no note.
    assert _pool_size(count, dynamic_batch=True, profiles=len(read.profiles), requested=True) == (count, None)
    size, note = _pool_size(count + 1, dynamic_batch=True, profiles=len(read.profiles), requested=True)
    assert size == count and note is not None and f"maefuse-build-engine --profiles {count + 1}" in note


class RecordingProfile:
    """TensorRT's IOptimizationProfile as far as the build uses it: ``set_shape`` records, or raises as it does."""

    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.shapes: dict[str, tuple[Any, Any, Any]] = {}

    def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
        if self.refuse:
            raise RuntimeError("set_shape: min dimensions exceed max")
        self.shapes[name] = (lo, opt, hi)


def test_add_profiles_adds_every_profile_with_every_input(tmp_path):
    plan = prepare_build(write_graph(tmp_path / "g.onnx"), tmp_path / "g.engine", BuildOptions(profiles=3))
    made: list[RecordingProfile] = []
    added: list[RecordingProfile] = []

    def create() -> RecordingProfile:
        made.append(RecordingProfile(refuse=False))
        return made[-1]

    def add(profile: RecordingProfile) -> int:  # TensorRT returns the new profile's index
        added.append(profile)
        return len(added) - 1

    add_profiles(SimpleNamespace(create_optimization_profile=create), SimpleNamespace(add_optimization_profile=add),
                 plan)
    assert len(added) == 3 and len({id(p) for p in added}) == 3
    assert all(p.shapes == plan.shapes for p in added)
    # A refusal names the profile it happened in, in one line: here TensorRT takes profile 0 and rejects profile 1.
    made.clear()
    with pytest.raises(EngineError) as info:
        add_profiles(SimpleNamespace(create_optimization_profile=create),
                     SimpleNamespace(add_optimization_profile=lambda p: 0 if len(made) == 1 else -1), plan)
    assert "optimization profile 1" in str(info.value) and "\n" not in str(info.value)


def test_profile_count_is_in_the_help():
    result = run_cli(["--help"])
    assert result.exit_code == 0 and "--profiles" in result.output
    assert f"{DEFAULT_POOL_SIZE} (the backend's pool_size)" in " ".join(result.output.split())
