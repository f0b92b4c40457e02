// RequestStats: how many FUSE requests of each kind the daemon answered and
// how long each kind took, from reading the request to handing over its
// reply, for `dhfsctl requests`.
//
// Why: every file a container image extracts costs about ten requests, and
// whether their time goes to the daemon or to the trip through the kernel
// decides what to tune. The wall time of a job divided by its requests,
// against the daemon's own time per request below, tells the two apart.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace dhfs {

class RequestStats {
 public:
  // FUSE opcodes are below 64 (CUSE_INIT, 4096, is not counted).
  static constexpr std::size_t kOpcodes = 64;

  struct Kind {
    std::uint64_t count = 0;
    std::uint64_t total_ns = 0;  // time the daemon spent, summed
    std::uint64_t max_ns = 0;
  };

  // Counts one request of `opcode` that took `ns` (0 for one without a
  // reply, such as FORGET). Safe from any number of threads.
  void record(std::uint32_t opcode, std::uint64_t ns);

  std::array<Kind, kOpcodes> snapshot() const;

 private:
  struct Counter {
    std::atomic<std::uint64_t> count{0};
    std::atomic<std::uint64_t> total_ns{0};
    std::atomic<std::uint64_t> max_ns{0};
  };
  std::array<Counter, kOpcodes> kinds_{};
};

}  // namespace dhfs
