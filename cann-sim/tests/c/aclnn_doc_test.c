/* A C program written only from CANN's documents (our own declarations below, not a CANN header): it runs
 * aclnnAdd, aclnnMm over a transposed weight view and aclnnRmsNorm through libcann_sim.so, checks the
 * results, and checks the documented status codes of bad calls.
 * Declarations follow: hicann/runtime docs (aclInit, aclrtSetDevice, aclrtCreateStream, aclrtMalloc,
 * aclrtMemcpy, aclrtSynchronizeStream, aclGetRecentErrMsg), opbase acl_meta.h documents (aclCreateTensor family),
 * ops-math math/add/docs/aclnnAdd&aclnnInplaceAdd.md, ops-nn matmul/mat_mul_v3/docs/aclnnMm.md,
 * ops-nn norm/rms_norm/docs/aclnnRmsNorm.md, docs/zh/context/aclnn_return_code.md. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef int aclError;
typedef int32_t aclnnStatus;
typedef void *aclrtStream;
typedef struct aclTensor aclTensor;
typedef struct aclScalar aclScalar;
typedef struct aclOpExecutor aclOpExecutor;
typedef enum { ACL_FLOAT = 0, ACL_FLOAT16 = 1, ACL_INT64 = 9, ACL_BF16 = 27 } aclDataType;
typedef enum { ACL_FORMAT_ND = 2 } aclFormat;
enum { ACL_MEM_MALLOC_HUGE_FIRST = 0 };
enum { ACL_MEMCPY_HOST_TO_DEVICE = 1, ACL_MEMCPY_DEVICE_TO_HOST = 2 };
enum { ACLNN_ERR_PARAM_NULLPTR = 161001, ACLNN_ERR_PARAM_INVALID = 161002, ACLNN_ERR_INNER_TILING_ERROR = 561002 };

aclError aclInit(const char *configPath);
aclError aclFinalize(void);
aclError aclrtSetDevice(int32_t deviceId);
aclError aclrtResetDevice(int32_t deviceId);
aclError aclrtCreateStream(aclrtStream *stream);
aclError aclrtDestroyStream(aclrtStream stream);
aclError aclrtSynchronizeStream(aclrtStream stream);
aclError aclrtMalloc(void **devPtr, size_t size, int policy);
aclError aclrtFree(void *devPtr);
aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, int kind);
const char *aclGetRecentErrMsg(void);

aclTensor *aclCreateTensor(const int64_t *viewDims, uint64_t viewDimsNum, aclDataType dataType,
                           const int64_t *stride, int64_t offset, aclFormat format, const int64_t *storageDims,
                           uint64_t storageDimsNum, void *tensorData);
aclnnStatus aclDestroyTensor(const aclTensor *tensor);
aclScalar *aclCreateScalar(void *value, aclDataType dataType);
aclnnStatus aclDestroyScalar(const aclScalar *scalar);
aclnnStatus aclSetAclOpExecutorRepeatable(aclOpExecutor *executor);
aclnnStatus aclDestroyAclOpExecutor(aclOpExecutor *executor);

aclnnStatus aclnnAddGetWorkspaceSize(const aclTensor *self, const aclTensor *other, const aclScalar *alpha,
                                     aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor);
aclnnStatus aclnnAdd(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream);
aclnnStatus aclnnMmGetWorkspaceSize(const aclTensor *self, const aclTensor *mat2, aclTensor *out,
                                    int8_t cubeMathType, uint64_t *workspaceSize, aclOpExecutor **executor);
aclnnStatus aclnnMm(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream);
aclnnStatus aclnnRmsNormGetWorkspaceSize(const aclTensor *x, const aclTensor *gamma, double epsilon,
                                         const aclTensor *yOut, const aclTensor *rstdOut, uint64_t *workspaceSize,
                                         aclOpExecutor **executor);
aclnnStatus aclnnRmsNorm(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream);

static int failures = 0;
#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!(cond)) {                                    \
            printf("FAIL line %d: ", __LINE__);           \
            printf(__VA_ARGS__);                          \
            printf(" (recent: %s)\n", recent());          \
            failures++;                                   \
        }                                                 \
    } while (0)

static const char *recent(void) {
    const char *m = aclGetRecentErrMsg();
    return m ? m : "";
}

static void *upload(const float *host, size_t n) {
    void *dev = NULL;
    if (aclrtMalloc(&dev, n * sizeof(float), ACL_MEM_MALLOC_HUGE_FIRST) != 0) return NULL;
    if (host && aclrtMemcpy(dev, n * sizeof(float), host, n * sizeof(float), ACL_MEMCPY_HOST_TO_DEVICE) != 0) return NULL;
    return dev;
}

/* A contiguous float tensor over device memory. */
static aclTensor *tensor2(void *dev, int64_t rows, int64_t cols) {
    int64_t dims[2] = {rows, cols}, strides[2] = {cols, 1};
    return aclCreateTensor(dims, 2, ACL_FLOAT, strides, 0, ACL_FORMAT_ND, dims, 2, dev);
}

