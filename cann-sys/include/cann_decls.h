/*
 * cann_decls.h: the subset of the CANN C API that idefics3 calls, declared by us.
 *
 * Every declaration below was written from the signature that CANN documents for it; the comment above
 * each group names the document. No text of Huawei's headers is reproduced here.
 *
 * Release followed: CANN 9.1.0 (the open-source tree: hicann/runtime 9.1.0 with ACL 1.17.0,
 * hicann/opbase, hicann/ops-nn 9.1.0, hicann/ops-math, hicann/ops-transformer 8.5.0), whose ACL runtime
 * headers are the ones shipped in the torch-npu 2.14.0 wheel (ACL_MAJOR/MINOR/PATCH 1.17.0).
 * Document paths below are relative to those repositories.
 * Checked by scripts/cann_conformance.sh against torch-npu 2.14.0's ACL headers; the nnopbase and aclnn
 * declarations were also compiled (C++) against the public op_api headers of hicann/opbase, ops-nn
 * (e5c3fa93), ops-math (c4193324) and ops-transformer (c29bc106) of 2026-08 laid out as a toolkit
 * include tree, except RmsNorm and SwiGlu, whose headers are generated at build time and were checked
 * against their documents only.
 *
 * Valid C11 and C++. It may be combined with Huawei's own headers in one translation unit as long as
 * those come FIRST: the enumerations and constants that they also define are skipped when their
 * include guards are seen (their values are then checked against ours by scripts/cann_conformance.sh),
 * while the handle typedefs and every function prototype are always declared, so that a declaration that
 * disagrees with the real one is a compile error.
 *
 * CANN_DECLS_PFN: when defined (bindgen defines it), CANN_PFN(f) also declares the pointer type
 * `cann_pfn_f` of each function, from which cann-sys builds its run-time loader.
 */
#ifndef IDEFICS3_CANN_DECLS_H
#define IDEFICS3_CANN_DECLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef CANN_DECLS_PFN
#define CANN_PFN(f) typedef __typeof__(f) *cann_pfn_##f;
#else
#define CANN_PFN(f)
#endif

/* ------------------------------------------------------------------------------------------------
 * ACL handles and status (runtime include/external/acl/acl_base_rt.h, docs/zh/api_ref/01_overview.md).
 * Identical typedefs may be repeated in C11 and C++, so these are never skipped.
 */
typedef int aclError;
typedef void *aclrtStream;
typedef void *aclrtEvent;
typedef void *aclrtContext;
/* Kernel binaries (docs/zh/api_ref/14_Kernel_loading_and_execution.md). */
typedef void *aclrtBinHandle;
typedef void *aclrtFuncHandle;
typedef void *aclrtArgsHandle;
typedef void *aclrtParamHandle;
/* Only passed as NULL by us, so their members are not declared. */
typedef struct aclrtBinaryLoadOptions aclrtBinaryLoadOptions;
typedef struct aclrtLaunchKernelCfg aclrtLaunchKernelCfg;

#if !defined(INC_EXTERNAL_ACL_ACL_BASE_H_) && !defined(INC_EXTERNAL_ACL_ACL_BASE_RT_H_)
/* Status codes (docs/zh/api_ref/01_overview.md, "return codes"). */
static const int ACL_SUCCESS = 0;
static const int ACL_ERROR_NONE = 0;
static const int ACL_ERROR_INVALID_PARAM = 100000;
static const int ACL_ERROR_UNINITIALIZE = 100001;
static const int ACL_ERROR_REPEAT_INITIALIZE = 100002;
static const int ACL_ERROR_INVALID_FILE = 100003;
static const int ACL_ERROR_REPEAT_FINALIZE = 100037;
static const int ACL_ERROR_BAD_ALLOC = 200000;
static const int ACL_ERROR_API_NOT_SUPPORT = 200001;
static const int ACL_ERROR_INVALID_DEVICE = 200002;
static const int ACL_ERROR_MEMORY_ADDRESS_UNALIGNED = 200003;
static const int ACL_ERROR_RESOURCE_NOT_MATCH = 200004;
static const int ACL_ERROR_INVALID_RESOURCE_HANDLE = 200005;
static const int ACL_ERROR_FEATURE_UNSUPPORTED = 200006;
static const int ACL_ERROR_STORAGE_OVER_LIMIT = 300000;
static const int ACL_ERROR_INTERNAL_ERROR = 500000;
static const int ACL_ERROR_FAILURE = 500001;
static const int ACL_ERROR_RT_FAILURE = 500003;
static const int ACL_ERROR_DRV_FAILURE = 500004;

