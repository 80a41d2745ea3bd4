#include "guardian.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>

#include "chunk.hpp"
#include "exit_text.hpp"
#include "futex.hpp"
#include "message_buffer.hpp"
#include "quiet_thread.hpp"
#include "wire.hpp"

namespace mps {

namespace {
constexpr char kSep = '\x1f';

std::string seconds(int64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", double(ns) / 1e9);
  return buf;
}

// Keeps `next` the earliest of the rounds a limit of `limit_ns` needs.
void tick(int64_t now, int64_t limit_ns, int64_t* next) {
  constexpr int64_t kMaxTick = 250'000'000, kMinTick = 1'000'000;
  const int64_t at = now + std::clamp<int64_t>(limit_ns / 4, kMinTick, kMaxTick);
  if (*next == 0 || at < *next) *next = at;
}

std::string items(size_t n) { return std::to_string(n) + (n == 1 ? " item" : " items"); }

void push_errors(Ring& out, const std::vector<std::pair<uint64_t, uint64_t>>& items,
                 const std::string& payload) {
  if (items.empty()) return;
  Slice sl{payload.data(), payload.size()};
  std::vector<OutMessage> msgs;
  msgs.reserve(items.size());
  for (auto [id, aux] : items) msgs.push_back(OutMessage{id, kFlagError | kFlagCrash, aux, &sl, 1});
  (void)out.push(msgs.data(), msgs.size(), kForever);  // closed ring: the server is going away
}
}  // namespace

Guardian::Guardian(Supervisor& sup) : sup_(sup) {}

Guardian::~Guardian() {
  // First: no exit hook call may be running or start after this line.
  sup_.set_on_exit(nullptr);
  {
    std::lock_guard<std::mutex> lk(mu_);
    quit_ = true;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto& e : entries_) {
    if (e->failer.joinable()) {
      e->s.input->abort();  // the owner normally closed it already
      e->failer.join();
    }
  }
}

uint32_t Guardian::add(GuardedServlet s) {
  auto e = std::make_unique<Ward>();
  e->live = 0;
  e->killed_for.assign(s.names.size(), std::string());
  e->idle_since.assign(s.names.size(), 0);
  if (s.kind == WorkerKind::thread) e->live = uint32_t(s.names.size());
  for (pid_t p : s.pids) e->live += p > 0;
  e->s = std::move(s);
  std::lock_guard<std::mutex> lk(mu_);
  entries_.push_back(std::move(e));
  return uint32_t(entries_.size() - 1);
}

void Guardian::start() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (started_) return;
    started_ = true;
  }
  sup_.set_on_exit([this](pid_t pid, int status) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      exits_.emplace_back(pid, status);
    }
    cv_.notify_all();
  });
  // Exits that happened before the hook was installed.
  std::vector<std::pair<pid_t, int>> early;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& e : entries_)
      for (pid_t p : e->s.pids) {
        int st = 0;
        if (p > 0 && sup_.has_exited(p, &st)) early.emplace_back(p, st);
      }
    for (auto& x : early) exits_.push_back(x);
  }
  thread_ = start_quiet_thread([this] { run(); });
}

void Guardian::stop(int64_t grace_ns) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
    if (grace_ns > 0) {
      stop_started_ = now_ns();
      stop_grace_ns_ = grace_ns;
      rewatch_ = true;
    }
  }
  cv_.notify_all();  // the watchdog's ticks may change
}

bool Guardian::wait_idle(int64_t deadline_ns) {
  std::unique_lock<std::mutex> lk(mu_);
  auto idle = [&] { return !started_ || quit_ || (exits_.empty() && !handling_); };
  if (deadline_ns == kForever) {
    idle_cv_.wait(lk, idle);
    return true;
  }
  return idle_cv_.wait_until(lk, std::chrono::steady_clock::time_point(std::chrono::nanoseconds(deadline_ns)),
                             idle);
}

std::vector<std::string> Guardian::stop_kills() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stop_kills_;
}

Guardian::Info Guardian::info(uint32_t servlet) const {
  std::lock_guard<std::mutex> lk(mu_);
  Info i;
  if (servlet >= entries_.size()) return i;
  const Ward& e = *entries_[servlet];
  i.restarts = e.restarts;
  i.crashes = e.crashes;
  i.pids = e.s.pids;
  i.failed = e.failed;
  i.overdue_kills = e.overdue_kills;
  return i;
}

