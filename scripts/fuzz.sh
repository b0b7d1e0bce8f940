#!/usr/bin/env bash
# Bounded fuzzing of every target in fuzz/ with cargo-fuzz (libFuzzer, nightly toolchain), for CI:
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 10)
# Runs from the committed seed corpora (copied, so the repository is not changed); any crash, leak,
# timeout (10 s per input) or out-of-memory (2 GB) fails the script and leaves the input under
# fuzz/artifacts/TARGET/. Needs `rustup toolchain install nightly` and `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-10}"
targets=(safetensors_header safetensors_index config image chat_template chat_json tokenizer forward_inputs capi_request)
cargo +nightly fuzz build -O
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  cp -r "corpus/$t/." "$work/$t/"
  echo "== fuzz $t (${secs}s)"
  cargo +nightly fuzz run -O "$t" "$work/$t" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|Done)" || {
      echo "fuzz: $t failed (see fuzz/artifacts/$t)"; exit 1; }
done
