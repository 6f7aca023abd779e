#!/usr/bin/env bash
# Set up .venv with gpo, its test tools and the embedded local model.
#
# llama-cpp-python compiles from source (about 3.5 minutes on 2 cores). The
# native build crashes in the AMX kernels of these CPUs, so it is built with
# the flags below; and since pip's wheel cache ignores CMAKE_ARGS, we keep our
# own wheel, keyed by version, flags, Python and machine, and never let pip
# pick up one built with other flags.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${GPO_VENV:-.venv}
LLAMA_VERSION=0.3.36
export CMAKE_ARGS=${GPO_CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"}
WHEELS=${GPO_WHEEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gpo/wheels}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip

if [ "${GPO_SKIP_LOCAL:-0}" != "1" ]; then
  key=$(printf '%s|%s|%s' "$LLAMA_VERSION" "$CMAKE_ARGS" \
        "$("$PY" -c 'import platform, sys; print(sys.version_info[:2], platform.machine())')" \
        | sha256sum | cut -c1-16)
  dir="$WHEELS/llama-$key"
  if ! ls "$dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $LLAMA_VERSION (about 4 minutes, once; kept in $dir)"
    mkdir -p "$dir.tmp"
    "$PY" -m pip wheel -q --no-cache-dir --no-deps -w "$dir.tmp" "llama-cpp-python==$LLAMA_VERSION"
    mv "$dir.tmp" "$dir"
  fi
  "$PY" -m pip install -q "$dir"/llama_cpp_python-*.whl
  extras="dev,local"
else
  extras="dev"
fi
"$PY" -m pip install -q -e ".[$extras]"
echo "gpo is set up in $VENV"