bool Guardian::serving() const {
  std::lock_guard<std::mutex> lk(mu_);
  if (stopping_) return false;
  for (const auto& e : entries_)
    if (e->failed || e->live == 0) return false;
  return true;
}

std::string Guardian::crash_payload(const char* kind, const GuardedServlet& s, uint32_t index, pid_t pid,
                                    int status, const std::string& note) {
  std::string p = kind;
  p += kSep;
  p += s.label;
  p += kSep;
  p += index < s.names.size() ? s.names[index] : std::string();
  p += kSep;
  p += std::to_string(index);
  p += kSep;
  p += std::to_string(pid);
  p += kSep;
  p += std::to_string(status);
  p += kSep;
  p += note;
  return p;
}

void Guardian::run() {
  std::unique_lock<std::mutex> lk(mu_);
  // When the watchdog's next round is due; 0: never (no servlet has an
  // item_timeout).  The first round runs at once and tells.
  int64_t next_watch = 1;
  for (;;) {
    auto ready = [&] { return quit_ || !exits_.empty() || rewatch_; };
    if (next_watch == 0) {
      cv_.wait(lk, ready);
    } else {
      // steady_clock and now_ns() are both CLOCK_MONOTONIC.
      cv_.wait_until(lk, std::chrono::steady_clock::time_point(std::chrono::nanoseconds(next_watch)), ready);
    }
    if (quit_) return;
    if (rewatch_) {  // limits changed (the stop grace began): a round now
      rewatch_ = false;
      next_watch = 1;
    }
    if (!exits_.empty()) {
      auto [pid, status] = exits_.front();
      exits_.pop_front();
      handling_ = true;
      lk.unlock();
      try {
        handle(pid, status);
      } catch (const std::exception&) {
        // A ring of that servlet is corrupt or a spawn failed: leave this
        // worker dead (its items fail by their timeouts) but keep guarding.
      }
      lk.lock();
      handling_ = false;
      if (exits_.empty()) idle_cv_.notify_all();
    }
    if (next_watch != 0 && now_ns() >= next_watch) {
      lk.unlock();
      next_watch = watch();
      lk.lock();
    }
  }
}

Guardian::Stuck Guardian::stuck_locked(Ward& e, uint32_t i, int64_t now, int64_t* next) {
  const int64_t since = e.s.claims ? e.s.claims->oldest_since(i) : 0;
  const int64_t limit = e.s.item_timeout_ns;
  if (limit > 0) {
    tick(now, limit, next);
    if (since != 0 && now - since > limit) return Stuck::item_timeout;
  }
  const int64_t grace = stop_grace_ns_;
  if (grace <= 0) return Stuck::no;
  tick(now, grace, next);
  if (since != 0) {
    e.idle_since[i] = 0;
    return now - std::max(since, stop_started_) > grace ? Stuck::busy_at_stop : Stuck::no;
  }
  if (!e.s.input->finished()) return Stuck::no;
  if (e.idle_since[i] == 0) e.idle_since[i] = now;
  return now - e.idle_since[i] > grace ? Stuck::lingering_at_stop : Stuck::no;
}

std::string Guardian::stuck_reason(const Ward& e, Stuck why) const {
  switch (why) {
    case Stuck::item_timeout:
      return "held this item for longer than its servlet's item_timeout of " + seconds(e.s.item_timeout_ns) +
             " seconds";
    case Stuck::busy_at_stop:
      return "was still processing this item " + seconds(stop_grace_ns_) +
             " seconds after the server began to stop (stop_grace)";
    case Stuck::lingering_at_stop:
      return "had no work left but did not exit within " + seconds(stop_grace_ns_) +
             " seconds (stop_grace; a non-daemon thread?)";
    case Stuck::no:
      break;
  }
  return {};
}

std::string Guardian::thread_stuck(uint32_t servlet, uint32_t index) {
  std::lock_guard<std::mutex> lk(mu_);
  if (servlet >= entries_.size() || entries_[servlet]->s.kind != WorkerKind::thread ||
      index >= entries_[servlet]->s.names.size())
    throw std::out_of_range("no such thread worker");
  Ward& e = *entries_[servlet];
  int64_t next = 0;
  return stuck_reason(e, stuck_locked(e, index, now_ns(), &next));
}

