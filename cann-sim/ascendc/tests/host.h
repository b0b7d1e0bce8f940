// Test host for kernel binaries built by scripts/build_kernel_cpu.sh: device memory as guarded host
// buffers behind map_gm (the simulator's role), the binary loaded with dlopen, arguments packed at
// natural alignment as aclrtKernelArgsAppend packs them.
#ifndef ASCENDC_TESTS_HOST_H
#define ASCENDC_TESTS_HOST_H

#include <dlfcn.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "../cpu_abi.h"

namespace test {

/// Device memory: each allocation at its own address range, 4 KiB-aligned, with an unmapped gap after
/// it, so that an access running past its end is refused by map_gm as on a guarded device buffer.
class Device {
 public:
  uint64_t alloc(size_t bytes) {
    std::lock_guard<std::mutex> g(mu_);
    uint64_t addr = next_;
    next_ += (bytes + 4095) / 4096 * 4096 + 65536;
    Buf b;
    b.data.assign(bytes, 0xA5);
    b.id = ++count_;
    bufs_[addr] = std::move(b);
    return addr;
  }
  template <class T>
  uint64_t upload(const std::vector<T> &v) {
    uint64_t a = alloc(v.size() * sizeof(T));
    std::memcpy(host(a), v.data(), v.size() * sizeof(T));
    return a;
  }
  template <class T>
  std::vector<T> download(uint64_t addr, size_t n) {
    std::vector<T> v(n);
    std::memcpy(v.data(), host(addr), n * sizeof(T));
    return v;
  }
  uint8_t *host(uint64_t addr) { return bufs_.at(addr).data.data(); }

  static void *map(void *ctx, uint64_t addr, uint64_t len, int write, char *err, size_t errlen) {
    Device &d = *static_cast<Device *>(ctx);
    std::lock_guard<std::mutex> g(d.mu_);
    auto it = d.bufs_.upper_bound(addr);
    if (it == d.bufs_.begin()) {
      std::snprintf(err, errlen, "address 0x%llx is below every allocation", (unsigned long long)addr);
      return nullptr;
    }
    --it;
    uint64_t base = it->first, size = it->second.data.size();
    if (addr >= base + size || addr + len > base + size) {
      std::snprintf(err, errlen, "[0x%llx, 0x%llx) is out of bounds of allocation #%d [0x%llx, 0x%llx)",
                    (unsigned long long)addr, (unsigned long long)(addr + len), it->second.id,
                    (unsigned long long)base, (unsigned long long)(base + size));
      return nullptr;
    }
    (void)write;
    return it->second.data.data() + (addr - base);
  }
  AscendcCpuHost descriptor() { return AscendcCpuHost{ASCENDC_CPU_ABI_VERSION, this, &Device::map}; }

 private:
  struct Buf {
    std::vector<uint8_t> data;
    int id = 0;
  };
  std::mutex mu_;
  std::map<uint64_t, Buf> bufs_;
  uint64_t next_ = 0x10000000000ull;
  int count_ = 0;
};

/// Arguments packed as on the device: each at its natural alignment, in order.
class Args {
 public:
  template <class T>
  Args &add(const T &v) {
    size_t a = alignof(T);
    buf_.resize((buf_.size() + a - 1) / a * a);
    size_t o = buf_.size();
    buf_.resize(o + sizeof(T));
    std::memcpy(buf_.data() + o, &v, sizeof(T));
    return *this;
  }
  const void *data() const { return buf_.data(); }
  size_t size() const { return buf_.size(); }

 private:
  std::vector<uint8_t> buf_;
};

/// A kernel binary opened the way the simulator's aclrtBinaryLoadFromFile opens it.
class Binary {
 public:
  explicit Binary(const std::string &path) {
    h_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h_) {
      std::fprintf(stderr, "dlopen %s: %s\n", path.c_str(), dlerror());
      std::exit(2);
    }
    version_ = reinterpret_cast<uint32_t (*)()>(dlsym(h_, "ascendc_cpu_abi_version"));
    has_ = reinterpret_cast<int (*)(const char *)>(dlsym(h_, "ascendc_cpu_has_kernel"));
    launch_ = reinterpret_cast<decltype(launch_)>(dlsym(h_, "ascendc_cpu_launch"));
    if (!version_ || !has_ || !launch_ || version_() != ASCENDC_CPU_ABI_VERSION) {
      std::fprintf(stderr, "%s does not export ABI version %d\n", path.c_str(), ASCENDC_CPU_ABI_VERSION);
      std::exit(2);
    }
  }
  bool has(const char *name) const { return has_(name) == 1; }
  /// Launches; returns "" on success, else the runtime's message.
  std::string launch(Device &d, const char *name, uint32_t blocks, const Args &a) {
    AscendcCpuHost h = d.descriptor();
    char err[2048] = {0};
    int rc = launch_(&h, name, blocks, a.data(), a.size(), err, sizeof err);
    if (rc == 0) return {};
    return err[0] ? err : "launch failed with an empty message";
  }

 private:
  void *h_ = nullptr;
  uint32_t (*version_)() = nullptr;
  int (*has_)(const char *) = nullptr;
  int (*launch_)(const AscendcCpuHost *, const char *, uint32_t, const void *, size_t, char *, size_t) = nullptr;
};

// ---- 16-bit floats on the host (round to nearest even) ----
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float bf16_to_f32(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_f16(float f) {
  _Float16 h = static_cast<_Float16>(f);
  uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}
inline float f16_to_f32(uint16_t u) {
  _Float16 h;
  std::memcpy(&h, &u, 2);
  return static_cast<float>(h);
}
/// dtype 0 = bf16, 1 = f16 (kernels/tiling.h KDT_*).
inline uint16_t to16(float f, uint32_t dt) { return dt == 0 ? f32_to_bf16(f) : f32_to_f16(f); }
inline float from16(uint16_t u, uint32_t dt) { return dt == 0 ? bf16_to_f32(u) : f16_to_f32(u); }

/// Random values already representable in the 16-bit type, so the reference sees exactly the kernel's inputs.
inline std::vector<uint16_t> random16(size_t n, uint32_t dt, std::mt19937 &rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<uint16_t> v(n);
  for (auto &x : v) x = to16(u(rng), dt);
  return v;
}

inline int g_failures = 0, g_passes = 0;
inline void check(bool ok, const std::string &what) {
  if (ok) {
    ++g_passes;
  } else {
    ++g_failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}
inline int finish(const char *suite) {
  std::printf("%s: %d passed, %d failed\n", suite, g_passes, g_failures);
  return g_failures ? 1 : 0;
}

}  // namespace test

#endif  // ASCENDC_TESTS_HOST_H
