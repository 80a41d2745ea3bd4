#include "bytes_pool.hpp"

#include "../cpp/wire.hpp"
#include "payload.hpp"

namespace mpb {

using namespace mps;

char* BytesPool::acquire(uint32_t flags, uint64_t total, uint32_t* slot_flags, std::string* slot_payload) {
  if ((flags & (kFlagRaw | kFlagObject | kFlagEnsemble | kFlagError)) != kFlagRaw) return nullptr;
  PyObject* o = nullptr;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (size_t i = 0; i < free_.size(); ++i) {
      const uint64_t size = uint64_t(PyBytes_GET_SIZE(free_[i]));
      if (size >= total && size - total <= size / 8) {
        o = free_[i];
        free_[i] = free_.back();
        free_.pop_back();
        bytes_ -= size_t(size);
        break;
      }
    }
    if (!o) return nullptr;
  }
  Py_SET_SIZE(o, Py_ssize_t(total));
  PyBytes_AS_STRING(o)[total] = '\0';
  *slot_flags = flags | kFlagObject;
  slot_payload->assign(reinterpret_cast<const char*>(&o), sizeof o);
  return PyBytes_AS_STRING(o);
}

void BytesPool::abandon(uint32_t slot_flags, const std::string& slot_payload) {
  dispose_message(slot_flags, slot_payload, 1);
}

void BytesPool::taken(size_t size, bool missed) {
  const size_t want = missed ? 2 : 1;
  for (size_t k = 0; k < want; ++k) {
    PyObject* o = PyBytes_FromStringAndSize(nullptr, Py_ssize_t(size));
    if (!o) {
      PyErr_Clear();
      return;
    }
    PyObject* evicted = nullptr;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (free_.size() >= kMaxObjects || bytes_ + size > kMaxBytes) {
        if (free_.empty()) {
          evicted = o;  // larger than the whole budget
        } else {
          evicted = free_.front();
          free_.erase(free_.begin());
          bytes_ -= size_t(PyBytes_GET_SIZE(evicted));
        }
      }
      if (evicted != o) {
        free_.push_back(o);
        bytes_ += size;
      }
    }
    Py_XDECREF(evicted);
  }
}

void BytesPool::clear() {
  std::vector<PyObject*> objs;
  {
    std::lock_guard<std::mutex> lk(mu_);
    objs.swap(free_);
    bytes_ = 0;
  }
  for (PyObject* o : objs) Py_DECREF(o);
}

}  // namespace mpb