/* Element types of tensors (docs: aclDataType in 01_overview.md; opbase aclCreateTensor docs). */
typedef enum {
    ACL_DT_UNDEFINED = -1,
    ACL_FLOAT = 0,
    ACL_FLOAT16 = 1,
    ACL_INT8 = 2,
    ACL_INT32 = 3,
    ACL_UINT8 = 4,
    ACL_INT16 = 6,
    ACL_UINT16 = 7,
    ACL_UINT32 = 8,
    ACL_INT64 = 9,
    ACL_UINT64 = 10,
    ACL_DOUBLE = 11,
    ACL_BOOL = 12,
    ACL_BF16 = 27
} aclDataType;

/* Storage formats (docs: aclFormat in 01_overview.md). */
typedef enum {
    ACL_FORMAT_UNDEFINED = -1,
    ACL_FORMAT_NCHW = 0,
    ACL_FORMAT_NHWC = 1,
    ACL_FORMAT_ND = 2,
    ACL_FORMAT_NC1HWC0 = 3,
    ACL_FORMAT_FRACTAL_Z = 4,
    ACL_FORMAT_FRACTAL_NZ = 29
} aclFormat;
#endif /* base types */

#if !defined(INC_EXTERNAL_ACL_ACL_RT_H_)
/* docs/zh/api_ref/11-03_memory_copy_and_set.md */
typedef enum aclrtMemcpyKind {
    ACL_MEMCPY_HOST_TO_HOST = 0,
    ACL_MEMCPY_HOST_TO_DEVICE = 1,
    ACL_MEMCPY_DEVICE_TO_HOST = 2,
    ACL_MEMCPY_DEVICE_TO_DEVICE = 3,
    ACL_MEMCPY_DEFAULT = 4
} aclrtMemcpyKind;

/* docs/zh/api_ref/11-01_device_memory_malloc_and_free.md */
typedef enum aclrtMemMallocPolicy {
    ACL_MEM_MALLOC_HUGE_FIRST = 0,
    ACL_MEM_MALLOC_HUGE_ONLY = 1,
    ACL_MEM_MALLOC_NORMAL_ONLY = 2
} aclrtMemMallocPolicy;

/* aclrtGetMemInfo's attribute (docs/zh/api_ref/11-01_device_memory_malloc_and_free.md). */
typedef enum aclrtMemAttr {
    ACL_DDR_MEM = 0,
    ACL_HBM_MEM = 1,
    ACL_DDR_MEM_HUGE = 2,
    ACL_DDR_MEM_NORMAL = 3,
    ACL_HBM_MEM_HUGE = 4,
    ACL_HBM_MEM_NORMAL = 5
} aclrtMemAttr;

/* aclrtQueryEventStatus's answer (docs/zh/api_ref/07_event_management.md). */
typedef enum aclrtEventRecordedStatus {
    ACL_EVENT_RECORDED_STATUS_NOT_READY = 0,
    ACL_EVENT_RECORDED_STATUS_COMPLETE = 1
} aclrtEventRecordedStatus;

/* aclrtCreateEventWithFlag flags (docs/zh/api_ref/07_event_management.md). */
#define ACL_EVENT_SYNC 0x1U
#define ACL_EVENT_TIME_LINE 0x8U
/* aclrtCreateStreamWithConfig flags (docs/zh/api_ref/06_stream_management.md). */
#define ACL_STREAM_FAST_LAUNCH 0x1U
#define ACL_STREAM_FAST_SYNC 0x2U
#endif /* runtime types */

