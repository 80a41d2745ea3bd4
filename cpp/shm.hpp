// shm.hpp — anonymous shared memory (memfd) and the mirrored ring mapping.
//
// Invariants
//   * Every shared region is a memfd: it has no name in /dev/shm, so nothing
//     is left behind after any exit, and only processes that hold the fd (the
//     parent and the workers it hands the fd to) can map it.  The fd is
//     created close-on-exec and mode 0600.
//   * A ring region is [header: header_bytes][data: data_bytes], both page
//     multiples.  map_mirrored() maps the data part twice back to back, so a
//     frame that wraps past the end of the data area is still contiguous in
//     virtual memory: readers and writers never split a copy at the wrap.
//   * A Mapping owns its virtual range and unmaps it on destruction; it never
//     owns the fd (FdHandle does).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mps {

size_t page_size();
size_t round_up_pages(size_t n);

// Creates a memfd of the given size; throws std::system_error on failure.
int create_memfd(const std::string& name, size_t size);

// Size of the object behind fd (fstat); throws on failure.
size_t fd_size(int fd);

class FdHandle {
 public:
  FdHandle() = default;
  explicit FdHandle(int fd) : fd_(fd) {}
  ~FdHandle();
  FdHandle(FdHandle&& o) noexcept : fd_(o.release()) {}
  FdHandle& operator=(FdHandle&& o) noexcept;
  FdHandle(const FdHandle&) = delete;
  FdHandle& operator=(const FdHandle&) = delete;
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_ = -1;
};

class Mapping {
 public:
  Mapping() = default;
  Mapping(void* base, size_t len) : base_(base), len_(len) {}
  ~Mapping();
  Mapping(Mapping&& o) noexcept : base_(o.base_), len_(o.len_) {
    o.base_ = nullptr;
    o.len_ = 0;
  }
  Mapping& operator=(Mapping&& o) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  char* data() const { return static_cast<char*>(base_); }

 private:
  void* base_ = nullptr;
  size_t len_ = 0;
};

// Maps [0, header_bytes + data_bytes) of fd, followed by a second view of the
// data part.  Both sizes must be page multiples.
Mapping map_mirrored(int fd, size_t header_bytes, size_t data_bytes);

// Maps the whole fd once (read/write, shared).
Mapping map_whole(int fd, size_t bytes);

}  // namespace mps
