#!/usr/bin/env bash
# Checks that cann-sys/include/cann_decls.h agrees with Huawei's real CANN headers.
#
# 1. torch-npu's wheel (a pip download, no dependencies) ships the ACL runtime headers: they are unpacked
#    under target/cann-conformance/ (never committed) and compiled together with our header, as C11 and as
#    C++17, so a prototype or typedef that differs fails to compile and each constant is asserted equal.
# 2. Two deliberately wrong copies of our header (a prototype, a constant) must be rejected, showing that
#    the check can fail.
# 3. Where a CANN toolkit is installed ($ASCEND_TOOLKIT_HOME/include), the same check runs against it,
#    adding its nnopbase (aclnn/) and operator (aclnnop/) headers.
#
# Needs python3 with pip, a C and a C++ compiler, and the package registry for the first download.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work="$root/target/cann-conformance"
ours="$root/cann-sys/include"
checks="$root/cann-sys/conformance"
torch_npu_version=2.14.0
CC=${CC:-cc}
CXX=${CXX:-c++}
mkdir -p "$work"

fetch_torch_npu_headers() {
    local wheel_dir="$work/wheel"
    local wheel
    wheel=$(ls "$wheel_dir"/torch_npu-"$torch_npu_version"-*.whl 2>/dev/null | head -n1 || true)
    if [ -z "$wheel" ]; then
        # The headers are the same in every build of the wheel; pin one so the download is reproducible.
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
            "torch-npu==$torch_npu_version" -d "$wheel_dir"
        wheel=$(ls "$wheel_dir"/torch_npu-"$torch_npu_version"-*.whl | head -n1)
    fi
    rm -rf "$work/torch-npu"
    python3 - "$wheel" "$work/torch-npu" <<'PY'
import sys, zipfile
prefix = "torch_npu/include/third_party/acl/inc/"
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not any(n.endswith("acl/acl.h") for n in names):
        sys.exit(f"{sys.argv[1]}: no {prefix}acl/acl.h in the wheel")
    z.extractall(sys.argv[2], names)
PY
    echo "$work/torch-npu/torch_npu/include/third_party/acl/inc"
}

# Constant names of a header: enumerators, static const ints and #defines with a value.
constant_names() {
    sed -nE -e 's/^[[:space:]]+(ACL[A-Z0-9_]*)[[:space:]]*=.*/\1/p' \
        -e 's/^static const int (ACL[A-Z0-9_]*)[[:space:]]*=.*/\1/p' \
        -e 's/^#define (ACL[A-Z0-9_]*)[[:space:]]+[0-9].*/\1/p' "$1" | sort -u
}

# Writes $2/cann_values.inc: static_asserts of the values that header dir $1 gives to the names
# selected by the grep pattern $3.
record_values() {
    local header_dir=$1 out=$2 pattern=$3
    constant_names "$header_dir/cann_decls.h" | grep -E "$pattern" | sed 's/.*/V(&)/' >"$out/cann_names.inc"
    "$CC" -std=c11 -Wall -Werror -I"$header_dir" -I"$out" "$checks/gen_values.c" -o "$out/gen_values"
    "$out/gen_values" >"$out/cann_values.inc"
}

# Compiles check.c against real include dir $1 with our header dir $2 and values in dir $3, as C and C++.
# Extra C++ flags follow.
compile_check() {
    local real=$1 header_dir=$2 values=$3
    shift 3
    "$CC" -std=c11 -Wall -Wextra -Werror -pedantic -isystem "$real" -I"$header_dir" \
        -c "$checks/check.c" -o "$values/check.o" &&
        "$CXX" -std=c++17 -Wall -Wextra -Werror -isystem "$real" -I"$header_dir" -I"$values" \
            -DCANN_CHECK_VALUES "$@" -x c++ -c "$checks/check.c" -o "$values/check.o"
}

# Every ACL runtime function we declare must be declared by the real headers in dir $1 too (otherwise
# the compile above would not have compared it with anything).
check_all_runtime_functions_seen() {
    local real=$1 missing=0 n=0 name
    for name in $(sed -nE 's/^CANN_PFN\((acl(rt[A-Za-z0-9]*|Init|Finalize|GetRecentErrMsg))\)$/\1/p' "$ours/cann_decls.h"); do
        n=$((n + 1))
        if ! grep -rqE "[ *]$name\(" "$real/acl"; then
            echo "  $name: not declared by the real headers in $real" >&2
            missing=1
        fi
    done
    [ "$missing" = 0 ] || return 1
    echo "  $n ACL runtime functions of ours are declared by the real headers and were compared"
}

