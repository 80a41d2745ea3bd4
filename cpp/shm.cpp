#include "shm.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace mps {

namespace {
[[noreturn]] void fail(const char* what) { throw std::system_error(errno, std::generic_category(), what); }
}  // namespace

size_t page_size() {
  static const size_t p = size_t(sysconf(_SC_PAGESIZE));
  return p;
}

size_t round_up_pages(size_t n) {
  size_t p = page_size();
  return (n + p - 1) / p * p;
}

int create_memfd(const std::string& name, size_t size) {
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) fail("memfd_create");
  if (fchmod(fd, 0600) != 0 || ftruncate(fd, off_t(size)) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    fail("memfd setup");
  }
  return fd;
}

size_t fd_size(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) fail("fstat");
  return size_t(st.st_size);
}

FdHandle::~FdHandle() {
  if (fd_ >= 0) close(fd_);
}

FdHandle& FdHandle::operator=(FdHandle&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = o.release();
  }
  return *this;
}

Mapping::~Mapping() {
  if (base_) munmap(base_, len_);
}

Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    if (base_) munmap(base_, len_);
    base_ = o.base_;
    len_ = o.len_;
    o.base_ = nullptr;
    o.len_ = 0;
  }
  return *this;
}

Mapping map_mirrored(int fd, size_t header_bytes, size_t data_bytes) {
  const size_t total = header_bytes + 2 * data_bytes;
  // Reserve the whole range first so the two views land back to back.
  void* base = mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) fail("mmap reserve");
  Mapping m(base, total);
  char* b = static_cast<char*>(base);
  if (mmap(b, header_bytes + data_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) ==
      MAP_FAILED) {
    fail("mmap ring");
  }
  if (mmap(b + header_bytes + data_bytes, data_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
           off_t(header_bytes)) == MAP_FAILED) {
    fail("mmap ring mirror");
  }
  return m;
}

Mapping map_whole(int fd, size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) fail("mmap");
  return Mapping(p, bytes);
}

}  // namespace mps
