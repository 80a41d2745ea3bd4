#include "meter.hpp"

#include <new>
#include <stdexcept>
#include <string>

namespace mps {

namespace {
constexpr uint64_t kMeterMagic = 0x6d70736d74723031ULL;  // "mpsmtr01"
constexpr uint32_t kMeterVersion = 1;
size_t board_bytes(uint32_t records) {
  return sizeof(MeterBoardHeader) + size_t(records) * sizeof(MeterRecord);
}

template <size_t N>
void copy_histogram(const MeterHistogram<N>& h, std::vector<uint64_t>& out) {
  for (const auto& b : h.bucket) out.push_back(b.load(std::memory_order_relaxed));
  out.push_back(h.sum.load(std::memory_order_relaxed));
}
}  // namespace

std::unique_ptr<MeterBoard> MeterBoard::create(uint32_t records) {
  if (records == 0) throw std::invalid_argument("empty meter board");
  const size_t bytes = round_up_pages(board_bytes(records));
  FdHandle fd(create_memfd("mpserver-meter", bytes));
  Mapping m = map_whole(fd.get(), bytes);
  auto* h = new (m.data()) MeterBoardHeader();  // zero-filled memfd: every counter 0
  h->magic = kMeterMagic;
  h->records = records;
  h->version = kMeterVersion;
  return std::unique_ptr<MeterBoard>(new MeterBoard(std::move(fd), std::move(m)));
}

std::unique_ptr<MeterBoard> MeterBoard::attach(int raw_fd) {
  FdHandle fd(raw_fd);
  const size_t size = fd_size(fd.get());
  if (size < sizeof(MeterBoardHeader)) throw std::runtime_error("meter board too small");
  Mapping m = map_whole(fd.get(), size);
  auto* h = reinterpret_cast<MeterBoardHeader*>(m.data());
  if (h->magic != kMeterMagic || h->version != kMeterVersion || board_bytes(h->records) > size)
    throw std::runtime_error("not an mpserver meter board (or one of another version)");
  return std::unique_ptr<MeterBoard>(new MeterBoard(std::move(fd), std::move(m)));
}

MeterRecord& MeterBoard::record(uint32_t i) const {
  if (i >= records()) throw std::out_of_range("no meter record " + std::to_string(i));
  return reinterpret_cast<MeterRecord*>(map_.data() + sizeof(MeterBoardHeader))[i];
}

std::vector<uint64_t> MeterBoard::read(uint32_t i) const {
  const MeterRecord& r = record(i);
  std::vector<uint64_t> out;
  out.reserve(kRecordWords);
  for (const auto& c : r.own) out.push_back(c.load(std::memory_order_relaxed));
  for (const auto& c : r.kept) out.push_back(c.load(std::memory_order_relaxed));
  copy_histogram(r.sizes, out);
  copy_histogram(r.waits, out);
  copy_histogram(r.times, out);
  return out;
}

}  // namespace mps
