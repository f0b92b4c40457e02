#include "fs/log.h"

#include <syslog.h>

#include <cstdio>
#include <string>

namespace dhfs::log {

namespace {

enum class Destination { kStderr, kSyslog };

struct State {
  std::mutex mu;
  Destination destination = Destination::kStderr;
  std::function<void(Level, std::string_view)> capture;
};

State& state() {
  static State s;
  return s;
}

int syslog_priority(Level level) {
  switch (level) {
    case Level::kError: return LOG_ERR;
    case Level::kWarning: return LOG_WARNING;
    case Level::kInfo: return LOG_INFO;
  }
  return LOG_ERR;
}

}  // namespace

void write(Level level, std::string_view line) {
  State& s = state();
  std::lock_guard lk(s.mu);
  if (s.capture) {
    s.capture(level, line);
  } else if (s.destination == Destination::kSyslog) {
    ::syslog(syslog_priority(level), "%.*s", static_cast<int>(line.size()), line.data());
  } else {
    const std::string text = fmt::format("dhfs: {}\n", line);
    std::fwrite(text.data(), 1, text.size(), stderr);
  }
}

void to_syslog() {
  State& s = state();
  std::lock_guard lk(s.mu);
  ::openlog("dhfs", LOG_PID | LOG_NDELAY, LOG_DAEMON);
  s.destination = Destination::kSyslog;
}

Capture::Capture(std::function<void(Level, std::string_view)> sink) {
  std::lock_guard lk(state().mu);
  state().capture = std::move(sink);
}

Capture::~Capture() {
  std::lock_guard lk(state().mu);
  state().capture = nullptr;
}

bool Throttle::allow(std::uint64_t& held_back, std::chrono::steady_clock::time_point now) {
  std::lock_guard lk(mu_);
  if (any_ && now - last_ < interval_) {
    ++held_back_;
    return false;
  }
  any_ = true;
  last_ = now;
  held_back = held_back_;
  held_back_ = 0;
  return true;
}

}  // namespace dhfs::log
