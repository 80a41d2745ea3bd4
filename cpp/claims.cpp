#include "claims.hpp"

#include <algorithm>
#include <new>
#include <stdexcept>

#include "futex.hpp"
#include "wire.hpp"

namespace mps {

namespace {
constexpr uint64_t kClaimsMagic = 0x6d7073636c6d3031ULL;  // "mpsclm01"
struct ClaimHeader {
  uint64_t magic;
  uint32_t workers;
  uint32_t slots;
  uint64_t pad[6];
};
static_assert(sizeof(ClaimHeader) == 64, "sections start on a cache line");
static_assert(kClaimSlots % 8 == 0, "sections of kClaimSlots entries keep the next one cache-line aligned");
size_t section_bytes(uint32_t slots) { return sizeof(ClaimSection) + size_t(slots) * sizeof(ClaimEntry); }
size_t table_bytes(uint32_t workers, uint32_t slots) {
  return sizeof(ClaimHeader) + size_t(workers) * section_bytes(slots);
}
}  // namespace

ClaimTable::ClaimTable(FdHandle fd, Mapping map, uint32_t workers, uint32_t slots)
    : fd_(std::move(fd)), map_(std::move(map)), workers_(workers), slots_(slots) {}

std::unique_ptr<ClaimTable> ClaimTable::create(uint32_t workers, uint32_t slots) {
  if (workers == 0 || slots == 0) throw std::invalid_argument("empty claim table");
  const size_t bytes = round_up_pages(table_bytes(workers, slots));
  FdHandle fd(create_memfd("mpserver-claims", bytes));
  Mapping m = map_whole(fd.get(), bytes);
  auto* h = new (m.data()) ClaimHeader();  // zero-filled memfd: every section starts empty
  h->magic = kClaimsMagic;
  h->workers = workers;
  h->slots = slots;
  return std::unique_ptr<ClaimTable>(new ClaimTable(std::move(fd), std::move(m), workers, slots));
}

std::unique_ptr<ClaimTable> ClaimTable::attach(int raw_fd) {
  FdHandle fd(raw_fd);
  const size_t size = fd_size(fd.get());
  if (size < sizeof(ClaimHeader)) throw std::runtime_error("claim table too small");
  Mapping m = map_whole(fd.get(), size);
  auto* h = reinterpret_cast<ClaimHeader*>(m.data());
  if (h->magic != kClaimsMagic || table_bytes(h->workers, h->slots) > size)
    throw std::runtime_error("not an mpserver claim table");
  const uint32_t w = h->workers, s = h->slots;
  return std::unique_ptr<ClaimTable>(new ClaimTable(std::move(fd), std::move(m), w, s));
}

ClaimSection* ClaimTable::section(uint32_t w) const {
  if (w >= workers_) throw std::out_of_range("claim table: no such worker");
  return reinterpret_cast<ClaimSection*>(map_.data() + sizeof(ClaimHeader) +
                                         size_t(w) * section_bytes(slots_));
}

ClaimEntry* ClaimTable::entries(uint32_t w) const { return reinterpret_cast<ClaimEntry*>(section(w) + 1); }

bool ClaimTable::claim(uint32_t worker, uint64_t id, uint64_t aux, int64_t now) {
  ClaimSection* s = section(worker);
  ClaimEntry* e = entries(worker);
  const uint32_t high = s->high.load(std::memory_order_relaxed);  // only this worker writes it
  uint32_t i = high;
  if (i == slots_) {  // out of room at the end: reuse a free entry
    i = 0;
    while (i < high && e[i].used.load(std::memory_order_relaxed)) ++i;
    if (i == high) return false;
    if (i < s->low) s->low = i;
  } else {
    s->high.store(high + 1, std::memory_order_relaxed);
  }
  e[i].id = id;
  e[i].aux = aux;
  e[i].since.store(now ? now : now_ns(), std::memory_order_relaxed);
  e[i].used.store(1, std::memory_order_release);
  s->live += 1;
  return true;
}

int64_t ClaimTable::release(uint32_t worker, uint64_t id) {
  ClaimSection* s = section(worker);
  ClaimEntry* e = entries(worker);
  const uint32_t high = s->high.load(std::memory_order_relaxed);
  for (uint32_t i = s->low; i < high; ++i) {
    if (e[i].used.load(std::memory_order_relaxed) && e[i].id == id) {
      const int64_t since = e[i].since.load(std::memory_order_relaxed);
      e[i].used.store(0, std::memory_order_release);
      if (--s->live == 0) {
        s->high.store(0, std::memory_order_relaxed);
        s->low = 0;
      } else {
        while (s->low < high && !e[s->low].used.load(std::memory_order_relaxed)) ++s->low;
      }
      return since;
    }
  }
  return 0;
}

std::vector<std::pair<uint64_t, uint64_t>> ClaimTable::take(uint32_t worker) {
  ClaimSection* s = section(worker);
  ClaimEntry* e = entries(worker);
  std::vector<std::pair<uint64_t, uint64_t>> out;
  const uint32_t high = std::min(s->high.load(std::memory_order_relaxed), slots_);
  for (uint32_t i = 0; i < high; ++i) {
    if (e[i].used.load(std::memory_order_acquire)) {
      out.emplace_back(e[i].id, e[i].aux);
      e[i].used.store(0, std::memory_order_relaxed);
    }
  }
  s->live = 0;
  s->high.store(0, std::memory_order_relaxed);
  s->low = 0;
  return out;
}

uint32_t ClaimTable::held(uint32_t worker) const { return section(worker)->live; }

int64_t ClaimTable::oldest_since(uint32_t worker) const {
  const ClaimSection* s = section(worker);
  const ClaimEntry* e = entries(worker);
  const uint32_t high = std::min(s->high.load(std::memory_order_relaxed), slots_);
  int64_t oldest = 0;
  for (uint32_t i = 0; i < high; ++i) {
    if (!e[i].used.load(std::memory_order_acquire)) continue;
    const int64_t t = e[i].since.load(std::memory_order_relaxed);
    if (t != 0 && (oldest == 0 || t < oldest)) oldest = t;
  }
  return oldest;
}

}  // namespace mps
