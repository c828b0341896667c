#!/usr/bin/env bash
# Creates the serving venv (default .venv-serve) for maefuse-serve, layered over the main venv.
#
# PyTriton (nvidia-pytriton 0.7.0, which ships the tritonserver binary) needs numpy < 2, while the main venv runs
# numpy 2 and OpenCV 5. The serving venv holds only what differs (PyTriton, numpy 1.26, OpenCV 4.x) and sees
# everything else (torch, onnxruntime, maefuse_deploy) through a .pth file that adds the main venv's
# site-packages after its own, so its own numpy/OpenCV win. docs/serving.md explains the choice.
#
# usage: bash scripts/serve-venv.sh [TARGET_DIR]   (run from anywhere; MAIN_PYTHON defaults to .venv/bin/python)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
target="${1:-$repo/.venv-serve}"
main_python="${MAIN_PYTHON:-$repo/.venv/bin/python}"
if [ ! -x "$main_python" ]; then
    echo "error: main venv python $main_python not found (fix: create the main venv first, see README)" >&2
    exit 1
fi
main_site="$("$main_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# Same interpreter as the main venv: the layered site-packages hold compiled extensions for it.
"$main_python" -m venv --clear "$target"
serve_site="$("$target/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# addsitedir (not a bare path) so the main venv's own .pth files (editable installs, a shared base) apply too.
echo "import site; site.addsitedir('$main_site')" > "$serve_site/zz_maefuse_main_venv.pth"
"$target/bin/python" -m pip install -q --disable-pip-version-check -e "$repo[serve]"
"$target/bin/python" - <<'PY'
import numpy, cv2, pytriton, torch, maefuse_deploy
assert numpy.__version__.startswith("1."), numpy.__version__
print(f"serving venv ready: numpy {numpy.__version__}, OpenCV {cv2.__version__}, torch {torch.__version__}, "
      f"maefuse_deploy from {maefuse_deploy.__file__}")
PY
