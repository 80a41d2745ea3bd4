#include "cancel_board.hpp"

#include <new>
#include <stdexcept>

namespace mps {

namespace {
constexpr uint64_t kBoardMagic = 0x6d7073636e6c3031ULL;  // "mpscnl01"
size_t board_bytes(uint32_t slots) { return sizeof(CancelBoardHeader) + size_t(slots) * sizeof(uint64_t); }
}  // namespace

std::unique_ptr<CancelBoard> CancelBoard::create(uint32_t slots) {
  if (slots == 0) throw std::invalid_argument("empty cancel board");
  const size_t bytes = round_up_pages(board_bytes(slots));
  FdHandle fd(create_memfd("mpserver-cancel", bytes));
  Mapping m = map_whole(fd.get(), bytes);
  auto* h = new (m.data()) CancelBoardHeader();  // zero-filled memfd: nothing abandoned
  h->magic = kBoardMagic;
  h->slots = slots;
  return std::unique_ptr<CancelBoard>(new CancelBoard(std::move(fd), std::move(m)));
}

std::unique_ptr<CancelBoard> CancelBoard::attach(int raw_fd) {
  FdHandle fd(raw_fd);
  const size_t size = fd_size(fd.get());
  if (size < sizeof(CancelBoardHeader)) throw std::runtime_error("cancel board too small");
  Mapping m = map_whole(fd.get(), size);
  auto* h = reinterpret_cast<CancelBoardHeader*>(m.data());
  if (h->magic != kBoardMagic || board_bytes(h->slots) > size)
    throw std::runtime_error("not an mpserver cancel board");
  return std::unique_ptr<CancelBoard>(new CancelBoard(std::move(fd), std::move(m)));
}

}  // namespace mps
