// Each runtime check fires on its deliberately broken kernel (broken/checks.cpp) with a message that
// names the kernel, the core, the API call and the fault; the legal atomic variant passes.
#include "host.h"

using namespace test;

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s BROKEN_DIR\n", argv[0]);
    return 2;
  }
  Binary bin(std::string(argv[1]) + "/checks.so");
  struct Expect {
    const char *kernel;
    uint32_t blocks;
    std::vector<const char *> parts;
  };
  std::vector<Expect> cases = {
      {"ub_overflow", 1, {"kernel ub_overflow block 0 (vector core 0", "TPipe::InitBuffer", "exceed UB capacity of 196608"}},
      {"copy_not_32B", 1, {"DataCopy(GM->local)", "10 float elements = 40 bytes", "would copy 32"}},
      {"misaligned_ub", 1, {"DataCopy(GM->local)", "UB offset 12 is not 32-byte aligned"}},
      {"local_oob", 1, {"Duplicate", "elements [0, 32) outside the float tensor of 16 elements"}},
      {"gm_oob", 1, {"DataCopy(GM->local)", "out of bounds of allocation #1"}},
      {"gm_beyond_size", 1, {"GlobalTensor::SetValue", "outside the GlobalTensor of 16 float elements"}},
      {"use_before_alloc", 1, {"Duplicate", "used before it was given a buffer"}},
      {"deque_without_enque", 1, {"TQue::DeQue", "DeQue without EnQue"}},
      {"depth_exceeded", 1, {"TQue::EnQue", "queue depth 1 exceeded"}},
      {"not_freed", 1, {"buffer 0 still allocated when the kernel ends"}},
      {"use_after_free", 1, {"Duplicate", "used after FreeTensor"}},
      {"alloc_exhausted", 1, {"TQue::AllocTensor", "all 1 buffers of the queue (UB) are in use"}},
      {"wait_without_set", 1, {"WaitFlag", "HardEvent::MTE2_V id 0 has no pending SetFlag"}},
      {"set_without_wait", 1, {"SetFlag<HardEvent::V_MTE3>(1) has no matching WaitFlag"}},
      {"cross_never_set", 2, {"(vector core", "CrossCoreWaitFlag", "flag 3 is never set"}},
      {"cross_never_waited", 1, {"(cube core", "flag 5 was set but never waited for"}},
      {"fail_while_others_wait", 4, {"(cube core", "GlobalTensor::GetValue", "is out of bounds of allocation"}},
      {"overlapping_writes", 3, {"overlapping global-memory writes from different cores", "kernel overlapping_writes block"}},
      {"wrong_core_memory", 1, {"TPipe::InitBuffer", "L1 does not exist on a vector core"}},
      {"fixpipe_wrong_quant", 1, {"(cube core", "Fixpipe(L0C->GM)", "does not convert f32 to half"}},
  };
  for (const Expect &e : cases) {
    Device dev;
    uint64_t x = dev.alloc(64 * 4), y = dev.alloc(64 * 4);
    Args a;
    a.add(x).add(y);
    std::string err = bin.launch(dev, e.kernel, e.blocks, a);
    bool ok = !err.empty();
    for (const char *p : e.parts) ok = ok && err.find(p) != std::string::npos;
    check(ok, std::string(e.kernel) + ": message was \"" + err + "\"");
    if (std::getenv("SHOW_MESSAGES")) std::printf("%s: %s\n", e.kernel, err.c_str());
  }
  {
    Device dev;
    uint64_t x = dev.alloc(64 * 4), y = dev.upload(std::vector<float>(64, 0.5f));
    Args a;
    a.add(x).add(y);
    std::string err = bin.launch(dev, "atomic_writes_ok", 3, a);
    auto out = dev.download<float>(y, 8);
    check(err.empty() && out[0] == 3.5f && out[7] == 3.5f, "atomic_writes_ok: \"" + err + "\" y[0]=" + std::to_string(out[0]));
  }
  {
    Device dev;
    Args a;
    a.add(dev.alloc(256));  // one argument where the kernel takes two
    std::string err = bin.launch(dev, "not_freed", 1, a);
    check(err.find("argument buffer is 8 bytes but the kernel's 2 parameters take 16") != std::string::npos,
          "argument size check: \"" + err + "\"");
    err = bin.launch(dev, "no_such_kernel", 1, a);
    check(err.find("no kernel named no_such_kernel") != std::string::npos, "unknown kernel: \"" + err + "\"");
  }
  return finish("checks");
}