static int run(aclnnStatus (*phase2)(void *, uint64_t, aclOpExecutor *, aclrtStream), uint64_t ws,
               aclOpExecutor *ex, aclrtStream stream) {
    void *w = NULL;
    if (ws > 0 && aclrtMalloc(&w, ws, ACL_MEM_MALLOC_HUGE_FIRST) != 0) return -1;
    int rc = phase2(w, ws, ex, stream);
    int sync = aclrtSynchronizeStream(stream);
    if (w) aclrtFree(w);
    return rc != 0 ? rc : sync;
}

int main(void) {
    aclrtStream stream = NULL;
    CHECK(aclInit(NULL) == 0, "aclInit");
    CHECK(aclrtSetDevice(0) == 0, "aclrtSetDevice");
    CHECK(aclrtCreateStream(&stream) == 0, "aclrtCreateStream");

    /* Add: out = a + 2 * b. */
    float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {10, 20, 30, 40, 50, 60}, got[6];
    void *da = upload(a, 6), *db = upload(b, 6), *dout = upload(NULL, 6);
    aclTensor *ta = tensor2(da, 2, 3), *tb = tensor2(db, 2, 3), *tout = tensor2(dout, 2, 3);
    float two = 2.0f;
    aclScalar *alpha = aclCreateScalar(&two, ACL_FLOAT);
    uint64_t ws = 0;
    aclOpExecutor *ex = NULL;
    CHECK(aclnnAddGetWorkspaceSize(ta, tb, alpha, tout, &ws, &ex) == 0, "aclnnAddGetWorkspaceSize");
    CHECK(run(aclnnAdd, ws, ex, stream) == 0, "aclnnAdd");
    aclrtMemcpy(got, sizeof got, dout, sizeof got, ACL_MEMCPY_DEVICE_TO_HOST);
    for (int i = 0; i < 6; i++) CHECK(got[i] == a[i] + 2 * b[i], "Add element %d = %g", i, got[i]);
    /* The executor was consumed by the run: a second run is refused. */
    CHECK(aclnnAdd(NULL, 0, ex, stream) == ACLNN_ERR_PARAM_INVALID, "reused executor");
    /* Documented phase-1 errors. */
    CHECK(aclnnAddGetWorkspaceSize(ta, NULL, alpha, tout, &ws, &ex) == ACLNN_ERR_PARAM_NULLPTR, "null other");
    aclTensor *t4 = tensor2(dout, 1, 4);
    CHECK(aclnnAddGetWorkspaceSize(ta, t4, alpha, tout, &ws, &ex) == ACLNN_ERR_PARAM_INVALID, "broadcast");

    /* Mm with mat2 = W^T seen through strides: W is [2, 3] row-major, mat2 is [3, 2] with strides (1, 3). */
    float w[6] = {1, 0, -1, 2, 1, 0.5f}, mm[4];
    void *dw = upload(w, 6), *dmm = upload(NULL, 4);
    int64_t mdims[2] = {3, 2}, mstr[2] = {1, 3}, mstore[1] = {6};
    aclTensor *tw = aclCreateTensor(mdims, 2, ACL_FLOAT, mstr, 0, ACL_FORMAT_ND, mstore, 1, dw);
    aclTensor *tmm = tensor2(dmm, 2, 2);
    CHECK(aclnnMmGetWorkspaceSize(ta, tw, tmm, 0, &ws, &ex) == 0, "aclnnMmGetWorkspaceSize");
    CHECK(ws > 0, "aclnnMm reports a workspace");
    CHECK(aclSetAclOpExecutorRepeatable(ex) == 0, "repeatable");
    CHECK(run(aclnnMm, ws, ex, stream) == 0, "aclnnMm");
    CHECK(run(aclnnMm, ws, ex, stream) == 0, "aclnnMm re-run");
    aclrtMemcpy(mm, sizeof mm, dmm, sizeof mm, ACL_MEMCPY_DEVICE_TO_HOST);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            float want = 0;
            for (int p = 0; p < 3; p++) want += a[i * 3 + p] * w[j * 3 + p];
            CHECK(fabsf(mm[i * 2 + j] - want) < 1e-5f, "Mm [%d,%d] = %g, want %g", i, j, mm[i * 2 + j], want);
        }
    /* A workspace shorter than reported is refused. */
    CHECK(aclnnMm(NULL, ws, ex, stream) == ACLNN_ERR_PARAM_NULLPTR, "null workspace");
    CHECK(aclDestroyAclOpExecutor(ex) == 0, "destroy repeatable executor");

    /* RmsNorm over rows of a; rstd must be FLOAT; a wrong gamma shape is 561002. */
    float g[3] = {1, 2, 3}, y[6], rstd[2];
    void *dg = upload(g, 3), *dy = upload(NULL, 6), *dr = upload(NULL, 2);
    int64_t gd[1] = {3}, gs[1] = {1}, rd[2] = {2, 1}, rs[2] = {1, 1};
    aclTensor *tg = aclCreateTensor(gd, 1, ACL_FLOAT, gs, 0, ACL_FORMAT_ND, gd, 1, dg);
    aclTensor *ty = tensor2(dy, 2, 3);
    aclTensor *tr = aclCreateTensor(rd, 2, ACL_FLOAT, rs, 0, ACL_FORMAT_ND, rd, 2, dr);
    CHECK(aclnnRmsNormGetWorkspaceSize(ta, tg, 1e-6, ty, tr, &ws, &ex) == 0, "aclnnRmsNormGetWorkspaceSize");
    CHECK(run(aclnnRmsNorm, ws, ex, stream) == 0, "aclnnRmsNorm");
    aclrtMemcpy(y, sizeof y, dy, sizeof y, ACL_MEMCPY_DEVICE_TO_HOST);
    aclrtMemcpy(rstd, sizeof rstd, dr, sizeof rstd, ACL_MEMCPY_DEVICE_TO_HOST);
    for (int r = 0; r < 2; r++) {
        double ms = 0;
        for (int i = 0; i < 3; i++) ms += a[r * 3 + i] * a[r * 3 + i];
        double inv = 1.0 / sqrt(ms / 3 + 1e-6);
        CHECK(fabs(rstd[r] - inv) < 1e-5, "rstd[%d] = %g, want %g", r, rstd[r], inv);
        for (int i = 0; i < 3; i++)
            CHECK(fabs(y[r * 3 + i] - a[r * 3 + i] * inv * g[i]) < 1e-5, "y[%d,%d]", r, i);
    }
    aclTensor *tg2 = tensor2(dg, 1, 2);
    CHECK(aclnnRmsNormGetWorkspaceSize(ta, tg2, 1e-6, ty, tr, &ws, &ex) == ACLNN_ERR_INNER_TILING_ERROR, "gamma shape");
    CHECK(strstr(recent(), "gamma") != NULL, "message names gamma");
    aclTensor *ty16 = NULL;
    {
        int64_t d2[2] = {2, 1}, s2[2] = {1, 1};
        ty16 = aclCreateTensor(d2, 2, ACL_FLOAT16, s2, 0, ACL_FORMAT_ND, d2, 2, dr);
    }
    CHECK(aclnnRmsNormGetWorkspaceSize(ta, tg, 1e-6, ty, ty16, &ws, &ex) == ACLNN_ERR_PARAM_INVALID, "rstd dtype");
    CHECK(strstr(recent(), "rstdOut") != NULL, "message names rstdOut");

    aclTensor *all[] = {ta, tb, tout, t4, tw, tmm, tg, ty, tr, tg2, ty16};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) aclDestroyTensor(all[i]);
    aclDestroyScalar(alpha);
    void *bufs[] = {da, db, dout, dw, dmm, dg, dy, dr};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) aclrtFree(bufs[i]);
    CHECK(aclrtDestroyStream(stream) == 0, "aclrtDestroyStream");
    CHECK(aclrtResetDevice(0) == 0, "aclrtResetDevice");
    CHECK(aclFinalize() == 0, "aclFinalize");
    if (failures) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("aclnn_doc_test: all checks passed\n");
    return 0;
}
