// Mount-time options of dhfs (the -o list of the dhfs command).
#pragma once

#include <chrono>
#include <optional>
#include <cstdint>
#include <string>
#include <vector>

namespace dhfs {

enum class AtimeMode { kRelatime, kNoatime, kStrictatime };

struct FsOptions {
  bool read_only = false;
  AtimeMode atime = AtimeMode::kRelatime;
  std::chrono::milliseconds commit_interval{5000};
  // A checkpoint is also written when this much time passed since the last
  // one and anything changed.
  std::chrono::seconds checkpoint_interval{300};
  // FileSystem::open starts the background threads itself unless asked not
  // to (the dhfs daemon starts them after it has forked into the background).
  bool defer_start = false;
  // Container regions (see region_policy.h); given values are persisted and
  // apply to later mounts too.
  std::optional<std::string> region_patterns;
  std::optional<std::uint64_t> region_bytes;
  // Copy-on-write unit: the first write to a shared block copies the aligned
  // unit around it, so that a file's modified parts stay contiguous
  // (4 KiB .. 1 MiB, a power of two).
  std::optional<std::uint64_t> cow_unit_bytes;
};

// Splits a comma-separated -o list. Options dhfs understands are applied to
// `fs`; generic mount options (ro, rw, noatime, nodev, ...) are accepted and
// either applied or forwarded in `fuse_opts` to libfuse/the kernel; options
// with no meaning here (defaults, auto, _netdev, x-systemd.*, ...) are
// dropped. Returns false with `error` for an unknown or malformed option.
bool parse_mount_options(const std::string& list, FsOptions& fs, std::vector<std::string>& fuse_opts,
                         std::string& error);

}  // namespace dhfs
