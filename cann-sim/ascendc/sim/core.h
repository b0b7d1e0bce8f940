// Per-core execution state of our CPU implementation of the AscendC kernel API: which core a thread is,
// its on-chip memories, its event flags, the cross-core flags of its block, and the error path.
//
// Facts followed: mirror-cann/asc-devkit docs (GetBlockIdx, GetSubBlockIdx, SetFlag/WaitFlag,
// CrossCoreSetFlag/CrossCoreWaitFlag, TPosition) and /work/shared/ascendc-notes.md (910B buffer sizes).
#ifndef ASCENDC_SIM_CORE_H
#define ASCENDC_SIM_CORE_H

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../cpu_abi.h"

// Device qualifiers: the host compiler sees plain C++ (as in CANN's CPU-debug build).
#define __global__
#define __aicore__
#define __gm__
#define __ubuf__
#define __cbuf__
#define __cc__
#define __ca__
#define __cb__
#define __fbuf__
#define __inout_pipe__(x)
#define __in_pipe__(x)
#define __out_pipe__(x)
#ifndef __NPU_ARCH__
#define __NPU_ARCH__ 2201
#endif
#define ASCENDC_CPU_SIM 1

using GM_ADDR = uint8_t *;

namespace AscendC {

// Kernel kinds named in KERNEL_TASK_TYPE_DEFAULT (asc-devkit docs, kernel type list).
enum KernelMetaType : int32_t {
  KERNEL_TYPE_AIV_ONLY = 0,
  KERNEL_TYPE_AIC_ONLY = 1,
  KERNEL_TYPE_MIX_AIV_1_0 = 2,
  KERNEL_TYPE_MIX_AIC_1_0 = 3,
  KERNEL_TYPE_MIX_AIC_1_1 = 4,
  KERNEL_TYPE_MIX_AIC_1_2 = 5,
};

namespace sim {

/// Raised by a failed check; carries the full message (kernel, core, API call, values).
struct KernelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// Raised in the other cores of a launch once one core has failed, so that they stop and can be joined.
struct Aborted {};

// On-chip memories of the 910B (ascendc-notes.md, "On-chip memory").
enum class Mem : int { UB = 0, L1, L0A, L0B, L0C, BT, Count };
inline const char *mem_name(Mem m) {
  static const char *n[] = {"UB", "L1", "L0A", "L0B", "L0C", "BT"};
  return n[static_cast<int>(m)];
}
inline uint32_t mem_capacity(Mem m) {
  static const uint32_t c[] = {192u * 1024, 512u * 1024, 64u * 1024, 64u * 1024, 128u * 1024, 1024u};
  return c[static_cast<int>(m)];
}

enum class CoreKind { Vector, Cube };

/// Cross-core flag state of one block (one cube core and its vector cores).
struct BlockShared {
  std::mutex mu;
  std::condition_variable cv;
  // pending[dst core][flag][src core]: sets not yet consumed. Core 0 = cube, 1.. = vector cores.
  int pending[3][16][3] = {};
  int unfinished = 0;
  int waiting = 0;
  int waiting_on[3] = {-1, -1, -1};  // flag each core waits for, -1 when running
  int cores = 0;
  bool has_cube = false;
  bool synced = false;  // a cross-core flag was set: its cores' writes are ordered by the flags
};

struct WriteRange {
  uint64_t begin, end;
  int core;  // global core number in the launch
  int block;
};

/// State shared by all cores of one launch.
struct LaunchState {
  const AscendcCpuHost *host = nullptr;
  std::string kernel;
  std::atomic<bool> aborted{false};
  std::mutex mu;
  std::string first_error;
  std::vector<WriteRange> writes;
  std::vector<std::string> core_names;
  std::vector<BlockShared *> blocks;

  void fail_with(const std::string &msg) {
    {
      std::lock_guard<std::mutex> g(mu);
      if (first_error.empty()) first_error = msg;
    }
    aborted.store(true);
    for (BlockShared *b : blocks) {
      std::lock_guard<std::mutex> g(b->mu);
      b->cv.notify_all();
    }
  }
};

/// One simulated core: identity, on-chip memories and the per-core checks' state.
struct Core {
  LaunchState *launch = nullptr;
  BlockShared *block = nullptr;
  CoreKind kind = CoreKind::Vector;
  int64_t block_idx = 0, block_num = 1, sub_idx = 0, sub_num = 1;
  int phys_block = 0;  // index of the block (AI core) in the launch
  int slot = 0;        // 0 = cube, 1.. = vector cores of the block
  int global_id = 0;
  std::vector<uint8_t> mem[static_cast<int>(Mem::Count)];
  std::map<std::pair<int, int>, int> events;  // (HardEvent, id) -> pending sets
  std::vector<std::pair<uint64_t, uint64_t>> writes;
  bool atomic_add = false;
  std::string deferred_error;  // found in a destructor, reported when the kernel returns
  int pipes_alive = 0;

