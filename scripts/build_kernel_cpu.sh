#!/usr/bin/env bash
# Builds an AscendC kernel source, unchanged, against our CPU implementation of the kernel API
# (cann-sim/ascendc) into a shared object exporting the ABI of cann-sim/ascendc/cpu_abi.h, which the
# simulator's aclrtBinaryLoadFromFile loads.
#
#   scripts/build_kernel_cpu.sh SRC.cpp OUT.so
#
# Every `extern "C" __global__ __aicore__ void NAME(...)` in SRC becomes a launchable kernel; its kind
# (how many cube and vector sub-cores a block runs) is read from KERNEL_TASK_TYPE_DEFAULT(...) in its body,
# vector-only when absent. Environment: CXX (default g++), ASCENDC_CPU_CXXFLAGS (extra flags, e.g.
# -fsanitize=address), ASCENDC_CPU_OPT (default -O2).
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 SRC.cpp OUT.so" >&2
  exit 2
fi
src=$1
out=$2
if [ ! -f "$src" ]; then
  echo "build_kernel_cpu.sh: no such kernel source: $src" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")/.." && pwd)
runtime="$here/cann-sim/ascendc"
src_abs=$(cd "$(dirname "$src")" && pwd)/$(basename "$src")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 - "$src_abs" "$tmp/thunk.cpp" <<'PY'
import re, sys
src, out = sys.argv[1], sys.argv[2]
text = open(src, encoding="utf-8").read()
# Blank out comments and string literals so that braces and names inside them are not read.
def blank(m):
    return re.sub(r"[^\n]", " ", m.group(0))
code = re.sub(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\])*"', blank, text, flags=re.S)
code_with_c = re.sub(r'//[^\n]*|/\*.*?\*/', blank, text, flags=re.S)
kernels = []
for m in re.finditer(r'extern\s+"C"\s+__global__\s+__aicore__\s+void\s+([A-Za-z_]\w*)\s*\(', code_with_c):
    name = m.group(1)
    i = code.index("(", m.end() - 1)
    depth = 0
    while True:
        ch = code[i]
        depth += ch == "("
        depth -= ch == ")"
        i += 1
        if depth == 0:
            break
    while code[i].isspace():
        i += 1
    if code[i] != "{":
        continue  # a declaration, not a definition
    start, depth = i, 0
    while True:
        ch = code[i]
        depth += ch == "{"
        depth -= ch == "}"
        i += 1
        if depth == 0:
            break
    body = code[start:i]
    t = re.search(r"KERNEL_TASK_TYPE_DEFAULT\s*\(\s*(KERNEL_TYPE_\w+)\s*\)", body)
    kernels.append((name, t.group(1) if t else "KERNEL_TYPE_AIV_ONLY"))
if not kernels:
    sys.exit(f"build_kernel_cpu.sh: no extern \"C\" __global__ __aicore__ kernel defined in {src}")
with open(out, "w") as f:
    f.write(f'#include "{src}"\n\n')
    f.write("static const ::AscendC::sim::KernelEntry ascendc_sim_kernels[] = {\n")
    for name, kind in kernels:
        f.write(f'    {{"{name}", ::AscendC::{kind},\n'
                f'     [](const uint8_t *a, size_t s) {{ return ::AscendC::sim::invoke_kernel(&{name}, a, s); }}}},\n')
    f.write("};\n\nASCENDC_SIM_EXPORT_ABI()\n")
PY

"${CXX:-g++}" -std=c++17 ${ASCENDC_CPU_OPT:--O2} -g -fPIC -shared -fvisibility=hidden -pthread \
  -Wall -Wextra -Wno-unused-parameter -I"$runtime" -I"$(dirname "$src_abs")" ${ASCENDC_CPU_CXXFLAGS:-} \
  "$tmp/thunk.cpp" -o "$out"
