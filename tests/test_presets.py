"""Export presets are package data: found from the working directory's export/ folder, else the package, and
from a wheel installed into a fresh environment (not only from the source tree)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from maefuse_deploy.errors import InputError
from maefuse_deploy.export.presets import load_preset, preset_names

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {"l640-b1", "l640-b8-fp16", "thermal-640x512-uint8"}


def test_shipped_presets_load_and_a_local_one_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert set(preset_names()) >= SHIPPED
    recipe = load_preset("l640-b1")
    assert {k: v for k, v in recipe.items() if k != "description"} == {
        "height": 640, "width": 640, "batch": "1", "precision": "fp32", "io": "float"}
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "l640-b1.json").write_text(json.dumps({"height": 320, "width": 320}))
    (tmp_path / "export" / "mine.json").write_text(json.dumps({"batch": "1:2:4"}))
    assert load_preset("l640-b1") == {"height": 320, "width": 320}
    assert "mine" in preset_names()


def test_unknown_preset_or_key_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"unknown export preset 'l640'.*l640-b1, l640-b8-fp16"):
        load_preset("l640")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "typo.json").write_text(json.dumps({"hieght": 320}))
    with pytest.raises(InputError, match="unknown keys hieght"):
        load_preset("typo")


def _site_dirs_without_this_package() -> list[str]:
    """The running interpreter's package folders (torch, onnx, ... live there) that hold no copy of this package.

    A venv inside the checkout (CI's) is kept: its editable install is a finder hook that a folder named in a .pth
    file does not run, so the wheel's copy is the one imported."""
    return [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()
            and not (Path(p) / "maefuse_deploy").exists()]


@pytest.mark.slow
def test_preset_lookup_works_from_an_installed_wheel(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = dist.glob("maefuse_deploy-*.whl")
    assert {f"maefuse_deploy/export/presets/{n}.json" for n in SHIPPED} <= set(zipfile.ZipFile(wheel).namelist())

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies come from this interpreter's folders (no download); the package itself only from the wheel.
    Path(site, "base-packages.pth").write_text("\n".join(_site_dirs_without_this_package()) + "\n")
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"  # no export/ folder, not the repository
    elsewhere.mkdir()
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    probe = subprocess.run(
        [str(python), "-c", "import maefuse_deploy, json; from maefuse_deploy.export.presets import load_preset; "
         "print(maefuse_deploy.__file__); print(json.dumps(load_preset('l640-b1')))"],
        cwd=elsewhere, capture_output=True, text=True, env=clean_env, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    module_file, recipe = probe.stdout.strip().splitlines()
    assert Path(module_file).is_relative_to(env_dir), module_file  # the wheel's copy, not the source tree
    assert json.loads(recipe)["height"] == 640
    # The console script, end to end up to the preset lookup: an unknown name lists the installed presets.
    command = subprocess.run(
        [str(env_dir / "bin" / "maefuse-export"), "--onnx", "x.onnx", "--preset", "l640-b2"],
        cwd=elsewhere, capture_output=True, text=True, env=clean_env, timeout=120,
    )
    assert command.returncode != 0
    assert "unknown export preset 'l640-b2'" in command.stderr and "l640-b1" in command.stderr, command.stderr
