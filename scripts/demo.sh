#!/usr/bin/env bash
# The README's first command: builds a local checkpoint with real SmolLM2 text weights if needed, then
# asks it a question and asks it about a photo. Its vision tower is random (no real SmolVLM weights can be
# downloaded here), so only the text answer is meaningful; the photo run shows the whole image pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build_smollm2.sh
cargo build --release --quiet
./target/release/idefics3 generate --model target/smollm2-idefics3 --prompt "What is the capital of France?"
./target/release/idefics3 generate --model target/smollm2-idefics3 --image examples/chelsea.png \
    --prompt "Describe this image." --max-new-tokens 16
