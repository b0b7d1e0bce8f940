#!/usr/bin/env bash
# Regenerates cann-sys/src/bindings.rs from include/cann_decls.h with bindgen and fails if the result
# differs from the committed file (the committed file is then restored and the difference printed).
# `--write` keeps the regenerated file instead. Needs libclang (Debian: apt-get install -y libclang-dev).
set -euo pipefail

crate=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bindings="$crate/src/bindings.rs"
saved=$(mktemp)
trap 'rm -f "$saved"' EXIT
cp "$bindings" "$saved"

# The build script rewrites src/bindings.rs when the feature is on.
cargo build --quiet --manifest-path "$crate/Cargo.toml" -p cann-sys --features bindgen

if [ "${1:-}" = "--write" ]; then
    echo "src/bindings.rs regenerated"
    exit 0
fi
if ! diff -u "$saved" "$bindings"; then
    cp "$saved" "$bindings"
    echo "cann-sys/src/bindings.rs is stale: run cann-sys/scripts/check_bindings.sh --write and commit it" >&2
    exit 1
fi
echo "cann-sys bindings: regenerated file is identical to the committed one ($(grep -c '^pub type cann_pfn_' "$bindings") function types)"