#if !defined(__INC_EXTERNEL_RT_ERROR_CODES_H__)
/* Runtime status codes (runtime include/external/acl/error_codes/rt_error_codes.h,
 * docs/zh/api_ref/01_overview.md). */
#define ACL_ERROR_RT_PARAM_INVALID 107000
#define ACL_ERROR_RT_INVALID_DEVICEID 107001
#define ACL_ERROR_RT_CONTEXT_NULL 107002
#define ACL_ERROR_RT_STREAM_CONTEXT 107003
#define ACL_ERROR_RT_EVENT_TIMESTAMP_INVALID 107006
#define ACL_ERROR_RT_ADDR_UNALIGNED 107008
#define ACL_ERROR_RT_FILE_OPEN 107009
#define ACL_ERROR_RT_INVALID_MEMORY_TYPE 107016
#define ACL_ERROR_RT_INVALID_HANDLE 107017
#define ACL_ERROR_RT_WAIT_TIMEOUT 107019
#define ACL_ERROR_RT_SYMBOL_NOT_FOUND 107042
#define ACL_ERROR_RT_FEATURE_NOT_SUPPORT 207000
#define ACL_ERROR_RT_MEMORY_ALLOCATION 207001
#define ACL_ERROR_RT_MEMORY_FREE 207002
#define ACL_ERROR_RT_NO_DEVICE 207004
#define ACL_ERROR_RT_DEVICE_OOM 207018
#define ACL_ERROR_RT_INTERNAL_ERROR 507000
#define ACL_ERROR_RT_STREAM_NOT_COMPLETE 507004
#define ACL_ERROR_RT_EVENT_NOT_COMPLETE 507006
#define ACL_ERROR_RT_KERNEL_LOOKUP 507027
#define ACL_ERROR_RT_AICORE_EXCEPTION 507015
#define ACL_ERROR_RT_VECTOR_CORE_EXCEPTION 507035
#define ACL_ERROR_RT_STREAM_SYNC_TIMEOUT 507046
#define ACL_ERROR_RT_EVENT_SYNC_TIMEOUT 507047
#define ACL_ERROR_RT_COPY_DATA 507052
#define ACL_ERROR_RT_DEVICE_MEM_ERROR 507053
#endif /* runtime codes */

/* ------------------------------------------------------------------------------------------------
 * ACL runtime functions (runtime include/external/acl/acl.h, acl_rt.h, acl_base_rt.h).
 */

/* docs/zh/api_ref/02_initialization_and_deinitialization.md */
aclError aclInit(const char *configPath);
CANN_PFN(aclInit)
aclError aclFinalize(void);
CANN_PFN(aclFinalize)

/* docs/zh/api_ref/22_error_reporting_APIs.md: the calling thread's last error text, NULL if none. */
const char *aclGetRecentErrMsg(void);
CANN_PFN(aclGetRecentErrMsg)

/* docs/zh/api_ref/04_device_management.md */
aclError aclrtSetDevice(int32_t deviceId);
CANN_PFN(aclrtSetDevice)
aclError aclrtResetDevice(int32_t deviceId);
CANN_PFN(aclrtResetDevice)
aclError aclrtGetDevice(int32_t *deviceId);
CANN_PFN(aclrtGetDevice)
aclError aclrtGetDeviceCount(uint32_t *count);
CANN_PFN(aclrtGetDeviceCount)
aclError aclrtSynchronizeDevice(void);
CANN_PFN(aclrtSynchronizeDevice)
const char *aclrtGetSocName(void);
CANN_PFN(aclrtGetSocName)

