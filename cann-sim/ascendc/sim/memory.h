// Tensors and buffer management: TPosition, LocalTensor, GlobalTensor, TPipe, TQue/TQueBind, TBuf.
// Facts: asc-devkit docs TPipe/InitBuffer (len rounded up to 32 B, num 1..64 per queue, buffers carved
// from the position's memory), TQue AllocTensor/EnQue/DeQue/FreeTensor, TBuf Get, LocalTensor, GlobalTensor
// SetGlobalBuffer; ascendc-notes.md for the position -> memory map and alignments.
#ifndef ASCENDC_SIM_MEMORY_H
#define ASCENDC_SIM_MEMORY_H

#include <deque>
#include <memory>

#include "sync.h"
#include "types.h"

namespace AscendC {

enum class TPosition : int { GM, A1, A2, B1, B2, C1, C2, CO1, CO2, VECIN, VECOUT, VECCALC, LCM = VECCALC, SPM,
                             SHM, TSCM, C2PIPE2GM, MAX };
using QuePosition = TPosition;

namespace sim {
inline Mem mem_of(TPosition p, const char *api) {
  switch (p) {
    case TPosition::A1:
    case TPosition::B1:
    case TPosition::C1:
    case TPosition::TSCM: return Mem::L1;
    case TPosition::A2: return Mem::L0A;
    case TPosition::B2: return Mem::L0B;
    case TPosition::CO1: return Mem::L0C;
    case TPosition::C2: return Mem::BT;
    case TPosition::VECIN:
    case TPosition::VECOUT:
    case TPosition::VECCALC: return Mem::UB;
    default: fail(api, fmt("TPosition ", static_cast<int>(p), " has no on-chip buffer on the 910B (CO2 is global memory)"));
  }
}
inline uint32_t mem_align(Mem m) {
  switch (m) {
    case Mem::L0A:
    case Mem::L0B: return 512;
    case Mem::L0C:
    case Mem::BT: return 64;
    default: return 32;
  }
}

/// One buffer of a queue; its generation changes when it is freed, so stale tensors are caught.
struct Slot {
  enum State { Free, Allocated, Queued, Dequeued } state = Free;
  uint32_t gen = 1;
  uint32_t offset = 0;
  uint32_t bytes = 0;
};
inline const char *state_name(Slot::State s) {
  static const char *n[] = {"free", "allocated", "enqueued", "dequeued"};
  return n[s];
}
}  // namespace sim

/// A view of on-chip memory: memory kind, byte offset, element count, and (for queue buffers) the slot
/// whose lifetime bounds it.
template <class T>
class LocalTensor {
 public:
  using PrimType = T;
  LocalTensor() = default;

  uint32_t GetSize() const { return count_; }
  uint32_t GetLength() const { return count_ * sizeof(T); }
  LocalTensor operator[](uint32_t off) const {
    check("LocalTensor::operator[]");
    if (off > count_) sim::fail("LocalTensor::operator[]", sim::fmt("offset ", off, " beyond the tensor's ", count_, " elements"));
    LocalTensor t = *this;
    t.off_ += off * sizeof(T);
    t.count_ -= off;
    return t;
  }
  T GetValue(uint32_t i) const {
    T v;
    std::memcpy(&v, ptr("LocalTensor::GetValue", i, 1), sizeof(T));
    return v;
  }
  void SetValue(uint32_t i, T v) const { std::memcpy(ptr("LocalTensor::SetValue", i, 1), &v, sizeof(T)); }
  template <class U>
  LocalTensor<U> ReinterpretCast() const {
    check("LocalTensor::ReinterpretCast");
    LocalTensor<U> t;
    t.mem_ = mem_;
    t.off_ = off_;
    t.count_ = static_cast<uint32_t>(uint64_t(count_) * sizeof(T) / sizeof(U));
    t.slot_ = slot_;
    t.gen_ = gen_;
    t.valid_ = valid_;
    t.pos_ = pos_;
    return t;
  }
  TPosition GetPosition() const { return pos_; }
  void SetSize(uint32_t n) {
    check("LocalTensor::SetSize");
    if (n > cap_count()) sim::fail("LocalTensor::SetSize", sim::fmt(n, " elements exceed the buffer's ", cap_count()));
    count_ = n;
  }

