#!/usr/bin/env bash
# Step cpp-build of benchmarks/gpu/run.sh: configure and build the C++ tree (docs/cpp.md) for the lent GPU (sm_90)
# with the device tests on and without GStreamer, so that ctest and compute-sanitizer can run there.
#
# Usage: benchmarks/gpu/cpp_build.sh BUILD_DIR [PYTHON]
#   MAEFUSE_BUILD_JOBS (default 16: the lent machines' cores); MAEFUSE_BUILD_TARGETS (e.g. "test_device": only
#   those); MAEFUSE_VENDORED_DEPS=1 uses the fallbacks below even where the system has the packages (to check the
#   fallbacks on a machine that has them).
#
# The lent machines reach no package registry and may lack what CMake asks for (nlohmann-json3-dev, libstb-dev,
# pkg-config): each missing one is replaced from benchmarks/gpu/third_party/ in BUILD_DIR/deps, and the log says which.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$PWD"
build="${1:?usage: cpp_build.sh BUILD_DIR [PYTHON]}"
python="${2:-python3}"
jobs="${MAEFUSE_BUILD_JOBS:-16}"
vendored="${MAEFUSE_VENDORED_DEPS:-0}"
third="$repo/benchmarks/gpu/third_party"
mkdir -p "$build"
build="$(cd "$build" && pwd)"
deps="$build/deps"
extra=()

# nlohmann_json: CMake's find_package wants its config files; the fallback's config gives the same imported target.
have_json=0
for dir in /usr/share /usr/lib /usr/lib64 /usr/lib/* /usr/local/share /usr/local/lib /usr/local/lib64 /usr/local/lib/*; do
  if [ -f "$dir/cmake/nlohmann_json/nlohmann_jsonConfig.cmake" ]; then have_json=1; fi
done
if [ "$vendored" = 1 ] || [ "$have_json" = 0 ]; then
  echo "cpp-build: nlohmann_json 3.11.2 from benchmarks/gpu/third_party (no system nlohmann-json3-dev, or forced)"
  mkdir -p "$deps/nlohmann_json"
  cat >"$deps/nlohmann_json/nlohmann_jsonConfig.cmake" <<EOF
if(NOT TARGET nlohmann_json::nlohmann_json)
  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
  set_target_properties(nlohmann_json::nlohmann_json PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "$third/include")
endif()
EOF
  cat >"$deps/nlohmann_json/nlohmann_jsonConfigVersion.cmake" <<'EOF'
set(PACKAGE_VERSION 3.11.2)
if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()
EOF
  extra+=("-Dnlohmann_json_DIR=$deps/nlohmann_json")
fi

# stb: the sources link libstb (Debian ships the implementation as a library) and find it through pkg-config.
have_pkg_config=0
if command -v pkg-config >/dev/null; then have_pkg_config=1; fi
if [ "$vendored" = 1 ] || [ "$have_pkg_config" = 0 ] || ! pkg-config --exists stb; then
  echo "cpp-build: stb from benchmarks/gpu/third_party, libstb.a built here (no system libstb-dev, or forced)"
  mkdir -p "$deps/lib" "$deps/pkgconfig" "$deps/bin"
  cc -O2 -fPIC -w -c "$third/stb_impl.c" -I "$third/stb" -o "$deps/stb_impl.o"
  ar rcs "$deps/lib/libstb.a" "$deps/stb_impl.o"
  cat >"$deps/pkgconfig/stb.pc" <<EOF
prefix=$deps
libdir=$deps/lib
includedir=$third/stb

Name: stb
Description: stb_image and stb_image_write (benchmarks/gpu/third_party)
Version: 0.0
Libs: -L\${libdir} -lstb
Cflags: -I\${includedir}
EOF
  export PKG_CONFIG_PATH="$deps/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  if [ "$vendored" = 1 ] || [ "$have_pkg_config" = 0 ]; then
    # No pkg-config binary: answer the queries CMake's FindPkgConfig makes, for the stb module only.
    echo "cpp-build: pkg-config replaced by a shim that knows stb only"
    cat >"$deps/bin/pkg-config" <<EOF
#!/usr/bin/env bash
query=""; module=""
for arg in "\$@"; do
  case "\$arg" in
    --version) echo 0.29.2; exit 0 ;;
    --print-errors|--short-errors|--static) ;;
    --*) query="\$arg" ;;
    *) module="\$arg" ;;
  esac
done
if [ "\$module" != stb ]; then echo "Package \$module was not found (shim: stb only)" >&2; exit 1; fi
case "\$query" in
  --exists) ;;
  --modversion) echo 0.0 ;;
  --variable=prefix) echo "$deps" ;;
  --variable=libdir) echo "$deps/lib" ;;
  --variable=includedir) echo "$third/stb" ;;
  --cflags-only-I|--cflags) echo "-I$third/stb" ;;
  --libs-only-L) echo "-L$deps/lib" ;;
  --libs-only-l) echo "-lstb" ;;
  --libs) echo "-L$deps/lib -lstb" ;;
  *) echo ;;
esac
EOF
    chmod +x "$deps/bin/pkg-config"
    extra+=("-DPKG_CONFIG_EXECUTABLE=$deps/bin/pkg-config")
  fi
fi

generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
# The test prep (engines/tests/prepare_reference.py) imports maefuse_deploy: a plain checkout, no install there.
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
set -x
cmake -S "$repo" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DMAEFUSE_DEVICE_TESTS=ON -DMAEFUSE_WITH_GSTREAMER=OFF -DPython3_EXECUTABLE="$(command -v "$python")" "${extra[@]}"
# The test prep fuses the reference outputs with the Python Fuser, which would pick the GPU here: ctest's parity
# cases compare the CPU AOTInductor package with CPU references (docs/cpp.md), so the build sees no GPU.
CUDA_VISIBLE_DEVICES="" cmake --build "$build" -j "$jobs" ${MAEFUSE_BUILD_TARGETS:+--target $MAEFUSE_BUILD_TARGETS}