int64_t Guardian::watch() {
  const int64_t now = now_ns();
  int64_t next = 0;
  std::vector<pid_t> victims;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& e : entries_) {
      if (e->s.kind != WorkerKind::process) continue;
      for (uint32_t i = 0; i < e->s.pids.size(); ++i) {
        if (e->s.pids[i] <= 0 || !e->killed_for[i].empty()) continue;
        const Stuck why = stuck_locked(*e, i, now, &next);
        if (why == Stuck::no) continue;
        e->killed_for[i] = stuck_reason(*e, why) + ", so mpserver killed it";
        if (why == Stuck::item_timeout) {
          e->overdue_kills += 1;
          if (MeterRecord* rec = record_of(*e, i)) bump(rec->kept[kKeptKilled]);
        } else {
          stop_kills_.push_back("worker process " + e->s.names[i] + " (pid " + std::to_string(e->s.pids[i]) +
                                ") of " + e->s.label + " " + e->killed_for[i]);
        }
        victims.push_back(e->s.pids[i]);
      }
    }
  }
  for (pid_t pid : victims)
    sup_.kill(pid, SIGKILL);  // its exit comes back through handle(), which reports it
  return next;
}

size_t Guardian::fail_claims(Ward& e, uint32_t index, const std::string& payload) {
  auto held = e.s.claims ? e.s.claims->take(index) : std::vector<std::pair<uint64_t, uint64_t>>{};
  push_errors(*e.s.output, held, payload);
  return held.size();
}

MeterRecord* Guardian::record_of(const Ward& e, uint32_t index) {
  if (!e.s.meter || index >= e.s.records.size()) return nullptr;
  return &e.s.meter->record(e.s.records[index]);
}

void Guardian::event(const char* level, const std::string& text) {
  if (!events_) return;
  const std::string payload = std::string(level) + kSep + text;
  Slice sl{payload.data(), payload.size()};
  OutMessage m{0, kFlagControl, uint64_t(Control::event), &sl, 1};
  (void)events_->try_push(&m, 1);  // a full ring drops the event: the guardian never waits on logging
}

bool Guardian::spend_restart_locked(Ward& e) {
  e.crashes += 1;
  const int64_t now = now_ns();
  while (!e.restart_times.empty() && now - e.restart_times.front() > e.s.window_ns)
    e.restart_times.pop_front();
  if (stopping_ || e.s.input->closed() || e.restart_times.size() >= e.s.max_restarts) return false;
  e.restart_times.push_back(now);
  e.restarts += 1;
  return true;
}

bool Guardian::lose_worker_locked(Ward& e) {
  e.live -= 1;
  if (e.live == 0 && !e.failed && !stopping_ && !e.s.input->closed()) {
    e.failed = true;
    return true;
  }
  return false;
}

void Guardian::start_failer(Ward* e) {
  event("ERROR", e->s.label + " has no live worker left and its restart budget is spent (max_restarts=" +
                     std::to_string(e->s.max_restarts) + " within " + seconds(e->s.window_ns) +
                     " seconds): every item sent to it now fails with WorkerCrashedError");
  e->failer = start_quiet_thread([this, e] { run_failer(e); });
}

