// Deliberately broken kernels, one per runtime check; checks_test.cpp launches each and expects the
// message naming the fault. Every kernel takes (GM_ADDR x, GM_ADDR y): x holds 64 floats, y 64 floats.
#include "kernel_operator.h"

using namespace AscendC;

// Buffers beyond capacity: 200 KiB asked of the 192 KiB UB.
extern "C" __global__ __aicore__ void ub_overflow(GM_ADDR x, GM_ADDR y) {
  TPipe pipe;
  TQue<TPosition::VECIN, 2> q;
  pipe.InitBuffer(q, 2, 100 * 1024);
}

// A copy the hardware would round down: 10 floats = 40 bytes.
extern "C" __global__ __aicore__ void copy_not_32B(GM_ADDR x, GM_ADDR y) {
  TPipe pipe;
  TBuf<TPosition::VECCALC> b;
  pipe.InitBuffer(b, 256);
  GlobalTensor<float> g;
  g.SetGlobalBuffer((__gm__ float *)x, 64);
  DataCopy(b.Get<float>(), g, 10);
}

// A misaligned local address: element 3 of a float tensor is 12 bytes in.
extern "C" __global__ __aicore__ void misaligned_ub(GM_ADDR x, GM_ADDR y) {
  TPipe pipe;
  TBuf<TPosition::VECCALC> b;
  pipe.InitBuffer(b, 512);
  GlobalTensor<float> g;
  g.SetGlobalBuffer((__gm__ float *)x, 64);
  DataCopy(b.Get<float>()[3], g, 8);
}

// Out-of-bounds local access.
extern "C" __global__ __aicore__ void local_oob(GM_ADDR x, GM_ADDR y) {
  TPipe pipe;
  TBuf<TPosition::VECCALC> b;
  pipe.InitBuffer(b, 64);
  LocalTensor<float> t = b.Get<float>();
  Duplicate(t, 1.0f, 32);
}

// Out-of-bounds global access past the end of the allocation (no size given to the GlobalTensor).
extern "C" __global__ __aicore__ void gm_oob(GM_ADDR x, GM_ADDR y) {
  TPipe pipe;
  TBuf<TPosition::VECCALC> b;
  pipe.InitBuffer(b, 1024);
  GlobalTensor<float> g;
  g.SetGlobalBuffer((__gm__ float *)x);
  DataCopy(b.Get<float>(), g[8], 64);
}

// Access beyond the size declared with SetGlobalBuffer.
extern "C" __global__ __aicore__ void gm_beyond_size(GM_ADDR x, GM_ADDR y) {
  GlobalTensor<float> g;
  g.SetGlobalBuffer((__gm__ float *)x, 16);
  g.SetValue(16, 1.0f);
}

// A tensor used before AllocTensor gave it a buffer.
extern "C" __global__ __aicore__ void use_before_alloc(GM_ADDR x, GM_ADDR y) {
  LocalTensor<float> t;
  Duplicate(t, 0.0f, 8);
}

// DeQue without EnQue.
extern "C" __global__ __aicore__ void deque_without_enque(GM_ADDR x, GM_ADDR y) {
  TPipe pipe;
  TQue<TPosition::VECIN, 1> q;
  pipe.InitBuffer(q, 1, 256);
  LocalTensor<float> t = q.AllocTensor<float>();
  LocalTensor<float> u = q.DeQue<float>();
  (void)u;
  q.FreeTensor(t);
}

// Queue depth exceeded: two tensors enqueued in a depth-1 queue.
extern "C" __global__ __aicore__ void depth_exceeded(GM_ADDR x, GM_ADDR y) {
  TPipe pipe;
  TQue<TPosition::VECIN, 1> q;
  pipe.InitBuffer(q, 2, 256);
  LocalTensor<float> a = q.AllocTensor<float>();
  LocalTensor<float> b = q.AllocTensor<float>();
  q.EnQue(a);
  q.EnQue(b);
}

// A buffer never freed before the kernel ends.
extern "C" __global__ __aicore__ void not_freed(GM_ADDR x, GM_ADDR y) {
  TPipe pipe;
  TQue<TPosition::VECOUT, 1> q;
  pipe.InitBuffer(q, 1, 256);
  LocalTensor<float> a = q.AllocTensor<float>();
  Duplicate(a, 0.0f, 64);
}