  // --- runtime internals (used by the API implementations) ---
  /// Checks that elements [i, i+n) are inside this tensor and that its buffer is live; returns them.
  T *ptr(const char *api, uint64_t i, uint64_t n) const {
    check(api);
    if (i + n > count_)
      sim::fail(api, sim::fmt("elements [", i, ", ", i + n, ") outside the ", sim::type_name<T>(), " tensor of ", count_,
                              " elements at ", sim::mem_name(mem_), " offset ", off_));
    return reinterpret_cast<T *>(sim::cur().base(mem_, api) + off_ + i * sizeof(T));
  }
  void check(const char *api) const {
    sim::poll_abort();
    if (!valid_) sim::fail(api, "LocalTensor used before it was given a buffer (AllocTensor / DeQue / TBuf::Get)");
    if (slot_ && slot_->gen != gen_)
      sim::fail(api, sim::fmt("LocalTensor at ", sim::mem_name(mem_), " offset ", off_, " used after FreeTensor"));
  }
  sim::Mem mem() const { return mem_; }
  uint32_t offset() const { return off_; }
  uint32_t cap_count() const { return slot_ ? (slot_->offset + slot_->bytes - off_) / sizeof(T) : count_; }

  sim::Mem mem_ = sim::Mem::UB;
  uint32_t off_ = 0, count_ = 0;
  sim::Slot *slot_ = nullptr;
  uint32_t gen_ = 0;
  bool valid_ = false;
  TPosition pos_ = TPosition::VECCALC;
};

/// A view of global memory: device address and (when SetGlobalBuffer gave one) its element count. It is
/// never dereferenced directly: every access maps its exact range through the host.
template <class T>
class GlobalTensor {
 public:
  using PrimType = T;
  void SetGlobalBuffer(__gm__ T *buf, uint64_t size) {
    addr_ = reinterpret_cast<uint64_t>(buf);
    size_ = size;
    sized_ = true;
  }
  void SetGlobalBuffer(__gm__ T *buf) {
    addr_ = reinterpret_cast<uint64_t>(buf);
    sized_ = false;
  }
  GlobalTensor operator[](uint64_t off) const {
    if (sized_ && off > size_)
      sim::fail("GlobalTensor::operator[]", sim::fmt("offset ", off, " beyond SetGlobalBuffer's size ", size_));
    GlobalTensor t = *this;
    t.addr_ += off * sizeof(T);
    if (sized_) t.size_ -= off;
    return t;
  }
  T GetValue(uint64_t i) const {
    T v;
    std::memcpy(&v, bytes("GlobalTensor::GetValue", i * sizeof(T), sizeof(T), false), sizeof(T));
    return v;
  }
  void SetValue(uint64_t i, T v) const {
    std::memcpy(bytes("GlobalTensor::SetValue", i * sizeof(T), sizeof(T), true), &v, sizeof(T));
  }
  __gm__ T *GetPhyAddr() const { return reinterpret_cast<__gm__ T *>(addr_); }
  __gm__ T *GetPhyAddr(uint64_t off) const { return reinterpret_cast<__gm__ T *>(addr_ + off * sizeof(T)); }
  uint64_t GetSize() const { return size_; }

  /// Host bytes for [addr + byte_off, +len), checked against the declared size and by the host.
  uint8_t *bytes(const char *api, uint64_t byte_off, uint64_t len, bool write) const {
    sim::poll_abort();
    if (sized_ && byte_off + len > size_ * sizeof(T))
      sim::fail(api, sim::fmt("bytes [", byte_off, ", ", byte_off + len, ") outside the GlobalTensor of ", size_, " ",
                              sim::type_name<T>(), " elements (", size_ * sizeof(T), " bytes)"));
    return sim::map_gm(addr_ + byte_off, len, write, api);
  }
  uint64_t addr() const { return addr_; }

