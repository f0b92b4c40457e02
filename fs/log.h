// log: the daemon's messages about trouble it meets while it serves (a
// device write that failed, a commit that cannot be made durable, a
// checkpoint that cannot be written). An application only sees EIO or
// ENOSPC; the operator needs to learn what happened and where, and ext4
// would say so in the kernel log. Messages go to stderr (a daemon in the
// foreground, also under systemd, whose journal takes its stderr) until the
// daemon goes to the background, whose stderr is /dev/null; from then on to
// syslog (facility daemon, ident "dhfs"), where an operator looks for them.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string_view>

namespace dhfs::log {

enum class Level { kError, kWarning, kInfo };

// One line, without "dhfs: " and without a newline.
void write(Level level, std::string_view line);

template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kError, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warning(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kWarning, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kInfo, fmt::format(f, std::forward<Args>(args)...));
}

// From now on messages go to syslog (the daemon has gone to the background).
void to_syslog();

// While it lives, every message goes to `sink` instead (tests).
class Capture {
 public:
  explicit Capture(std::function<void(Level, std::string_view)> sink);
  ~Capture();
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;
};

// Lets through at most one message per interval, so that a device that
// fails every request does not flood the log; the next message that is let
// through says how many were held back.
class Throttle {
 public:
  explicit Throttle(std::chrono::steady_clock::duration interval) : interval_(interval) {}
  // True if a message may be written `now`; then `held_back` is how many
  // were not since the last one.
  bool allow(std::uint64_t& held_back,
             std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

 private:
  std::mutex mu_;
  std::chrono::steady_clock::duration interval_;
  std::chrono::steady_clock::time_point last_{};
  bool any_ = false;
  std::uint64_t held_back_ = 0;
};

}  // namespace dhfs::log