/* docs/zh/api_ref/05_context_management.md */
aclError aclrtCreateContext(aclrtContext *context, int32_t deviceId);
CANN_PFN(aclrtCreateContext)
aclError aclrtDestroyContext(aclrtContext context);
CANN_PFN(aclrtDestroyContext)
aclError aclrtSetCurrentContext(aclrtContext context);
CANN_PFN(aclrtSetCurrentContext)
aclError aclrtGetCurrentContext(aclrtContext *context);
CANN_PFN(aclrtGetCurrentContext)

/* docs/zh/api_ref/06_stream_management.md (timeout in milliseconds, -1 waits for ever). */
aclError aclrtCreateStream(aclrtStream *stream);
CANN_PFN(aclrtCreateStream)
aclError aclrtCreateStreamWithConfig(aclrtStream *stream, uint32_t priority, uint32_t flag);
CANN_PFN(aclrtCreateStreamWithConfig)
aclError aclrtSynchronizeStream(aclrtStream stream);
CANN_PFN(aclrtSynchronizeStream)
aclError aclrtSynchronizeStreamWithTimeout(aclrtStream stream, int32_t timeout);
CANN_PFN(aclrtSynchronizeStreamWithTimeout)
aclError aclrtDestroyStream(aclrtStream stream);
CANN_PFN(aclrtDestroyStream)
aclError aclrtStreamWaitEvent(aclrtStream stream, aclrtEvent event);
CANN_PFN(aclrtStreamWaitEvent)

/* docs/zh/api_ref/07_event_management.md (elapsed time in milliseconds). */
aclError aclrtCreateEvent(aclrtEvent *event);
CANN_PFN(aclrtCreateEvent)
aclError aclrtCreateEventWithFlag(aclrtEvent *event, uint32_t flag);
CANN_PFN(aclrtCreateEventWithFlag)
aclError aclrtRecordEvent(aclrtEvent event, aclrtStream stream);
CANN_PFN(aclrtRecordEvent)
aclError aclrtSynchronizeEvent(aclrtEvent event);
CANN_PFN(aclrtSynchronizeEvent)
aclError aclrtQueryEventStatus(aclrtEvent event, aclrtEventRecordedStatus *status);
CANN_PFN(aclrtQueryEventStatus)
aclError aclrtEventElapsedTime(float *ms, aclrtEvent startEvent, aclrtEvent endEvent);
CANN_PFN(aclrtEventElapsedTime)
aclError aclrtDestroyEvent(aclrtEvent event);
CANN_PFN(aclrtDestroyEvent)

/* docs/zh/api_ref/11-01_device_memory_malloc_and_free.md */
aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy policy);
CANN_PFN(aclrtMalloc)
aclError aclrtMallocAlign32(void **devPtr, size_t size, aclrtMemMallocPolicy policy);
CANN_PFN(aclrtMallocAlign32)
aclError aclrtFree(void *devPtr);
CANN_PFN(aclrtFree)
aclError aclrtGetMemInfo(aclrtMemAttr attr, size_t *free, size_t *total);
CANN_PFN(aclrtGetMemInfo)

/* docs/zh/api_ref/11-02_host_memory_management.md (page-locked host memory). */
aclError aclrtMallocHost(void **hostPtr, size_t size);
CANN_PFN(aclrtMallocHost)
aclError aclrtFreeHost(void *hostPtr);
CANN_PFN(aclrtFreeHost)

/* docs/zh/api_ref/11-03_memory_copy_and_set.md (destMax/maxCount: bytes available at the destination). */
aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind);
CANN_PFN(aclrtMemcpy)
aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                          aclrtStream stream);
CANN_PFN(aclrtMemcpyAsync)
aclError aclrtMemset(void *devPtr, size_t maxCount, int32_t value, size_t count);
CANN_PFN(aclrtMemset)
aclError aclrtMemsetAsync(void *devPtr, size_t maxCount, int32_t value, size_t count, aclrtStream stream);
CANN_PFN(aclrtMemsetAsync)