 private:
  uint64_t addr_ = 0;
  uint64_t size_ = 0;
  bool sized_ = false;
};

class TPipe;

namespace sim {
/// Queue machinery shared by TQue and TQueBind.
class QueBase {
 public:
  QueBase(TPosition pos, int depth) : pos_(pos), depth_(depth) {}
  QueBase(const QueBase &) = delete;
  ~QueBase() {
    if (!inited_ || std::uncaught_exceptions() || !tl_core) return;
    for (size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].state != Slot::Free && tl_core->deferred_error.empty())
        tl_core->deferred_error =
            tl_core->where() + ": TQue (" + mem_name(mem_) + "): buffer " + std::to_string(i) + " still " +
            state_name(slots_[i].state) + " when the kernel ends (missing FreeTensor)";
  }
  void init(uint32_t off, int num, uint32_t len, Mem m) {
    mem_ = m;
    inited_ = true;
    slots_.assign(num, Slot{});
    for (int i = 0; i < num; ++i) {
      slots_[i].offset = off + i * len;
      slots_[i].bytes = len;
    }
  }
  template <class T>
  LocalTensor<T> alloc() {
    need_init("TQue::AllocTensor");
    for (auto &s : slots_)
      if (s.state == Slot::Free) {
        s.state = Slot::Allocated;
        return tensor<T>(s);
      }
    fail("TQue::AllocTensor", fmt("all ", slots_.size(), " buffers of the queue (", mem_name(mem_),
                                  ") are in use: FreeTensor before allocating again"));
  }
  template <class T>
  void enque(const LocalTensor<T> &t) {
    Slot &s = own("TQue::EnQue", t);
    if (s.state != Slot::Allocated) fail("TQue::EnQue", fmt("buffer is ", state_name(s.state), ", not freshly allocated"));
    if (static_cast<int>(fifo_.size()) >= depth_)
      fail("TQue::EnQue", fmt("queue depth ", depth_, " exceeded (", fifo_.size(), " tensors already enqueued)"));
    s.state = Slot::Queued;
    fifo_.push_back(&s);
  }
  template <class T>
  LocalTensor<T> deque() {
    need_init("TQue::DeQue");
    if (fifo_.empty()) fail("TQue::DeQue", fmt("nothing enqueued (", mem_name(mem_), " queue): DeQue without EnQue"));
    Slot *s = fifo_.front();
    fifo_.pop_front();
    s->state = Slot::Dequeued;
    return tensor<T>(*s);
  }
  template <class T>
  void free(LocalTensor<T> &t) {
    Slot &s = own("TQue::FreeTensor", t);
    if (s.state == Slot::Queued) fail("TQue::FreeTensor", "buffer is still enqueued (DeQue it first)");
    s.state = Slot::Free;
    ++s.gen;
  }
  bool VacantInQue() const {
    for (auto &s : slots_)
      if (s.state == Slot::Free) return true;
    return false;
  }
  bool HasTensorInQue() const { return !fifo_.empty(); }
  int32_t GetTensorCountInQue() const { return static_cast<int32_t>(fifo_.size()); }
  TPosition pos_;

 private:
  void need_init(const char *api) const {
    if (!inited_) fail(api, "queue used before TPipe::InitBuffer");
  }
  template <class T>
  LocalTensor<T> tensor(Slot &s) {
    LocalTensor<T> t;
    t.mem_ = mem_;
    t.off_ = s.offset;
    t.count_ = s.bytes / sizeof(T);
    t.slot_ = &s;
    t.gen_ = s.gen;
    t.valid_ = true;
    t.pos_ = pos_;
    return t;
  }
  template <class T>
  Slot &own(const char *api, const LocalTensor<T> &t) {
    need_init(api);
    for (auto &s : slots_)
      if (&s == t.slot_) {
        if (t.gen_ != s.gen) fail(api, "tensor's buffer was already freed (double FreeTensor or stale tensor)");
        return s;
      }
    fail(api, "tensor does not belong to this queue (not from its AllocTensor / DeQue)");
  }
  int depth_;
  Mem mem_ = Mem::UB;
  bool inited_ = false;
  std::vector<Slot> slots_;
  std::deque<Slot *> fifo_;
};
}  // namespace sim

template <TPosition src, TPosition dst, int32_t depth, auto mask = 0>
class TQueBind : public sim::QueBase {
 public:
  TQueBind() : QueBase(src == TPosition::GM ? dst : src, depth) {}
  template <class T>
  LocalTensor<T> AllocTensor() {
    return alloc<T>();
  }
  template <class T>
  bool EnQue(const LocalTensor<T> &t) {
    enque(t);
    return true;
  }
  template <class T>
  LocalTensor<T> DeQue() {
    return deque<T>();
  }
  template <class T>
  void FreeTensor(LocalTensor<T> &t) {
    free(t);
  }
};

template <TPosition pos, int32_t depth, auto mask = 0>
class TQue : public TQueBind<pos, pos, depth, mask> {};

