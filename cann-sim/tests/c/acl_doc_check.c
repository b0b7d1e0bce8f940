/* A client of the ACL runtime written only from CANN's documentation (hicann/runtime docs/zh/api_ref documents,
 * the error codes of acl_base_rt.h / rt_error_codes.h as the documents list them), not from the simulator's
 * code: it declares what it uses itself, loads the runtime library named by argv[1] with dlopen, and checks
 * results and documented status codes. Run against libcann_sim.so by tests/c_program.rs; on a machine with
 * CANN it can be pointed at libascendcl.so instead (the cann_sim.h part is then skipped). */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cann_sim.h"

typedef int aclError;
typedef void *aclrtStream;
typedef void *aclrtEvent;

/* 25-01_aclError.md / acl_base_rt.h / rt_error_codes.h */
#define ACL_SUCCESS 0
#define ACL_ERROR_INVALID_PARAM 100000
#define ACL_ERROR_REPEAT_INITIALIZE 100002
#define ACL_ERROR_REPEAT_FINALIZE 100037
#define ACL_ERROR_RT_CONTEXT_NULL 107002
#define ACL_ERROR_RT_MEMORY_ALLOCATION 207001
/* 25-02_Enumerations.md */
enum { ACL_MEMCPY_HOST_TO_HOST, ACL_MEMCPY_HOST_TO_DEVICE, ACL_MEMCPY_DEVICE_TO_HOST, ACL_MEMCPY_DEVICE_TO_DEVICE };
enum { ACL_MEM_MALLOC_HUGE_FIRST = 0 };
enum { ACL_DDR_MEM = 0, ACL_HBM_MEM = 1 };
enum { ACL_EVENT_RECORDED_STATUS_NOT_READY = 0, ACL_EVENT_RECORDED_STATUS_COMPLETE = 1 };

/* Signatures as documented (02_initialization_and_deinitialization.md, 04_device_management.md,
 * 06_stream_management.md, 07_event_management.md, 11-01/11-02/11-03 memory documents,
 * 22_error_reporting_APIs.md). */
static aclError (*aclInit)(const char *);
static aclError (*aclFinalize)(void);
static aclError (*aclrtSetDevice)(int32_t);
static aclError (*aclrtResetDevice)(int32_t);
static aclError (*aclrtGetDevice)(int32_t *);
static aclError (*aclrtGetDeviceCount)(uint32_t *);
static const char *(*aclrtGetSocName)(void);
static aclError (*aclrtGetMemInfo)(int, size_t *, size_t *);
static aclError (*aclrtMalloc)(void **, size_t, int);
static aclError (*aclrtFree)(void *);
static aclError (*aclrtMallocHost)(void **, size_t);
static aclError (*aclrtFreeHost)(void *);
static aclError (*aclrtMemcpy)(void *, size_t, const void *, size_t, int);
static aclError (*aclrtMemcpyAsync)(void *, size_t, const void *, size_t, int, aclrtStream);
static aclError (*aclrtMemset)(void *, size_t, int32_t, size_t);
static aclError (*aclrtMemsetAsync)(void *, size_t, int32_t, size_t, aclrtStream);
static aclError (*aclrtCreateStream)(aclrtStream *);
static aclError (*aclrtDestroyStream)(aclrtStream);
static aclError (*aclrtSynchronizeStream)(aclrtStream);
static aclError (*aclrtSynchronizeDevice)(void);
static aclError (*aclrtCreateEvent)(aclrtEvent *);
static aclError (*aclrtDestroyEvent)(aclrtEvent);
static aclError (*aclrtRecordEvent)(aclrtEvent, aclrtStream);
static aclError (*aclrtStreamWaitEvent)(aclrtStream, aclrtEvent);
static aclError (*aclrtSynchronizeEvent)(aclrtEvent);
static aclError (*aclrtQueryEventStatus)(aclrtEvent, int *);
static aclError (*aclrtEventElapsedTime)(float *, aclrtEvent, aclrtEvent);
static const char *(*aclGetRecentErrMsg)(void);

static int checks;

#define CHECK(cond, ...)                                                                   \
  do {                                                                                     \
    checks++;                                                                              \
    if (!(cond)) {                                                                         \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                      \
      fprintf(stderr, __VA_ARGS__);                                                        \
      const char *m = aclGetRecentErrMsg ? aclGetRecentErrMsg() : NULL;                    \
      fprintf(stderr, " (recent error: %s)\n", m ? m : "none");                            \
      exit(1);                                                                             \
    }                                                                                      \
  } while (0)