/* docs/zh/api_ref/14_Kernel_loading_and_execution.md; usage in example/2_advanced_features/kernel/. */
aclError aclrtBinaryLoadFromFile(const char *binPath, aclrtBinaryLoadOptions *options, aclrtBinHandle *binHandle);
CANN_PFN(aclrtBinaryLoadFromFile)
aclError aclrtBinaryGetFunction(const aclrtBinHandle binHandle, const char *kernelName, aclrtFuncHandle *funcHandle);
CANN_PFN(aclrtBinaryGetFunction)
aclError aclrtBinaryUnLoad(aclrtBinHandle binHandle);
CANN_PFN(aclrtBinaryUnLoad)
aclError aclrtKernelArgsInit(aclrtFuncHandle funcHandle, aclrtArgsHandle *argsHandle);
CANN_PFN(aclrtKernelArgsInit)
aclError aclrtKernelArgsAppend(aclrtArgsHandle argsHandle, void *param, size_t paramSize,
                               aclrtParamHandle *paramHandle);
CANN_PFN(aclrtKernelArgsAppend)
aclError aclrtKernelArgsFinalize(aclrtArgsHandle argsHandle);
CANN_PFN(aclrtKernelArgsFinalize)
aclError aclrtLaunchKernelWithConfig(aclrtFuncHandle funcHandle, uint32_t numBlocks, aclrtStream stream,
                                     aclrtLaunchKernelCfg *cfg, aclrtArgsHandle argsHandle, void *reserve);
CANN_PFN(aclrtLaunchKernelWithConfig)

/* ------------------------------------------------------------------------------------------------
 * nnopbase: tensor descriptors and executors (opbase include/nnopbase/aclnn/acl_meta.h and its docs).
 */
typedef struct aclOpExecutor aclOpExecutor;
typedef struct aclTensor aclTensor;
typedef struct aclScalar aclScalar;
typedef struct aclIntArray aclIntArray;
typedef struct aclFloatArray aclFloatArray;
typedef struct aclBoolArray aclBoolArray;
typedef struct aclTensorList aclTensorList;
typedef int32_t aclnnStatus;

#if !defined(OP_API_OP_API_COMMON_INC_OPDEV_OP_ERRNO_H)
/* aclnn status codes (opbase include/nnopbase/opdev/op_errno.h; "aclnn return codes" in each op doc). */
#define ACLNN_SUCCESS 0
#define ACLNN_ERR_PARAM_NULLPTR 161001
#define ACLNN_ERR_PARAM_INVALID 161002
#define ACLNN_ERR_RUNTIME_ERROR 361001
#define ACLNN_ERR_INNER 561000
#define ACLNN_ERR_INNER_INFERSHAPE_ERROR 561001
#define ACLNN_ERR_INNER_TILING_ERROR 561002
#define ACLNN_ERR_INNER_FIND_KERNEL_ERROR 561003
#define ACLNN_ERR_INNER_CREATE_EXECUTOR 561101
#define ACLNN_ERR_INNER_NOT_TRANS_EXECUTOR 561102
#define ACLNN_ERR_INNER_NULLPTR 561103
#endif /* aclnn codes */

/* viewDims/stride (in elements)/offset (in elements) describe the view; storageDims the allocation. */
aclTensor *aclCreateTensor(const int64_t *viewDims, uint64_t viewDimsNum, aclDataType dataType,
                           const int64_t *stride, int64_t offset, aclFormat format, const int64_t *storageDims,
                           uint64_t storageDimsNum, void *tensorData);
