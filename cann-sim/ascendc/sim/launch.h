// The launcher behind cpu_abi.h: unpacks the device-packed argument buffer into a kernel call, runs every
// block (and the cube and vector sub-cores of a mixed kernel) as threads with their own on-chip memories,
// turns the first failed check into the launch's error after waking and joining every core, and checks
// what can only be seen at the end: unpaired flags and overlapping global writes from different cores.
#ifndef ASCENDC_SIM_LAUNCH_H
#define ASCENDC_SIM_LAUNCH_H

#include <thread>
#include <tuple>

#include "memory.h"

namespace AscendC {
namespace sim {

/// One kernel of a binary, as the generated thunk lists it.
struct KernelEntry {
  const char *name;
  int32_t task_type;
  /// Unpacks `args` and calls the kernel; returns an error text if the buffer does not fit the signature.
  std::string (*invoke)(const uint8_t *args, size_t size);
};

inline thread_local int32_t tl_task_type = -1;

inline void check_task_type(int32_t declared) {
  if (declared != tl_task_type)
    fail("KERNEL_TASK_TYPE_DEFAULT", fmt("kernel declares type ", declared, " but was launched as type ", tl_task_type,
                                         " (the build script could not read the declaration)"));
}

/// Device packing (aclrtKernelArgsAppend): each argument at its natural alignment, in order.
template <class... A>
struct ArgUnpacker {
  template <size_t... I>
  static std::string call(void (*fn)(A...), const uint8_t *args, size_t size, std::index_sequence<I...>) {
    size_t off = 0;
    size_t offs[sizeof...(A) + 1] = {};
    size_t sizes[] = {sizeof(A)..., 0};
    size_t aligns[] = {alignof(A)..., 1};
    for (size_t i = 0; i < sizeof...(A); ++i) {
      off = (off + aligns[i] - 1) / aligns[i] * aligns[i];
      offs[i] = off;
      off += sizes[i];
    }
    if (off != size)
      return fmt("argument buffer is ", size, " bytes but the kernel's ", sizeof...(A), " parameters take ", off,
                 " bytes packed at natural alignment");
    std::tuple<std::decay_t<A>...> vals;
    ((std::memcpy(&std::get<I>(vals), args + offs[I], sizeof(A))), ...);
    fn(std::get<I>(vals)...);
    return {};
  }
};
template <class... A>
std::string invoke_kernel(void (*fn)(A...), const uint8_t *args, size_t size) {
  return ArgUnpacker<A...>::call(fn, args, size, std::index_sequence_for<A...>{});
}

inline void copy_err(const std::string &m, char *err, size_t errlen) {
  if (!err || !errlen) return;
  size_t n = std::min(m.size(), errlen - 1);
  std::memcpy(err, m.data(), n);
  err[n] = 0;
}

struct CoreSpec {
  CoreKind kind;
  int slot;
};

inline std::vector<CoreSpec> cores_of(int32_t type) {
  switch (type) {
    case KERNEL_TYPE_AIV_ONLY:
    case KERNEL_TYPE_MIX_AIV_1_0: return {{CoreKind::Vector, 0}};
    case KERNEL_TYPE_AIC_ONLY:
    case KERNEL_TYPE_MIX_AIC_1_0: return {{CoreKind::Cube, 0}};
    case KERNEL_TYPE_MIX_AIC_1_1: return {{CoreKind::Cube, 0}, {CoreKind::Vector, 1}};
    case KERNEL_TYPE_MIX_AIC_1_2: return {{CoreKind::Cube, 0}, {CoreKind::Vector, 1}, {CoreKind::Vector, 2}};
    default: return {};
  }
}

inline void run_core(LaunchState &ls, BlockShared &bs, const KernelEntry &e, CoreSpec spec, int block,
                     uint32_t num_blocks, int vec_per_block, const uint8_t *args, size_t size, int gid) {
  Core c;
  c.launch = &ls;
  c.block = &bs;
  c.kind = spec.kind;
  c.phys_block = block;
  c.slot = spec.slot;
  c.global_id = gid;
  c.block_num = num_blocks;
  if (spec.kind == CoreKind::Cube) {
    c.block_idx = block;
    c.sub_idx = 0;
    c.sub_num = 1;
  } else {
    int sub = bs.has_cube ? spec.slot - 1 : 0;
    c.sub_idx = sub;
    c.sub_num = vec_per_block;
    c.block_idx = int64_t(block) * vec_per_block + sub;
  }
  tl_core = &c;
  tl_task_type = e.task_type;
  {
    std::lock_guard<std::mutex> g(ls.mu);
    ls.core_names[gid] = c.where();
  }
  try {
    std::string bad = e.invoke(args, size);
    if (!bad.empty()) throw KernelError(c.where() + ": launch: " + bad);
    if (!c.deferred_error.empty()) throw KernelError(c.deferred_error);
    std::string ev = unpaired_events(c);
    if (!ev.empty()) throw KernelError(c.where() + ": SetFlag: " + ev);
  } catch (const KernelError &err) {
    ls.fail_with(err.what());
  } catch (const Aborted &) {
  } catch (const std::exception &ex) {
    ls.fail_with(c.where() + ": unexpected C++ exception: " + ex.what());
  }
  {
    std::lock_guard<std::mutex> g(ls.mu);
    for (auto &w : c.writes) ls.writes.push_back({w.first, w.second, gid, block});
  }
  {
    std::lock_guard<std::mutex> g(bs.mu);
    --bs.unfinished;
    bs.cv.notify_all();
  }
  tl_core = nullptr;
}

inline int far_block(const WriteRange *w) { return w ? w->block : -1; }

/// Overlapping global writes from different cores (atomic-add writes are not recorded).
inline std::string check_overlaps(LaunchState &ls) {
  auto &w = ls.writes;
  std::sort(w.begin(), w.end(), [](const WriteRange &a, const WriteRange &b) { return a.begin < b.begin; });
  const WriteRange *far = nullptr;
  for (const WriteRange &r : w) {
    // Cores of one block that exchange cross-core flags may reuse a workspace in turn (ordered by the
    // flags, which this check does not follow); cores of different blocks never synchronise here.
    bool ordered = r.block == far_block(far) && ls.blocks[r.block]->synced;
    if (far && r.begin < far->end && r.core != far->core && !ordered)
      return fmt("kernel ", ls.kernel, ": overlapping global-memory writes from different cores: ",
                 ls.core_names[far->core], " wrote [0x", std::hex, far->begin, ", 0x", far->end, ") and ",
                 ls.core_names[r.core], " wrote [0x", r.begin, ", 0x", r.end, std::dec,
                 ") (use SetAtomicAdd for accumulation)");
    if (!far || r.end > far->end) far = &r;
  }
  return {};
}

inline int launch(const KernelEntry *entries, size_t n, const AscendcCpuHost *host, const char *name,
                  uint32_t num_blocks, const void *args, size_t args_size, char *err, size_t errlen) {
  try {
    if (!name) {
      copy_err("ascendc_cpu_launch: kernel name is NULL", err, errlen);
      return 1;
    }
    const KernelEntry *e = nullptr;
    for (size_t i = 0; i < n; ++i)
      if (std::strcmp(entries[i].name, name) == 0) e = &entries[i];
    if (!e) {
      copy_err(fmt("ascendc_cpu_launch: no kernel named ", name, " in this binary"), err, errlen);
      return 1;
    }
    if (!host || host->version != ASCENDC_CPU_ABI_VERSION || !host->map_gm) {
      copy_err(fmt("ascendc_cpu_launch(", name, "): host descriptor missing, of another ABI version (",
                   host ? host->version : 0, " vs ", ASCENDC_CPU_ABI_VERSION, ") or without map_gm"), err, errlen);
      return 1;
    }
    if (num_blocks < 1 || num_blocks > 65535) {
      copy_err(fmt("ascendc_cpu_launch(", name, "): numBlocks ", num_blocks, " outside 1..65535"), err, errlen);
      return 1;
    }
    if (args_size && !args) {
      copy_err(fmt("ascendc_cpu_launch(", name, "): ", args_size, " argument bytes but args is NULL"), err, errlen);
      return 1;
    }
    std::vector<CoreSpec> spec = cores_of(e->task_type);
    if (spec.empty()) {
      copy_err(fmt("ascendc_cpu_launch(", name, "): kernel type ", e->task_type, " not supported"), err, errlen);
      return 1;
    }
    int vec_per_block = 0;
    for (auto &s : spec) vec_per_block += s.kind == CoreKind::Vector;
    if (!vec_per_block) vec_per_block = 1;
    LaunchState ls;
    ls.host = host;
    ls.kernel = name;
    std::vector<std::unique_ptr<BlockShared>> blocks(num_blocks);
    for (auto &b : blocks) {
      b = std::make_unique<BlockShared>();
      b->cores = static_cast<int>(spec.size());
      b->unfinished = b->cores;
      b->has_cube = spec[0].kind == CoreKind::Cube && spec.size() > 1;
      ls.blocks.push_back(b.get());
    }
    ls.core_names.resize(size_t(num_blocks) * spec.size());
    const uint8_t *a = static_cast<const uint8_t *>(args);
    std::atomic<uint32_t> next{0};
    unsigned workers = std::max(2u, std::min(std::thread::hardware_concurrency(), 16u));
    workers = std::min<unsigned>(workers, num_blocks);
    auto worker = [&] {
      for (;;) {
        uint32_t b = next.fetch_add(1);
        if (b >= num_blocks || ls.aborted.load()) return;
        std::vector<std::thread> others;
        for (size_t s = 1; s < spec.size(); ++s)
          others.emplace_back(run_core, std::ref(ls), std::ref(*blocks[b]), std::cref(*e), spec[s], int(b), num_blocks,
                              vec_per_block, a, args_size, int(b * spec.size() + s));
        run_core(ls, *blocks[b], *e, spec[0], int(b), num_blocks, vec_per_block, a, args_size, int(b * spec.size()));
        for (auto &t : others) t.join();
      }
    };
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < workers; ++i) pool.emplace_back(worker);
    for (auto &t : pool) t.join();
    if (!ls.first_error.empty()) {
      copy_err(ls.first_error, err, errlen);
      return 1;
    }
    for (uint32_t b = 0; b < num_blocks; ++b)
      for (int d = 0; d < 3; ++d)
        for (int f = 0; f < 16; ++f)
          for (int s = 0; s < 3; ++s)
            if (blocks[b]->pending[d][f][s]) {
              copy_err(fmt(ls.core_names[b * spec.size() + s], ": CrossCoreSetFlag: flag ", f,
                           " was set but never waited for by ", ls.core_names[b * spec.size() + d],
                           " (unpaired cross-core flag)"), err, errlen);
              return 1;
            }
    std::string ov = check_overlaps(ls);
    if (!ov.empty()) {
      copy_err(ov, err, errlen);
      return 1;
    }
    return 0;
  } catch (const std::exception &ex) {
    copy_err(fmt("ascendc_cpu_launch(", name ? name : "?", "): ", ex.what()), err, errlen);
    return 1;
  }
}

}  // namespace sim
}  // namespace AscendC