# A wrong copy of our header must fail the check. $1: sed expression, $2: what it breaks.
expect_rejected() {
    local real=$1 expr=$2 what=$3 bad="$work/negative"
    rm -rf "$bad" && mkdir -p "$bad"
    sed -E "$expr" "$ours/cann_decls.h" >"$bad/cann_decls.h"
    if cmp -s "$ours/cann_decls.h" "$bad/cann_decls.h"; then
        echo "negative control '$what': the edit did not apply to cann_decls.h" >&2
        return 1
    fi
    # Values of the wrong header are recorded from it, as they would be from a wrong header in the tree.
    record_values "$bad" "$bad" '^ACL_'
    if compile_check "$real" "$bad" "$bad" 2>"$bad/errors.txt"; then
        echo "negative control '$what': the broken header was NOT rejected" >&2
        return 1
    fi
    echo "  rejected as expected: $what ($(grep -m1 -E 'error' "$bad/errors.txt" | sed -E 's/^.*error: //' | cut -c1-110))"
}

functions=$(grep -cE '^(CANN_PFN|CANN_ACLNN_RUN)\(' "$ours/cann_decls.h")
echo "cann_decls.h declares $functions functions and $(constant_names "$ours/cann_decls.h" | wc -l) constants"

echo "== against torch-npu $torch_npu_version's ACL headers"
real=$(fetch_torch_npu_headers)
grep -E '#define ACL_(MAJOR|MINOR|PATCH)_VERSION' "$real/acl/acl_rt.h" | awk '{printf "  real %s = %s\n", $2, $3}'
values="$work/values"
mkdir -p "$values"
# torch-npu ships no nnopbase headers, so only the ACL constants can be compared here.
record_values "$ours" "$values" '^ACL_'
compile_check "$real" "$ours" "$values"
echo "  C11 and C++17: our header and acl/acl.h compile together; $(grep -c static_assert "$values/cann_values.inc") constants equal"
check_all_runtime_functions_seen "$real"
expect_rejected "$real" 's/^aclError aclrtFree\(void \*devPtr\);/aclError aclrtFree(const void *devPtr);/' \
    "aclrtFree takes const void *"
expect_rejected "$real" 's/^    ACL_FLOAT16 = 1,/    ACL_FLOAT16 = 2,/' "ACL_FLOAT16 = 2"

toolkit=${ASCEND_TOOLKIT_HOME:-}
if [ -n "$toolkit" ] && [ -f "$toolkit/include/acl/acl.h" ]; then
    echo "== against the CANN toolkit in $toolkit"
    inc="$toolkit/include"
    tk="$work/toolkit"
    mkdir -p "$tk"
    : >"$tk/cann_toolkit_headers.inc"
    for h in aclnn/acl_meta.h aclnn/aclnn_base.h aclnn/opdev/op_errno.h; do
        [ -f "$inc/$h" ] && echo "#include \"$h\"" >>"$tk/cann_toolkit_headers.inc"
    done
    for op in mm matmul add mul rms_norm layer_norm gelu_v2 silu swi_glu rotary_position_embedding \
        flash_attention_score fused_infer_attention_score_v2 embedding index_select index_copy permute cast \
        argmax copy; do
        if [ -f "$inc/aclnnop/aclnn_$op.h" ]; then
            echo "#include \"aclnnop/aclnn_$op.h\"" >>"$tk/cann_toolkit_headers.inc"
        else
            echo "  note: $inc/aclnnop/aclnn_$op.h not found; its operator is not compared" >&2
        fi
    done
    record_values "$ours" "$tk" '^ACL'
    compile_check "$inc" "$ours" "$tk" -DCANN_CHECK_ACLNN -I"$tk"
    echo "  C11 (ACL) and C++17 (ACL + $(grep -c include "$tk/cann_toolkit_headers.inc") nnopbase/aclnn headers) agree;" \
        "$(grep -c static_assert "$tk/cann_values.inc") constants equal"
    check_all_runtime_functions_seen "$inc"
else
    echo "== no CANN toolkit (ASCEND_TOOLKIT_HOME unset or without include/acl/acl.h): toolkit check not run"
fi
echo "cann conformance: passed"
