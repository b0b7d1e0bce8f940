// Intra-core event flags (SetFlag/WaitFlag, PipeBarrier) and cross-core flags (CrossCoreSetFlag /
// CrossCoreWaitFlag). Facts: asc-devkit docs SetFlag-WaitFlag, CrossCoreSetFlag, CrossCoreWaitFlag;
// ascendc-notes.md ("Pipes, queues, buffers"): flags 0-15; mode 1 = the vector cores of a block,
// mode 2 = cube with both vector cores. A core runs its instructions in program order here, so a
// WaitFlag with no pending SetFlag (which would hang a device) is an error at once.
#ifndef ASCENDC_SIM_SYNC_H
#define ASCENDC_SIM_SYNC_H

#include "core.h"

namespace AscendC {

enum class HardEvent : int {
  MTE2_MTE1, MTE1_MTE2, MTE1_M, M_MTE1, MTE2_V, V_MTE2, MTE3_V, V_MTE3, M_V, V_M, V_V, MTE3_MTE1,
  MTE1_MTE3, MTE1_V, MTE2_M, M_MTE2, V_MTE1, M_FIX, FIX_M, MTE3_MTE2, MTE2_MTE3, S_V, V_S, S_MTE2,
  MTE2_S, S_MTE3, MTE3_S, MTE2_FIX, FIX_MTE2, FIX_S, M_S, FIX_MTE3, MTE1_FIX, FIX_MTE1, FIX_FIX, MAX
};

enum pipe_t : int { PIPE_S = 0, PIPE_V, PIPE_M, PIPE_MTE1, PIPE_MTE2, PIPE_MTE3, PIPE_ALL, PIPE_FIX = 10 };

using TEventID = int8_t;
using event_t = int;

namespace sim {
inline const char *event_name(HardEvent e) {
  static const char *n[] = {"MTE2_MTE1", "MTE1_MTE2", "MTE1_M", "M_MTE1", "MTE2_V", "V_MTE2", "MTE3_V",
                            "V_MTE3", "M_V", "V_M", "V_V", "MTE3_MTE1", "MTE1_MTE3", "MTE1_V", "MTE2_M",
                            "M_MTE2", "V_MTE1", "M_FIX", "FIX_M", "MTE3_MTE2", "MTE2_MTE3", "S_V", "V_S",
                            "S_MTE2", "MTE2_S", "S_MTE3", "MTE3_S", "MTE2_FIX", "FIX_MTE2", "FIX_S", "M_S",
                            "FIX_MTE3", "MTE1_FIX", "FIX_MTE1", "FIX_FIX"};
  int i = static_cast<int>(e);
  return i >= 0 && i < static_cast<int>(HardEvent::MAX) ? n[i] : "?";
}
inline void set_flag(HardEvent e, int id) {
  poll_abort();
  if (id < 0 || id > 7) fail("SetFlag", fmt("event id ", id, " outside 0..7 (HardEvent::", event_name(e), ")"));
  int &n = cur().events[{static_cast<int>(e), id}];
  if (n > 0)
    fail("SetFlag", fmt("HardEvent::", event_name(e), " id ", id,
                        " set twice without a WaitFlag in between (duplicate event id)"));
  ++n;
}
inline void wait_flag(HardEvent e, int id) {
  poll_abort();
  auto it = cur().events.find({static_cast<int>(e), id});
  if (it == cur().events.end() || it->second == 0)
    fail("WaitFlag", fmt("HardEvent::", event_name(e), " id ", id,
                         " has no pending SetFlag (unpaired: the core would wait forever)"));
  --it->second;
}
/// Reports flags set and never waited for, at the end of a core's kernel.
inline std::string unpaired_events(const Core &c) {
  for (auto &kv : c.events)
    if (kv.second)
      return fmt("SetFlag<HardEvent::", event_name(static_cast<HardEvent>(kv.first.first)), ">(",
                 kv.first.second, ") has no matching WaitFlag at the end of the kernel");
  return {};
}

inline void cross_set(int mode, int flag) {
  poll_abort();
  Core &c = cur();
  if (flag < 0 || flag > 15) fail("CrossCoreSetFlag", fmt("flag id ", flag, " outside 0..15"));
  if (mode == 0) fail("CrossCoreSetFlag", "mode 0 (all cores of the launch) is not supported by the CPU runtime");
  BlockShared &b = *c.block;
  std::lock_guard<std::mutex> g(b.mu);
  b.synced = true;
  auto bump = [&](int dst) {
    int &p = b.pending[dst][flag][c.slot];
    if (p >= 15)
      fail("CrossCoreSetFlag", fmt("flag ", flag, " set 16 times without a CrossCoreWaitFlag (counter overflow)"));
    ++p;
  };
  if (mode == 2) {
    if (!b.has_cube) fail("CrossCoreSetFlag", "mode 2 needs a mixed (cube + vector) kernel");
    if (c.kind == CoreKind::Cube)
      for (int v = 1; v < b.cores; ++v) bump(v);
    else
      bump(0);
  } else if (mode == 1) {
    if (c.kind != CoreKind::Vector) fail("CrossCoreSetFlag", "mode 1 synchronises vector cores only");
    int first = b.has_cube ? 1 : 0;
    for (int v = first; v < b.cores; ++v) bump(v);
  } else {
    fail("CrossCoreSetFlag", fmt("mode ", mode, " is not 0, 1 or 2"));
  }
  b.cv.notify_all();
}

/// Whether core `slot` of block b may pass CrossCoreWaitFlag(flag): in mode 2 the cube waits for both
/// vector cores, a vector core for the cube; in mode 1 each vector core for every vector core of its block.
inline bool cross_ready(const BlockShared &b, int slot, int flag) {
  const int *p = b.pending[slot][flag];
  int first = b.has_cube ? 1 : 0;
  if (b.has_cube && slot == 0) {
    for (int v = 1; v < b.cores; ++v)
      if (!p[v]) return false;
    return b.cores > 1;
  }
  if (b.has_cube && p[0]) return true;
  for (int v = first; v < b.cores; ++v)
    if (!p[v]) return false;
  return b.cores > first;
}

inline void cross_wait(int flag) {
  poll_abort();
  Core &c = cur();
  if (flag < 0 || flag > 15) fail("CrossCoreWaitFlag", fmt("flag id ", flag, " outside 0..15"));
  BlockShared &b = *c.block;
  std::unique_lock<std::mutex> g(b.mu);
  b.waiting_on[c.slot] = flag;
  ++b.waiting;
  while (!cross_ready(b, c.slot, flag)) {
    if (c.launch->aborted.load()) {
      --b.waiting;
      b.waiting_on[c.slot] = -1;
      throw Aborted{};
    }
    bool someone_can_run = b.waiting < b.unfinished;
    for (int s = 0; s < b.cores && !someone_can_run; ++s)
      if (b.waiting_on[s] >= 0 && cross_ready(b, s, b.waiting_on[s])) someone_can_run = true;
    if (!someone_can_run) {
      --b.waiting;
      b.waiting_on[c.slot] = -1;
      g.unlock();
      fail("CrossCoreWaitFlag", fmt("flag ", flag,
                                    " is never set: every other core of the block has finished or waits too "
                                    "(unpaired cross-core flag, the device would hang)"));
    }
    b.cv.wait(g);
  }
  --b.waiting;
  b.waiting_on[c.slot] = -1;
  int *p = b.pending[c.slot][flag];
  if (c.kind == CoreKind::Vector && b.has_cube && p[0]) {
    --p[0];
  } else {
    for (int v = b.has_cube ? 1 : 0; v < b.cores; ++v) --p[v];
  }
}
}  // namespace sim

template <HardEvent E>
inline void SetFlag(int32_t id) {
  sim::set_flag(E, id);
}
template <HardEvent E>
inline void WaitFlag(int32_t id) {
  sim::wait_flag(E, id);
}
template <pipe_t P>
inline void PipeBarrier() {
  sim::poll_abort();
}
template <int mode, pipe_t P>
inline void CrossCoreSetFlag(uint16_t flag) {
  sim::cross_set(mode, flag);
}
template <pipe_t P = PIPE_S>
inline void CrossCoreWaitFlag(uint16_t flag) {
  sim::cross_wait(flag);
}

/// Global-memory atomic accumulation mode (SetAtomicAdd / SetAtomicNone in the docs): writes in this mode
/// add to memory, and are exempt from the overlapping-write check.
template <class T>
inline void SetAtomicAdd() {
  sim::cur().atomic_add = true;
}
inline void SetAtomicNone() { sim::cur().atomic_add = false; }

}  // namespace AscendC

#endif  // ASCENDC_SIM_SYNC_H