#define OK(call) CHECK((call) == ACL_SUCCESS, "%s", #call)
#define LOAD(lib, name)                                                                    \
  do {                                                                                     \
    *(void **)(&name) = dlsym(lib, #name);                                                 \
    if (!name) {                                                                           \
      fprintf(stderr, "FAIL: symbol %s missing: %s\n", #name, dlerror());                  \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s /path/to/libascendcl.so-or-libcann_sim.so\n", argv[0]);
    return 2;
  }
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "FAIL: dlopen %s: %s\n", argv[1], dlerror());
    return 1;
  }
  LOAD(lib, aclInit); LOAD(lib, aclFinalize); LOAD(lib, aclrtSetDevice); LOAD(lib, aclrtResetDevice);
  LOAD(lib, aclrtGetDevice); LOAD(lib, aclrtGetDeviceCount); LOAD(lib, aclrtGetSocName);
  LOAD(lib, aclrtGetMemInfo); LOAD(lib, aclrtMalloc); LOAD(lib, aclrtFree); LOAD(lib, aclrtMallocHost);
  LOAD(lib, aclrtFreeHost); LOAD(lib, aclrtMemcpy); LOAD(lib, aclrtMemcpyAsync); LOAD(lib, aclrtMemset);
  LOAD(lib, aclrtMemsetAsync); LOAD(lib, aclrtCreateStream); LOAD(lib, aclrtDestroyStream);
  LOAD(lib, aclrtSynchronizeStream); LOAD(lib, aclrtSynchronizeDevice); LOAD(lib, aclrtCreateEvent);
  LOAD(lib, aclrtDestroyEvent); LOAD(lib, aclrtRecordEvent); LOAD(lib, aclrtStreamWaitEvent);
  LOAD(lib, aclrtSynchronizeEvent); LOAD(lib, aclrtQueryEventStatus); LOAD(lib, aclrtEventElapsedTime);
  LOAD(lib, aclGetRecentErrMsg);

  /* Initialisation: once per process. */
  OK(aclInit(NULL));
  CHECK(aclInit(NULL) == ACL_ERROR_REPEAT_INITIALIZE, "second aclInit");

  /* No device set on this thread yet: no current context. */
  void *dev = NULL;
  CHECK(aclrtMalloc(&dev, 64, ACL_MEM_MALLOC_HUGE_FIRST) == ACL_ERROR_RT_CONTEXT_NULL, "malloc without context");
  const char *msg = aclGetRecentErrMsg();
  CHECK(msg != NULL && msg[0] != 0, "a failed call leaves a message");

  OK(aclrtSetDevice(0));
  int32_t id = -1;
  uint32_t count = 0;
  OK(aclrtGetDevice(&id));
  CHECK(id == 0, "device %d", id);
  OK(aclrtGetDeviceCount(&count));
  CHECK(count >= 1, "count %u", count);
  const char *soc = aclrtGetSocName();
  CHECK(soc != NULL && strncmp(soc, "Ascend", 6) == 0, "soc %s", soc ? soc : "(null)");
  size_t free_b = 0, total_b = 0;
  OK(aclrtGetMemInfo(ACL_HBM_MEM, &free_b, &total_b));
  CHECK(total_b > 0 && free_b <= total_b, "free %zu total %zu", free_b, total_b);

  /* Device memory: 64-byte aligned start (11-01), size 0 refused. */
  enum { N = 4096 };
  void *a = NULL, *b = NULL;
  OK(aclrtMalloc(&a, N, ACL_MEM_MALLOC_HUGE_FIRST));
  OK(aclrtMalloc(&b, N, ACL_MEM_MALLOC_HUGE_FIRST));
  CHECK(((uintptr_t)a % 64) == 0 && ((uintptr_t)b % 64) == 0, "alignment %p %p", a, b);
  void *zero = NULL;
  CHECK(aclrtMalloc(&zero, 0, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS, "size 0 must fail");
  CHECK(aclrtMalloc(&zero, total_b + 1, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS, "above capacity must fail");

  /* Synchronous copies (11-03): H2D, D2D, D2H; count above destMax refused. */
  unsigned char host[N], back[N];
  for (int i = 0; i < N; i++) host[i] = (unsigned char)(i * 13 + 1);
  OK(aclrtMemcpy(a, N, host, N, ACL_MEMCPY_HOST_TO_DEVICE));
  OK(aclrtMemcpy(b, N, a, N, ACL_MEMCPY_DEVICE_TO_DEVICE));
  memset(back, 0, N);
  OK(aclrtMemcpy(back, N, b, N, ACL_MEMCPY_DEVICE_TO_HOST));
  CHECK(memcmp(back, host, N) == 0, "round trip");
  CHECK(aclrtMemcpy(a, N - 1, host, N, ACL_MEMCPY_HOST_TO_DEVICE) == ACL_ERROR_INVALID_PARAM, "count > destMax");
  OK(aclrtMemset(a, N, 0x5a, 100));
  OK(aclrtMemcpy(back, N, a, N, ACL_MEMCPY_DEVICE_TO_HOST));
  CHECK(back[0] == 0x5a && back[99] == 0x5a && back[100] == host[100], "memset");
  CHECK(aclrtMemset(a, 10, 0, 11) == ACL_ERROR_INVALID_PARAM, "count > maxCount");

  /* Streams and events (06, 07): a writes, b waits for a's event then copies; pinned host memory. */
  aclrtStream s1 = NULL, s2 = NULL;
  aclrtEvent e0 = NULL, e1 = NULL;
  void *pinned = NULL;
  OK(aclrtCreateStream(&s1));
  OK(aclrtCreateStream(&s2));
  OK(aclrtCreateEvent(&e0));
  OK(aclrtCreateEvent(&e1));
  OK(aclrtMallocHost(&pinned, N));
  memset(pinned, 0, N);
  OK(aclrtRecordEvent(e0, s1));
  OK(aclrtMemsetAsync(a, N, 0x11, N, s1));
  OK(aclrtMemcpyAsync(a, N, host, 256, ACL_MEMCPY_HOST_TO_DEVICE, s1));
  OK(aclrtRecordEvent(e1, s1));
  OK(aclrtStreamWaitEvent(s2, e1));
  OK(aclrtMemcpyAsync(b, N, a, N, ACL_MEMCPY_DEVICE_TO_DEVICE, s2));
  OK(aclrtMemcpyAsync(pinned, N, b, N, ACL_MEMCPY_DEVICE_TO_HOST, s2));
  OK(aclrtSynchronizeStream(s2));
  const unsigned char *p = pinned;
  CHECK(memcmp(p, host, 256) == 0 && p[256] == 0x11 && p[N - 1] == 0x11, "ordered through the event");
  OK(aclrtSynchronizeEvent(e1));
  int st = -1;
  OK(aclrtQueryEventStatus(e1, &st));
  CHECK(st == ACL_EVENT_RECORDED_STATUS_COMPLETE, "event status %d", st);
  float ms = -1;
  OK(aclrtEventElapsedTime(&ms, e0, e1));
  CHECK(ms >= 0.0f, "elapsed %f", ms);
  OK(aclrtSynchronizeDevice());

  /* Freeing twice is an error. */
  OK(aclrtFree(b));
  CHECK(aclrtFree(b) != ACL_SUCCESS, "double free");
  msg = aclGetRecentErrMsg();
  CHECK(msg != NULL && msg[0] != 0, "double free has a message");

  /* The simulator's own counters, when present (cann_sim.h). */
  int (*counters)(char *, size_t, size_t *) = (int (*)(char *, size_t, size_t *))dlsym(lib, "cannSimCounters");
  if (counters) {
    size_t need = 0;
    CHECK(counters(NULL, 0, &need) == ACL_ERROR_INVALID_PARAM && need > 2, "size query");
    char *json = malloc(need);
    CHECK(counters(json, need, &need) == 0, "counters");
    CHECK(strstr(json, "\"d2h\"") != NULL && strstr(json, "\"streams\"") != NULL, "counters JSON: %s", json);
    free(json);
  }

  OK(aclrtDestroyEvent(e0));
  OK(aclrtDestroyEvent(e1));
  OK(aclrtDestroyStream(s1));
  OK(aclrtDestroyStream(s2));
  OK(aclrtFreeHost(pinned));
  OK(aclrtFree(a));
  OK(aclrtResetDevice(0));
  OK(aclFinalize());
  CHECK(aclFinalize() == ACL_ERROR_REPEAT_FINALIZE, "second aclFinalize");
  printf("acl_doc_check: %d checks passed against %s\n", checks, argv[1]);
  return 0;
}
