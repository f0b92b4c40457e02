// RangeLocks: lets small writes to different parts of one file run at the
// same time, and keeps reads from seeing them half done. A file is cut into
// 64 KiB stripes (one chunk window, see ChunkIndex); a writer holds the
// stripes its blocks fall in exclusively (with a cow_unit larger than a
// stripe, those of the whole units around its blocks: see
// FileSystem::write_range), a reader shared. Stripes are taken in slot
// order so that no two holders deadlock. Stripes of all files hash into one
// fixed table: a collision only serialises two holders that could have run
// together.
//
// Why 64 KiB and not larger: the kernel writes a file's dirty pages back in
// file order, several requests at once. Random 4 KiB overwrites of a clone
// dirty about one page in four; with 1 MiB stripes the requests in flight
// all fell into one stripe and ran one after another (see
// bench/results/2026-11-27-stripes-ab).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <shared_mutex>
#include <span>
#include <vector>

namespace dhfs {

class RangeLocks {
 public:
  static constexpr std::uint64_t kStripeBlocks = 16;

  // Blocks [first, last] of `file`, to hold shared or exclusively.
  struct Range {
    std::uint64_t file, first, last;
    bool shared;
  };

  // Holds the stripes of its ranges until destroyed. All are taken at
  // once, in slot order (a slot two ranges hash to is taken once,
  // exclusively if either wants it so): a holder never waits for a stripe
  // while it holds one that a waiter for its own might hold.
  class Guard {
   public:
    // Blocks [first, last] of `file`.
    Guard(RangeLocks& locks, std::uint64_t file, std::uint64_t first, std::uint64_t last, bool shared = false)
        : Guard(locks, {Range{file, first, last, shared}}) {}
    Guard(RangeLocks& locks, std::span<const Range> ranges) : locks_(locks) {
      for (const Range& r : ranges) {
        const std::uint64_t s0 = r.first / kStripeBlocks, s1 = r.last / kStripeBlocks;
        // A range over more stripes than the table has slots takes them all.
        if (s1 - s0 + 1 >= locks.mu_.size()) {
          for (std::size_t i = 0; i < locks.mu_.size(); ++i) slots_.push_back({i, r.shared});
        } else {
          for (std::uint64_t s = s0; s <= s1; ++s) slots_.push_back({locks.slot(r.file, s), r.shared});
        }
      }
      // By slot, exclusive first; then one entry per slot.
      std::sort(slots_.begin(), slots_.end());
      slots_.erase(std::unique(slots_.begin(), slots_.end(), [](const Slot& a, const Slot& b) { return a.i == b.i; }),
                   slots_.end());
      for (const Slot& s : slots_) s.shared ? locks_.mu_[s.i].lock_shared() : locks_.mu_[s.i].lock();
    }
    Guard(RangeLocks& locks, std::initializer_list<Range> ranges)
        : Guard(locks, std::span<const Range>(ranges.begin(), ranges.size())) {}
    ~Guard() {
      for (auto it = slots_.rbegin(); it != slots_.rend(); ++it)
        it->shared ? locks_.mu_[it->i].unlock_shared() : locks_.mu_[it->i].unlock();
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    struct Slot {
      std::size_t i;
      bool shared;
      bool operator<(const Slot& o) const { return i != o.i ? i < o.i : shared < o.shared; }
    };
    RangeLocks& locks_;
    std::vector<Slot> slots_;
  };

 private:
  // A file's stripes take consecutive slots from a place its number
  // hashes to: two ranges then collide only where their runs of slots
  // overlap, not wherever any of their stripes hashes alike. (A large
  // write holds 16 stripes of its file, and in a copy-up 16 of the source
  // too; eight such writers scattered over 1024 slots would hold 256, and
  // a 1 MiB read, 16 slots, would find one of them held 99 times in 100;
  // with runs of 16 in 8192 slots, about 6 in 100.)
  std::size_t slot(std::uint64_t file, std::uint64_t stripe) const {
    std::uint64_t h = file * 0x9E3779B97F4A7C15ULL;
    h ^= h >> 29;
    return static_cast<std::size_t>((h + stripe) % mu_.size());
  }
  std::array<std::shared_mutex, 8192> mu_;  // 448 KiB
};

}  // namespace dhfs