  std::string where() const {
    std::ostringstream s;
    s << "kernel " << launch->kernel << " block " << phys_block;
    if (kind == CoreKind::Cube)
      s << " (cube core, GetBlockIdx " << block_idx << ")";
    else
      s << " (vector core " << sub_idx << ", GetBlockIdx " << block_idx << ")";
    return s.str();
  }
  uint8_t *base(Mem m, const char *api) {
    bool vec_mem = m == Mem::UB;
    if (vec_mem != (kind == CoreKind::Vector)) {
      throw KernelError(where() + ": " + api + ": " + mem_name(m) + " does not exist on a " +
                        (kind == CoreKind::Cube ? "cube" : "vector") +
                        " core (guard the code with ASCEND_IS_AIV / ASCEND_IS_AIC)");
    }
    auto &v = mem[static_cast<int>(m)];
    // Poisoned with 0xFF bytes (NaN in every float format): reads of never-written data show in results.
    if (v.empty()) v.assign(mem_capacity(m), 0xFF);
    return v.data();
  }
};

inline thread_local Core *tl_core = nullptr;

inline Core &cur() {
  if (!tl_core) {
    std::fprintf(stderr, "AscendC CPU runtime: kernel API called outside a launch\n");
    std::abort();
  }
  return *tl_core;
}

/// Stops this core if another core of the launch has already failed.
inline void poll_abort() {
  if (cur().launch->aborted.load(std::memory_order_relaxed)) throw Aborted{};
}

[[noreturn]] inline void fail(const char *api, const std::string &msg) {
  throw KernelError(cur().where() + ": " + api + ": " + msg);
}

template <class... A>
std::string fmt(A &&...a) {
  std::ostringstream s;
  (s << ... << a);
  return s.str();
}

/// Host memory behind the device range [addr, addr+len), through the host's bounds-checked map_gm.
inline uint8_t *map_gm(uint64_t addr, uint64_t len, bool write, const char *api) {
  Core &c = cur();
  if (len == 0) return nullptr;
  char err[512] = {0};
  void *p = c.launch->host->map_gm(c.launch->host->ctx, addr, len, write ? 1 : 0, err, sizeof err);
  if (!p) fail(api, fmt("global memory [0x", std::hex, addr, ", 0x", addr + len, std::dec, ") (", len,
                        " bytes, ", write ? "write" : "read", "): ", err[0] ? err : "not mapped"));
  if (write && !c.atomic_add) {
    auto &w = c.writes;
    if (!w.empty() && w.back().second == addr)
      w.back().second = addr + len;
    else
      w.emplace_back(addr, addr + len);
  }
  return static_cast<uint8_t *>(p);
}

}  // namespace sim

inline int64_t GetBlockIdx() { return sim::cur().block_idx; }
inline int64_t GetBlockNum() { return sim::cur().block_num; }
inline int64_t GetSubBlockIdx() { return sim::cur().sub_idx; }
inline int64_t GetSubBlockNum() { return sim::cur().sub_num; }
inline int64_t GetTaskRation() { return sim::cur().sub_num; }

namespace sim {
inline bool is_aiv() { return cur().kind == CoreKind::Vector; }
inline bool is_aic() { return cur().kind == CoreKind::Cube; }
/// Checks the kernel's declared kind against the one the launcher used (parsed by build_kernel_cpu.sh).
inline void check_task_type(int32_t declared);
}  // namespace sim

}  // namespace AscendC

// Used as `if ASCEND_IS_AIV { ... }`: the macros carry their parentheses (ascendc-notes.md).
#define ASCEND_IS_AIV (::AscendC::sim::is_aiv())
#define ASCEND_IS_AIC (::AscendC::sim::is_aic())
#define ASCEND_IS_NOT_AIV (!::AscendC::sim::is_aiv())
#define ASCEND_IS_NOT_AIC (!::AscendC::sim::is_aic())
#define KERNEL_TASK_TYPE_DEFAULT(t) ::AscendC::sim::check_task_type(static_cast<int32_t>(::AscendC::t))

#endif  // ASCENDC_SIM_CORE_H