/// Emitted once by the generated thunk after it has listed the kernels in `ascendc_sim_kernels`.
#define ASCENDC_SIM_EXPORT_ABI()                                                                             \
  extern "C" __attribute__((visibility("default"))) uint32_t ascendc_cpu_abi_version(void) {                \
    return ASCENDC_CPU_ABI_VERSION;                                                                          \
  }                                                                                                          \
  extern "C" __attribute__((visibility("default"))) int ascendc_cpu_has_kernel(const char *name) {          \
    if (!name) return 0;                                                                                     \
    for (const auto &e : ascendc_sim_kernels)                                                                \
      if (std::strcmp(e.name, name) == 0) return 1;                                                          \
    return 0;                                                                                                \
  }                                                                                                          \
  extern "C" __attribute__((visibility("default"))) int ascendc_cpu_launch(                                 \
      const AscendcCpuHost *host, const char *name, uint32_t num_blocks, const void *args, size_t args_size, \
      char *err, size_t errlen) {                                                                            \
    return ::AscendC::sim::launch(ascendc_sim_kernels, sizeof ascendc_sim_kernels / sizeof ascendc_sim_kernels[0], \
                                  host, name, num_blocks, args, args_size, err, errlen);                     \
  }

#endif  // ASCENDC_SIM_LAUNCH_H
