#!/usr/bin/env bash
# Long fuzzing runs (by hand): every target for SECONDS each (default one hour), growing the corpora
# under fuzz/corpus/ in place (minimise before committing: `cargo +nightly fuzz cmin TARGET`).
#   nice -n 10 bash scripts/fuzz_long.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-3600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors_header safetensors_index config image chat_template chat_json tokenizer forward_inputs capi_request)
for t in "${targets[@]}"; do
  echo "== fuzz $t (${secs}s)"
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -max_len=1048576 -print_final_stats=1
done
