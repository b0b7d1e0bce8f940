#!/usr/bin/env bash
# Builds the kernels in kernels/ and the deliberately broken kernels in tests/broken/ against our CPU
# implementation of the AscendC API, then runs the C++ test drivers. Prints one summary line per
# suite; exits non-zero if any test fails. BUILD_DIR (default target/ascendc-tests) holds the outputs.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
here="$root/cann-sim/ascendc/tests"
build=${BUILD_DIR:-$root/target/ascendc-tests}
mkdir -p "$build"
cxx=${CXX:-g++}
flags=(-std=c++17 -O2 -g -Wall -Wextra -I"$root/cann-sim/ascendc" -I"$root/kernels" -pthread)

build_so() {  # SRC OUT: rebuilt only when a source or the runtime changed
  local src=$1 out=$2
  if [ ! -f "$out" ] || [ -n "$(find "$src" "$root/cann-sim/ascendc" "$root/kernels" "$root/scripts/build_kernel_cpu.sh" -newer "$out" -type f 2>/dev/null | head -1)" ]; then
    "$root/scripts/build_kernel_cpu.sh" "$src" "$out"
  fi
}
build_exe() {
  local src=$1 out=$2
  if [ ! -f "$out" ] || [ -n "$(find "$src" "$here" "$root/cann-sim/ascendc/cpu_abi.h" "$root/kernels/tiling.h" -newer "$out" -type f 2>/dev/null | head -1)" ]; then
    "$cxx" "${flags[@]}" "$src" -o "$out" -ldl
  fi
}

status=0
suites=()
for k in "$root"/kernels/*.cpp; do
  build_so "$k" "$build/$(basename "${k%.cpp}").so"
done
for t in "$here"/*_test.cpp; do
  name=$(basename "${t%_test.cpp}")
  build_exe "$t" "$build/${name}_test"
  suites+=("$name")
done
for name in "${suites[@]}"; do
  case $name in
    checks) arg="$build/broken" ; mkdir -p "$arg"
            for b in "$here"/broken/*.cpp; do build_so "$b" "$arg/$(basename "${b%.cpp}").so"; done ;;
    *) arg="$build/$name.so" ;;
  esac
  if ! "$build/${name}_test" "$arg"; then status=1; fi
done
exit $status