CANN_PFN(aclCreateTensor)
aclScalar *aclCreateScalar(void *value, aclDataType dataType);
CANN_PFN(aclCreateScalar)
aclIntArray *aclCreateIntArray(const int64_t *value, uint64_t size);
CANN_PFN(aclCreateIntArray)
aclFloatArray *aclCreateFloatArray(const float *value, uint64_t size);
CANN_PFN(aclCreateFloatArray)
aclBoolArray *aclCreateBoolArray(const bool *value, uint64_t size);
CANN_PFN(aclCreateBoolArray)
aclTensorList *aclCreateTensorList(const aclTensor *const *value, uint64_t size);
CANN_PFN(aclCreateTensorList)
aclnnStatus aclDestroyTensor(const aclTensor *tensor);
CANN_PFN(aclDestroyTensor)
aclnnStatus aclDestroyScalar(const aclScalar *scalar);
CANN_PFN(aclDestroyScalar)
aclnnStatus aclDestroyIntArray(const aclIntArray *array);
CANN_PFN(aclDestroyIntArray)
aclnnStatus aclDestroyFloatArray(const aclFloatArray *array);
CANN_PFN(aclDestroyFloatArray)
aclnnStatus aclDestroyBoolArray(const aclBoolArray *array);
CANN_PFN(aclDestroyBoolArray)
/* Destroys the list and the tensors in it. */
aclnnStatus aclDestroyTensorList(const aclTensorList *array);
CANN_PFN(aclDestroyTensorList)
/* A repeatable executor survives phase 2, may be re-run, and is freed by aclDestroyAclOpExecutor. */
aclnnStatus aclSetAclOpExecutorRepeatable(aclOpExecutor *executor);
CANN_PFN(aclSetAclOpExecutorRepeatable)
aclnnStatus aclDestroyAclOpExecutor(aclOpExecutor *executor);
CANN_PFN(aclDestroyAclOpExecutor)
/* Rebind the device address of input/output tensor `index` of a repeatable executor. */
aclnnStatus aclSetInputTensorAddr(aclOpExecutor *executor, const size_t index, aclTensor *tensor, void *addr);
CANN_PFN(aclSetInputTensorAddr)
aclnnStatus aclSetOutputTensorAddr(aclOpExecutor *executor, const size_t index, aclTensor *tensor, void *addr);
CANN_PFN(aclSetOutputTensorAddr)

/* ------------------------------------------------------------------------------------------------
 * aclnn operators. Each is a pair: <Op>GetWorkspaceSize(args..., &workspaceSize, &executor) validates
 * and plans; <Op>(workspace, workspaceSize, executor, stream) enqueues the work.
 */
#define CANN_ACLNN_RUN(op)                                                                          \
    aclnnStatus op(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream); \
    CANN_PFN(op)

/* ops-nn matmul/mat_mul_v3/docs/aclnnMm.md (cubeMathType 0 KEEP_DTYPE, 1 ALLOW_FP32_DOWN_PRECISION,
 * 2 USE_FP16, 3 USE_HF32). */
aclnnStatus aclnnMmGetWorkspaceSize(const aclTensor *self, const aclTensor *mat2, aclTensor *out, int8_t cubeMathType,
                                    uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnMmGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnMm)
/* ops-nn matmul/mat_mul_v3/docs/aclnnMatmul.md */
aclnnStatus aclnnMatmulGetWorkspaceSize(const aclTensor *self, const aclTensor *mat2, aclTensor *out,
                                        int8_t cubeMathType, uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnMatmulGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnMatmul)

/* ops-math math/add/docs/aclnnAdd&aclnnInplaceAdd.md (out = self + alpha * other). */
aclnnStatus aclnnAddGetWorkspaceSize(const aclTensor *self, const aclTensor *other, const aclScalar *alpha,
                                     aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnAddGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnAdd)
aclnnStatus aclnnInplaceAddGetWorkspaceSize(const aclTensor *selfRef, const aclTensor *other,
                                            const aclScalar *alpha, uint64_t *workspaceSize,
                                            aclOpExecutor **executor);
CANN_PFN(aclnnInplaceAddGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnInplaceAdd)

/* ops-math math/mul/docs/aclnnMul&aclnnInplaceMul.md */
aclnnStatus aclnnMulGetWorkspaceSize(const aclTensor *self, const aclTensor *other, aclTensor *out,
                                     uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnMulGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnMul)

