/* Prints one static_assert per constant of cann_decls.h, with the value our header gives it, for
 * check.c to test against the real headers. The names come from cann_names.inc (written by
 * scripts/cann_conformance.sh from the header). */
#include <stdio.h>

#include "cann_decls.h"

#define V(name)                                                                                    \
    printf("static_assert((long long)(%s) == %lldLL, \"%s differs from cann_decls.h\");\n", #name, \
           (long long)(name), #name);

int main(void) {
#include "cann_names.inc"
    return 0;
}