void Guardian::handle(pid_t pid, int status) {
  Ward* e = nullptr;
  uint32_t index = 0;
  std::string killed_for;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& cand : entries_) {
      if (cand->s.kind != WorkerKind::process) continue;
      for (uint32_t i = 0; i < cand->s.pids.size(); ++i) {
        if (cand->s.pids[i] == pid) {
          e = cand.get();
          index = i;
        }
      }
    }
    if (!e) return;  // not ours, or already handled
    e->s.pids[index] = 0;
    killed_for = std::move(e->killed_for[index]);
    e->killed_for[index].clear();
    e->idle_since[index] = 0;
  }
  // 1. Locks it held.
  e->s.input->recover_consumer(pid);
  e->s.output->recover_producer(pid);
  if (e->s.control) e->s.control->recover_producer(pid);
  const bool orderly = e->s.input->closed() && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  // 2. Items it held.
  const size_t held =
      fail_claims(*e, index,
                  crash_payload("process", e->s, index, pid, status,
                                killed_for.empty() ? "died while processing this item" : killed_for));
  MeterRecord* rec = record_of(*e, index);
  if (rec) set(rec->own[kWorkerPid], 0);  // its owner is gone: nobody else writes it now
  if (orderly) {
    std::lock_guard<std::mutex> lk(mu_);
    e->live -= 1;
    return;
  }
  const std::string who =
      "worker process " + e->s.names[index] + " (pid " + std::to_string(pid) + ") of " + e->s.label;
  event("WARNING", who + " " + describe_exit(status) +
                       (killed_for.empty() ? "" : " (it " + killed_for + ")") + "; the " + items(held) +
                       " it held failed with WorkerCrashedError");
  // 3. Respawn, within budget.
  bool respawn;
  {
    std::lock_guard<std::mutex> lk(mu_);
    respawn = spend_restart_locked(*e);
    if (rec) bump(rec->kept[kKeptCrashes]);
    if (rec && respawn) bump(rec->kept[kKeptRestarts]);
  }
  pid_t fresh = 0;
  if (respawn) {
    try {
      fresh = sup_.spawn({e->s.specs[index]})[0];
    } catch (const std::exception&) {
      fresh = 0;
    }
    if (e->s.control && !events_) {  // discard readiness reports nobody waits for
      BufferSink sink;
      e->s.control->try_consume(SIZE_MAX, sink);
    }
  }
  bool failer = false, abandoned = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (fresh > 0) {
      e->s.pids[index] = fresh;
    } else {
      failer = lose_worker_locked(*e);
      abandoned = stopping_ && e->live == 0;
    }
  }
  // Stopping, and nobody is left to read this servlet's input: whoever is
  // blocked pushing into it must not wait forever (what is left in it is
  // failed by the server's teardown).
  if (abandoned) e->s.input->abort();
  if (fresh > 0) {
    event("INFO", "restarted worker process " + e->s.names[index] + " of " + e->s.label + " as pid " +
                      std::to_string(fresh));
  } else if (respawn) {
    event("ERROR", "could not restart worker process " + e->s.names[index] + " of " + e->s.label);
  }
  if (fresh > 0) {
    int st = 0;
    if (sup_.has_exited(fresh, &st)) handle(fresh, st);  // died before we recorded it
  }
  if (failer) start_failer(e);
}

bool Guardian::thread_stopped(uint32_t servlet, uint32_t index, const std::string& cause) {
  Ward* e;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (servlet >= entries_.size() || entries_[servlet]->s.kind != WorkerKind::thread)
      throw std::out_of_range("no such thread servlet");
    e = entries_[servlet].get();
  }
  const size_t held = fail_claims(
      *e, index,
      crash_payload("thread", e->s, index, 0, -1, "was stopped by " + cause + " while processing this item"));
  bool again, failer = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    again = spend_restart_locked(*e);
    if (!again) failer = lose_worker_locked(*e);
    if (MeterRecord* rec = record_of(*e, index)) {
      bump(rec->kept[kKeptCrashes]);
      if (again) bump(rec->kept[kKeptRestarts]);
    }
  }
  event("WARNING", "worker thread " + e->s.names[index] + " of " + e->s.label + " was stopped by " + cause +
                       "; the " + items(held) + " it held failed with WorkerCrashedError" +
                       (again ? "; it starts over with a fresh worker" : ""));
  if (failer) start_failer(e);
  return again;
}

void Guardian::thread_lost(uint32_t servlet, uint32_t index) {
  (void)index;
  Ward* e;
  bool failer;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (servlet >= entries_.size() || entries_[servlet]->s.kind != WorkerKind::thread)
      throw std::out_of_range("no such thread servlet");
    e = entries_[servlet].get();
    failer = lose_worker_locked(*e);
  }
  if (failer) start_failer(e);
}

void Guardian::run_failer(Ward* e) {
  const std::string payload =
      crash_payload("servlet", e->s, 0, 0, -1, "has no live worker left (restart budget spent)");
  std::vector<std::pair<uint64_t, uint64_t>> items;
  MessageRelay* relay = e->s.relay;
  for_each_batch(*e->s.input, 256, [&](std::vector<OwnedMessage>& msgs) {
    items.clear();
    for (auto& m : msgs) {
      if (m.flags & kFlagError) {  // an upstream error goes on unchanged
        if (relay) relay->pass_on(m);
        Slice sl{m.payload.data(), m.payload.size()};
        OutMessage om{m.id, m.flags, m.aux, &sl, 1};
        (void)e->s.output->push(&om, 1, kForever);
      } else if (m.flags & kFlagChunk) {  // every item of a chunk fails on its own
        const ChunkView v = parse_chunk(m.payload.data(), m.payload.size());
        for (uint32_t i = 0; i < v.count; ++i) items.emplace_back(v.token(i), m.aux);
      } else {
        if (relay) relay->drop(m);
        items.emplace_back(m.id, m.aux);
      }
    }
    push_errors(*e->s.output, items, payload);
  });
}

}  // namespace mps