/* ops-nn norm/rms_norm/docs/aclnnRmsNorm.md (rstdOut is float32 whatever x's dtype). */
aclnnStatus aclnnRmsNormGetWorkspaceSize(const aclTensor *x, const aclTensor *gamma, double epsilon,
                                         const aclTensor *yOut, const aclTensor *rstdOut, uint64_t *workspaceSize,
                                         aclOpExecutor **executor);
CANN_PFN(aclnnRmsNormGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnRmsNorm)

/* ops-nn norm/layer_norm_v4/docs/aclnnLayerNorm&aclnnLayerNormWithImplMode.md */
aclnnStatus aclnnLayerNormGetWorkspaceSize(const aclTensor *input, const aclIntArray *normalizedShape,
                                           const aclTensor *weightOptional, const aclTensor *biasOptional,
                                           double eps, aclTensor *out, aclTensor *meanOutOptional,
                                           aclTensor *rstdOutOptional, uint64_t *workspaceSize,
                                           aclOpExecutor **executor);
CANN_PFN(aclnnLayerNormGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnLayerNorm)

/* ops-nn activation/gelu_v2/docs/aclnnGeluV2.md (approximate: 0 none, 1 tanh). */
aclnnStatus aclnnGeluV2GetWorkspaceSize(const aclTensor *x, int64_t approximate, aclTensor *y,
                                        uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnGeluV2GetWorkspaceSize)
CANN_ACLNN_RUN(aclnnGeluV2)

/* ops-nn activation/swish/docs/aclnnSilu.md */
aclnnStatus aclnnSiluGetWorkspaceSize(const aclTensor *self, aclTensor *out, uint64_t *workspaceSize,
                                      aclOpExecutor **executor);
CANN_PFN(aclnnSiluGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnSilu)

/* ops-nn activation/swi_glu/docs/aclnnSwiGlu.md (x split in halves along dim: silu(first) * second). */
aclnnStatus aclnnSwiGluGetWorkspaceSize(const aclTensor *x, int64_t dim, const aclTensor *out,
                                        uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnSwiGluGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnSwiGlu)

/* ops-transformer posembedding/rotary_position_embedding/docs/aclnnRotaryPositionEmbedding.md
 * (mode 0 half, 1 interleave). */
aclnnStatus aclnnRotaryPositionEmbeddingGetWorkspaceSize(const aclTensor *x, const aclTensor *cos,
                                                         const aclTensor *sin, int64_t mode, aclTensor *out,
                                                         uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnRotaryPositionEmbeddingGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnRotaryPositionEmbedding)

/* ops-transformer attention/flash_attention_score/docs/aclnnFlashAttentionScore.md */
aclnnStatus aclnnFlashAttentionScoreGetWorkspaceSize(
    const aclTensor *query, const aclTensor *key, const aclTensor *value, const aclTensor *realShiftOptional,
    const aclTensor *dropMaskOptional, const aclTensor *paddingMaskOptional, const aclTensor *attenMaskOptional,
    const aclIntArray *prefixOptional, double scaleValue, double keepProb, int64_t preTokens, int64_t nextTokens,
    int64_t headNum, char *inputLayout, int64_t innerPrecise, int64_t sparseMode, const aclTensor *softmaxMaxOut,
    const aclTensor *softmaxSumOut, const aclTensor *softmaxOutOut, const aclTensor *attentionOutOut,
    uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnFlashAttentionScoreGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnFlashAttentionScore)