template <TPosition pos = TPosition::VECCALC>
class TBuf {
 public:
  template <class T>
  LocalTensor<T> Get() const {
    return Get<T>(bytes_ / sizeof(T));
  }
  template <class T>
  LocalTensor<T> Get(uint32_t count) const {
    if (!inited_) sim::fail("TBuf::Get", "TBuf used before TPipe::InitBuffer");
    if (uint64_t(count) * sizeof(T) > bytes_)
      sim::fail("TBuf::Get", sim::fmt(count, " ", sim::type_name<T>(), " elements exceed the buffer's ", bytes_, " bytes"));
    LocalTensor<T> t;
    t.mem_ = mem_;
    t.off_ = off_;
    t.count_ = count;
    t.valid_ = true;
    t.pos_ = pos;
    return t;
  }
  template <class T>
  LocalTensor<T> GetWithOffset(uint32_t count, uint32_t byte_off) const {
    LocalTensor<T> t = Get<uint8_t>().template ReinterpretCast<T>();
    if (byte_off % 32) sim::fail("TBuf::GetWithOffset", sim::fmt("offset ", byte_off, " is not 32-byte aligned"));
    if (byte_off + uint64_t(count) * sizeof(T) > bytes_)
      sim::fail("TBuf::GetWithOffset", sim::fmt("[", byte_off, ", +", count * sizeof(T), ") exceeds the buffer's ", bytes_, " bytes"));
    t.off_ += byte_off;
    t.count_ = count;
    return t;
  }
  sim::Mem mem_ = sim::Mem::UB;
  uint32_t off_ = 0, bytes_ = 0;
  bool inited_ = false;
};

/// Owner of a core's on-chip buffers: InitBuffer carves queues and TBufs from each memory in turn.
class TPipe {
 public:
  TPipe() {
    ++sim::cur().pipes_alive;
    current() = this;
  }
  ~TPipe() {
    if (sim::tl_core) --sim::tl_core->pipes_alive;
    if (current() == this) current() = nullptr;
  }
  static TPipe *&current() {
    static thread_local TPipe *p = nullptr;
    return p;
  }
  TPipe(const TPipe &) = delete;

  template <class Q>
  bool InitBuffer(Q &que, uint8_t num, uint32_t len) {
    const char *api = "TPipe::InitBuffer";
    if (num < 1 || num > 64) sim::fail(api, sim::fmt("buffer count ", int(num), " outside 1..64"));
    if (len == 0) sim::fail(api, "buffer length 0");
    sim::Mem m = sim::mem_of(que.pos_, api);
    sim::cur().base(m, api);
    uint32_t l = (len + 31) / 32 * 32;
    uint32_t off = carve(m, uint64_t(l) * num, api, sim::fmt(int(num), " x ", len, " bytes"));
    que.init(off, num, l, m);
    return true;
  }
  template <TPosition pos>
  bool InitBuffer(TBuf<pos> &buf, uint32_t len) {
    const char *api = "TPipe::InitBuffer";
    if (len == 0) sim::fail(api, "buffer length 0");
    sim::Mem m = sim::mem_of(pos, api);
    sim::cur().base(m, api);
    uint32_t l = (len + 31) / 32 * 32;
    buf.mem_ = m;
    buf.off_ = carve(m, l, api, sim::fmt("TBuf of ", len, " bytes"));
    buf.bytes_ = l;
    buf.inited_ = true;
    return true;
  }
  void Destroy() {}
  void Reset() {
    for (auto &u : used_) u = 0;
    buffers_ = 0;
  }
  TEventID FetchEventID(HardEvent) { return 0; }
  template <HardEvent E>
  TEventID FetchEventID() {
    return 0;
  }
  template <HardEvent E>
  TEventID AllocEventID() {
    return 0;
  }
  template <HardEvent E>
  void ReleaseEventID(TEventID) {}

 private:
  uint32_t carve(sim::Mem m, uint64_t bytes, const char *api, const std::string &what) {
    uint32_t a = sim::mem_align(m);
    uint64_t &u = used_[static_cast<int>(m)];
    uint64_t off = (u + a - 1) / a * a;
    if (++buffers_ > 64) sim::fail(api, "more than 64 buffers in one TPipe");
    if (off + bytes > sim::mem_capacity(m))
      sim::fail(api, sim::fmt(what, " at offset ", off, " exceed ", sim::mem_name(m), " capacity of ",
                              sim::mem_capacity(m), " bytes (", off + bytes - sim::mem_capacity(m), " bytes over)"));
    u = off + bytes;
    return static_cast<uint32_t>(off);
  }
  uint64_t used_[static_cast<int>(sim::Mem::Count)] = {};
  int buffers_ = 0;
};

inline TPipe *GetTPipePtr() {
  if (!TPipe::current()) sim::fail("GetTPipePtr", "no TPipe constructed on this core");
  return TPipe::current();
}

}  // namespace AscendC

#endif  // ASCENDC_SIM_MEMORY_H
