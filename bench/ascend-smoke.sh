#!/usr/bin/env bash
# The first run on a real Ascend 910B (nothing here has run on one yet): checks, then measurements, into
# one report file. Needs the CANN toolkit's environment (source .../ascend-toolkit/set_env.sh, so that
# ASCEND_TOOLKIT_HOME is set) and this repository's build prerequisites (cargo, gcc, python3).
#
#   bash bench/ascend-smoke.sh [REPORT] [W1_DIR] [IDEFICS3_8B_DIR]
#
# Steps, each recorded with its output and exit status (a failed step does not stop the later ones):
#   1. our CANN declarations compiled against the installed toolkit's headers (scripts/cann_conformance.sh);
#   2. the device binaries of kernels/ built by build.rs with the toolkit's compiler;
#   3. the whole-model parity tests of tests/ascend.rs on the device (IDEFICS3_TEST_DEVICE=real; each op
#      of the model is then checked against the transformers references through the fixtures), with
#      aclnn and with --kernels custom;
#   4. `idefics3 bench --backend ascend` on W1 and on Idefics3-8B-Llama3 (when their directories exist)
#      in bf16 and fp16, with both kernel choices.
set -uo pipefail
cd "$(dirname "$0")/.."
report=${1:-target/ascend-smoke-report.md}
w1=${2:-target/w1}
big=${3:-${IDEFICS3_8B_DIR:-}}
mkdir -p "$(dirname "$report")"
: >"$report"
status=0

step() {
  local title=$1
  shift
  echo "== $title" | tee -a "$report"
  {
    echo '```'
    echo "\$ $*"
  } >>"$report"
  "$@" >>"$report" 2>&1
  local rc=$?
  {
    echo "(exit status $rc)"
    echo '```'
  } >>"$report"
  [ $rc -eq 0 ] || status=1
  echo "   exit status $rc"
}

if [ -z "${ASCEND_TOOLKIT_HOME:-${ASCEND_HOME_PATH:-}}" ]; then
  echo "ascend-smoke: ASCEND_TOOLKIT_HOME is not set: source the toolkit's set_env.sh first" >&2
  exit 2
fi
{
  echo "# Ascend smoke report, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "- toolkit: ${ASCEND_TOOLKIT_HOME:-$ASCEND_HOME_PATH}"
  echo "- commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "- npu-smi: $(npu-smi info -l 2>/dev/null | head -n 3 | tr '\n' ' ' || echo unavailable)"
  echo
} >>"$report"

step "conformance against the installed toolkit" bash scripts/cann_conformance.sh
step "release build (device kernels by build.rs)" cargo build --release
kernel_dir=$(find target/release/build -type d -name ascend-kernels 2>/dev/null | head -n 1)
step "whole-model parity on the device, aclnn" env IDEFICS3_TEST_DEVICE=real cargo test --release --test ascend
if [ -n "$kernel_dir" ]; then
  step "whole-model parity on the device, --kernels custom" env IDEFICS3_TEST_DEVICE=real \
    IDEFICS3_ASCEND_KERNELS="$kernel_dir" cargo test --release --test ascend custom_kernels
else
  echo "== no device kernel binaries were built (see the build step)" | tee -a "$report"
  status=1
fi

for model in "$w1" "$big"; do
  [ -n "$model" ] && [ -d "$model" ] || continue
  image=$model/photo.jpg
  [ -f "$image" ] || image=examples/chelsea.png
  for dtype in bf16 fp16; do
    for kernels in aclnn custom; do
      step "bench $(basename "$model") $dtype $kernels" env IDEFICS3_ASCEND_KERNELS="$kernel_dir" \
        ./target/release/idefics3 bench --backend ascend --kernels "$kernels" --model "$model" \
        --image "$image" --dtype "$dtype" --new-tokens 128 --runs 3
    done
  done
done
echo "report: $report"
exit $status