// A tensor used after FreeTensor.
extern "C" __global__ __aicore__ void use_after_free(GM_ADDR x, GM_ADDR y) {
  TPipe pipe;
  TQue<TPosition::VECIN, 1> q;
  pipe.InitBuffer(q, 1, 256);
  LocalTensor<float> a = q.AllocTensor<float>();
  q.FreeTensor(a);
  Duplicate(a, 0.0f, 64);
}

// AllocTensor with every buffer of the queue in use.
extern "C" __global__ __aicore__ void alloc_exhausted(GM_ADDR x, GM_ADDR y) {
  TPipe pipe;
  TQue<TPosition::VECIN, 1> q;
  pipe.InitBuffer(q, 1, 256);
  LocalTensor<float> a = q.AllocTensor<float>();
  LocalTensor<float> b = q.AllocTensor<float>();
  (void)a;
  (void)b;
}

// WaitFlag with no SetFlag.
extern "C" __global__ __aicore__ void wait_without_set(GM_ADDR x, GM_ADDR y) {
  WaitFlag<HardEvent::MTE2_V>(0);
}

// SetFlag never waited for.
extern "C" __global__ __aicore__ void set_without_wait(GM_ADDR x, GM_ADDR y) {
  SetFlag<HardEvent::V_MTE3>(1);
}

// Cross-core wait on a flag the cube never sets.
extern "C" __global__ __aicore__ void cross_never_set(GM_ADDR x, GM_ADDR y) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
  if ASCEND_IS_AIV {
    CrossCoreWaitFlag(3);
  }
}

// Cross-core flag set and never waited for.
extern "C" __global__ __aicore__ void cross_never_waited(GM_ADDR x, GM_ADDR y) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
  if ASCEND_IS_AIC {
    CrossCoreSetFlag<2, PIPE_FIX>(5);
  }
}

// The cube fails while its vector cores wait for it: the launch must end with the cube's error.
extern "C" __global__ __aicore__ void fail_while_others_wait(GM_ADDR x, GM_ADDR y) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
  if ASCEND_IS_AIC {
    GlobalTensor<float> g;
    g.SetGlobalBuffer((__gm__ float *)x);
    g.GetValue(1 << 20);
    CrossCoreSetFlag<2, PIPE_FIX>(0);
  }
  if ASCEND_IS_AIV {
    CrossCoreWaitFlag(0);
  }
}

// Every block writes the same 32 bytes of y.
extern "C" __global__ __aicore__ void overlapping_writes(GM_ADDR x, GM_ADDR y) {
  TPipe pipe;
  TBuf<TPosition::VECCALC> b;
  pipe.InitBuffer(b, 64);
  GlobalTensor<float> g;
  g.SetGlobalBuffer((__gm__ float *)y + GetBlockIdx() * 4, 8);
  Duplicate(b.Get<float>(), 1.0f, 8);
  DataCopy(g, b.Get<float>(), 8);
}

// The same kernel made legal with atomic accumulation (must pass).
extern "C" __global__ __aicore__ void atomic_writes_ok(GM_ADDR x, GM_ADDR y) {
  TPipe pipe;
  TBuf<TPosition::VECCALC> b;
  pipe.InitBuffer(b, 64);
  GlobalTensor<float> g;
  g.SetGlobalBuffer((__gm__ float *)y, 8);
  Duplicate(b.Get<float>(), 1.0f, 8);
  SetAtomicAdd<float>();
  DataCopyPad(g, b.Get<float>(), DataCopyExtParams(1, 32, 0, 0, 0));
  SetAtomicNone();
}

// L1 used from a vector core.
extern "C" __global__ __aicore__ void wrong_core_memory(GM_ADDR x, GM_ADDR y) {
  TPipe pipe;
  TQue<TPosition::A1, 1> q;
  pipe.InitBuffer(q, 1, 512);
}

// A Fixpipe whose conversion does not match its output type.
extern "C" __global__ __aicore__ void fixpipe_wrong_quant(GM_ADDR x, GM_ADDR y) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIC_ONLY);
  TPipe pipe;
  TQue<TPosition::CO1, 1> q;
  pipe.InitBuffer(q, 1, 1024);
  LocalTensor<float> c = q.AllocTensor<float>();
  GlobalTensor<half> g;
  g.SetGlobalBuffer((__gm__ half *)y, 128);
  FixpipeParamsV220 p;
  p.mSize = 1;
  p.nSize = 16;
  p.srcStride = 16;
  p.dstStride = 16;
  p.quantPre = F322BF16;
  Fixpipe<half, float, CFG_ROW_MAJOR>(g, c, p);
  q.FreeTensor(c);
}
