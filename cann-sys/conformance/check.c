/* Conformance check of cann-sys/include/cann_decls.h against Huawei's real headers (run by
 * scripts/cann_conformance.sh; never compiled into anything).
 *
 * The real headers come first, so our header skips the enumerations and constants they define and
 * re-declares every handle typedef and function prototype: a prototype or typedef that differs from the
 * real one is a compile error. Compiled as C++ with CANN_CHECK_VALUES, it also asserts that each of our
 * constants (recorded from our header alone in cann_values.inc) equals the real header's value.
 * CANN_CHECK_ACLNN adds the toolkit's nnopbase and aclnn operator headers (C++ only). */
#include "acl/acl.h"
#ifdef CANN_CHECK_ACLNN
#include "cann_toolkit_headers.inc"
#endif
#include "cann_decls.h"

#ifdef CANN_CHECK_VALUES
#include "cann_values.inc"
#endif

int main(void) { return 0; }
