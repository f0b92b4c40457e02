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
  // Dedup: files whose contents equal a stored file's share its extents
  // (checked when they are closed; small ones before they reach the
  // device), and written chunks equal to stored ones are shared (overlay
  // copy-up). Off: no content-based sharing at all (clones still share).
  bool dedup = true;
  // Online discard: what deletes free is discarded about a second after the
  // free is durable (holes in an image file, BLKDISCARD on a block device),
  // as ext4's and XFS's `discard` and btrfs's `discard=async`. Off, fstrim
  // does it on demand.
  bool discard = false;
  // Region scope: contents are only shared between files of the same
  // container region (tenants that must not share with each other).
  bool dedup_region_scope = false;
  // Files up to this size that duplicate a stored file are shared without
  // writing their data (the first write of the whole file is compared).
  std::uint64_t dedup_small_bytes = 64 << 10;
  // Whole files up to this size written from empty in one piece are packed
  // several to a block (see PackBlocks); 0: every file gets blocks of its own.
  std::uint64_t pack_small_bytes = 3 << 10;
  // A file written from empty, but not in order, is read back to be hashed
  // at close up to this size; larger ones wait for an offline `dhfsctl dedup`.
  std::uint64_t dedup_rehash_bytes = 64ULL << 20;
  // The kernel's page cache, applied by the FUSE adapter: by default dhfs
  // lets its mount hold dirty pages like a kernel filesystem does; true
  // keeps the kernel's limit for FUSE mounts (a strict 1% share of the dirty
  // threshold, meant for daemons that are not trusted to write back).
  bool strict_dirty_limit = false;
  // The kernel's read-ahead window for the mount, applied by the FUSE
  // adapter (see fuse_bdi.h for why FUSE needs a large one).
  std::uint64_t readahead_bytes = 4 << 20;
  // The FUSE adapter serves requests over io_uring where the kernel has
  // FUSE over io_uring (6.14+), turning on its enable_uring parameter if it
  // may; false: over /dev/fuse only.
  bool fuse_uring = true;
  // After replying, a ring thread keeps asking for the next request this
  // long before it sleeps: a request that comes within it costs no wake-up
  // of a sleeping thread, which on a VM's idle vCPU costs more than the
  // request itself. One thread per CPU queue does so at a time; 0: sleep at
  // once.
  std::chrono::microseconds ring_spin{200};
  // Where ring threads run (see fs/queue_load.h): kAuto on the CPU of the
  // queue they serve while it has fewer than three requests in service at
  // once, anywhere otherwise; kOn always on it; kOff anywhere.
  enum class RingPin { kAuto, kOn, kOff };
  RingPin ring_pin = RingPin::kAuto;
};

// Splits a comma-separated -o list. Options dhfs understands are applied to
// `fs`; generic mount options (ro, rw, noatime, nodev, ...) are accepted and
// either applied or forwarded in `fuse_opts` to libfuse/the kernel; options
// with no meaning here (defaults, auto, _netdev, x-systemd.*, ...) are
// dropped. Returns false with `error` for an unknown or malformed option.
bool parse_mount_options(const std::string& list, FsOptions& fs, std::vector<std::string>& fuse_opts,
                         std::string& error);

}  // namespace dhfs
