#include "fs/options.h"

#include "alloc/extent.h"
#include "fs/region_policy.h"
#include "fs/units.h"

#include <charconv>
#include <fmt/format.h>
#include <set>
#include <string_view>

namespace dhfs {

namespace {

// Generic mount options that libfuse turns into mount flags or FUSE mount
// options itself.
const std::set<std::string_view> kForwarded = {
    "rw",    "suid", "nosuid", "dev",         "nodev",         "exec",    "noexec",
    "async", "sync", "dirsync", "allow_other", "auto_unmount", "blkdev",
};

// Accepted for fstab/mount(8) compatibility, meaningless here (the kernel
// applies relatime semantics itself or dhfs implements the atime policy).
const std::set<std::string_view> kIgnored = {
    "defaults", "auto",     "noauto",   "user",        "nouser",   "users",    "owner",
    "group",    "_netdev",  "nofail",   "diratime",    "nodiratime", "lazytime", "nolazytime",
    "silent",   "loud",     "iversion", "noiversion",  "default_permissions",
};

bool parse_uint(std::string_view s, std::uint64_t& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

// `key=on` or `key=off` into `flag`; false with `error` for anything else.
bool parse_on_off(std::string_view opt, std::string_view key, std::string_view val, bool& flag,
                  std::string& error) {
  if (val != "on" && val != "off") {
    error = fmt::format("option '{}': {} is 'on' or 'off'", opt, key);
    return false;
  }
  flag = val == "on";
  return true;
}

}  // namespace

bool parse_mount_options(const std::string& list, FsOptions& fs, std::vector<std::string>& fuse_opts,
                         std::string& error) {
  std::string_view rest = list;
  while (!rest.empty()) {
    std::size_t comma = rest.find(',');
    std::string_view opt = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    if (opt.empty()) continue;
    std::size_t eq = opt.find('=');
    std::string_view key = opt.substr(0, eq);
    std::string_view val = eq == std::string_view::npos ? std::string_view{} : opt.substr(eq + 1);

    if (kForwarded.count(opt)) {
      fuse_opts.emplace_back(opt);
    } else if (kIgnored.count(opt) || key.starts_with("x-") || key == "comment") {
      continue;
    } else if (opt == "ro") {
      fs.read_only = true;
      fuse_opts.emplace_back("ro");
    } else if (opt == "noatime") {
      fs.atime = AtimeMode::kNoatime;
      fuse_opts.emplace_back("noatime");
    } else if (opt == "relatime" || opt == "atime" || opt == "norelatime" || opt == "nostrictatime") {
      fs.atime = AtimeMode::kRelatime;
    } else if (opt == "strictatime") {
      fs.atime = AtimeMode::kStrictatime;
    } else if (opt == "discard" || opt == "nodiscard") {
      fs.discard = opt == "discard";
    } else if (key == "fsname" || key == "subtype" || key == "max_read") {
      fuse_opts.emplace_back(opt);
    } else if (key == "commit") {
      std::uint64_t s;
      if (!parse_uint(val, s) || s == 0 || s > 3600) {
        error = fmt::format("option '{}': commit interval must be 1..3600 seconds", opt);
        return false;
      }
      fs.commit_interval = std::chrono::seconds(s);
    } else if (key == "region_patterns") {
      std::string why;
      if (!RegionPolicy::parse(val, why)) {
        error = fmt::format("option '{}': {}", opt, why);
        return false;
      }
      fs.region_patterns = std::string(val);
    } else if (key == "region_size") {
      auto bytes = parse_size(val);
      if (!bytes || *bytes < kBlockSize || *bytes > (1ULL << 40)) {
        error = fmt::format("option '{}': region size must be between 4K and 1T", opt);
        return false;
      }
      fs.region_bytes = *bytes;
    } else if (key == "cow_unit") {
      auto bytes = parse_size(val);
      if (!bytes || *bytes < kBlockSize || *bytes > (1ULL << 20) || (*bytes & (*bytes - 1))) {
        error = fmt::format("option '{}': copy-on-write unit must be a power of two from 4K to 1M", opt);
        return false;
      }
      fs.cow_unit_bytes = *bytes;
    } else if (key == "dedup") {
      if (!parse_on_off(opt, key, val, fs.dedup, error)) return false;
    } else if (key == "dedup_scope") {
      if (val != "global" && val != "region") {
        error = fmt::format("option '{}': dedup scope is 'global' or 'region'", opt);
        return false;
      }
      fs.dedup_region_scope = val == "region";
    } else if (key == "fuse_uring") {
      if (!parse_on_off(opt, key, val, fs.fuse_uring, error)) return false;
    } else if (key == "ring_spin") {
      std::uint64_t us;
      if (!parse_uint(val, us) || us > 1000) {
        error = fmt::format("option '{}': ring_spin is 0 to 1000 microseconds", opt);
        return false;
      }
      fs.ring_spin = std::chrono::microseconds(us);
    } else if (key == "ring_pin") {
      if (val == "auto") fs.ring_pin = FsOptions::RingPin::kAuto;
      else if (val == "on") fs.ring_pin = FsOptions::RingPin::kOn;
      else if (val == "off") fs.ring_pin = FsOptions::RingPin::kOff;
      else {
        error = fmt::format("option '{}': ring_pin is 'auto', 'on' or 'off'", opt);
        return false;
      }
    } else if (key == "readahead") {
      auto bytes = parse_size(val);
      if (!bytes || *bytes < (128 << 10) || *bytes > (256ULL << 20)) {
        error = fmt::format("option '{}': read-ahead must be between 128K and 256M", opt);
        return false;
      }
      fs.readahead_bytes = *bytes;
    } else if (opt == "strict_dirty_limit") {
      fs.strict_dirty_limit = true;
    } else if (key == "dedup_small") {
      auto bytes = parse_size(val);
      if (!bytes || *bytes > (8ULL << 20)) {
        error = fmt::format("option '{}': small-file dedup limit must be at most 8M", opt);
        return false;
      }
      fs.dedup_small_bytes = *bytes;
    } else if (key == "pack_small") {
      auto bytes = parse_size(val);
      if (!bytes || *bytes >= kBlockSize) {
        error = fmt::format("option '{}': small files are packed up to at most 4095 bytes (0: off)", opt);
        return false;
      }
      fs.pack_small_bytes = *bytes;
    } else if (key == "checkpoint_interval") {
      std::uint64_t s;
      if (!parse_uint(val, s) || s == 0) {
        error = fmt::format("option '{}': checkpoint interval must be a positive number of seconds", opt);
        return false;
      }
      fs.checkpoint_interval = std::chrono::seconds(s);
    } else {
      error = fmt::format("unknown mount option '{}'", opt);
      return false;
    }
  }
  return true;
}

}  // namespace dhfs