/* ops-transformer attention/fused_infer_attention_score/docs/aclnnFusedInferAttentionScoreV2.md */
aclnnStatus aclnnFusedInferAttentionScoreV2GetWorkspaceSize(
    const aclTensor *query, const aclTensorList *key, const aclTensorList *value, const aclTensor *pseShiftOptional,
    const aclTensor *attenMaskOptional, const aclIntArray *actualSeqLengthsOptional,
    const aclIntArray *actualSeqLengthsKvOptional, const aclTensor *deqScale1Optional,
    const aclTensor *quantScale1Optional, const aclTensor *deqScale2Optional, const aclTensor *quantScale2Optional,
    const aclTensor *quantOffset2Optional, const aclTensor *antiquantScaleOptional,
    const aclTensor *antiquantOffsetOptional, const aclTensor *blockTableOptional,
    const aclTensor *queryPaddingSizeOptional, const aclTensor *kvPaddingSizeOptional,
    const aclTensor *keyAntiquantScaleOptional, const aclTensor *keyAntiquantOffsetOptional,
    const aclTensor *valueAntiquantScaleOptional, const aclTensor *valueAntiquantOffsetOptional,
    const aclTensor *keySharedPrefixOptional, const aclTensor *valueSharedPrefixOptional,
    const aclIntArray *actualSharedPrefixLenOptional, int64_t numHeads, double scaleValue, int64_t preTokens,
    int64_t nextTokens, char *inputLayout, int64_t numKeyValueHeads, int64_t sparseMode, int64_t innerPrecise,
    int64_t blockSize, int64_t antiquantMode, bool softmaxLseFlag, int64_t keyAntiquantMode,
    int64_t valueAntiquantMode, const aclTensor *attentionOut, const aclTensor *softmaxLse,
    uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnFusedInferAttentionScoreV2GetWorkspaceSize)
CANN_ACLNN_RUN(aclnnFusedInferAttentionScoreV2)

/* ops-nn index/embedding/docs/aclnnEmbedding.md */
aclnnStatus aclnnEmbeddingGetWorkspaceSize(const aclTensor *weight, const aclTensor *indices, const aclTensor *out,
                                           uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnEmbeddingGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnEmbedding)

/* ops-nn index/gather_v2/docs/aclnnIndexSelect.md */
aclnnStatus aclnnIndexSelectGetWorkspaceSize(const aclTensor *self, int64_t dim, const aclTensor *index,
                                             aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnIndexSelectGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnIndexSelect)

/* ops-nn index/scatter_update/docs/aclnnIndexCopy&aclnnInplaceIndexCopy.md (rows of source written to
 * selfRef at index along dim). */
aclnnStatus aclnnInplaceIndexCopyGetWorkspaceSize(aclTensor *selfRef, int64_t dim, const aclTensor *index,
                                                  const aclTensor *source, uint64_t *workspaceSize,
                                                  aclOpExecutor **executor);
CANN_PFN(aclnnInplaceIndexCopyGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnInplaceIndexCopy)

/* ops-math conversion/transpose/docs/aclnnPermute.md */
aclnnStatus aclnnPermuteGetWorkspaceSize(const aclTensor *self, const aclIntArray *dims, aclTensor *out,
                                         uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnPermuteGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnPermute)

/* ops-math math/cast/docs/aclnnCast.md */
aclnnStatus aclnnCastGetWorkspaceSize(const aclTensor *self, const aclDataType dtype, aclTensor *out,
                                      uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnCastGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnCast)

/* ops-math math/arg_max_v2/docs/aclnnArgMax.md (out is int64). */
aclnnStatus aclnnArgMaxGetWorkspaceSize(const aclTensor *self, int64_t dim, bool keepdim, aclTensor *out,
                                        uint64_t *workspaceSize, aclOpExecutor **executor);
CANN_PFN(aclnnArgMaxGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnArgMax)

/* ops-math conversion/view_copy/docs/aclnnInplaceCopy.md (selfRef = src, with dtype conversion and
 * broadcasting; either may be a strided view). */
aclnnStatus aclnnInplaceCopyGetWorkspaceSize(aclTensor *selfRef, const aclTensor *src, uint64_t *workspaceSize,
                                             aclOpExecutor **executor);
CANN_PFN(aclnnInplaceCopyGetWorkspaceSize)
CANN_ACLNN_RUN(aclnnInplaceCopy)

#undef CANN_ACLNN_RUN

#ifdef __cplusplus
}
#endif

#endif /* IDEFICS3_CANN_DECLS_H */
