// RangeLocks: lets small writes to different parts of one file run at the
// same time, and keeps reads from seeing them half done. A file is cut into
// 1 MiB stripes (the largest cow_unit, so a copy-on-write unit never spans
// two stripes unless the write does); a writer holds the stripes its blocks
// fall in exclusively, a reader shared. Stripes are taken in slot order so
// that no two holders deadlock. Stripes of all files hash into one fixed
// table: a collision only serialises two holders that could have run
// together.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <shared_mutex>
#include <vector>

namespace dhfs {

class RangeLocks {
 public:
  static constexpr std::uint64_t kStripeBlocks = 256;

  // Holds the stripes of blocks [first, last] of `file` until destroyed.
  class Guard {
   public:
    Guard(RangeLocks& locks, std::uint64_t file, std::uint64_t first, std::uint64_t last, bool shared = false)
        : locks_(locks), shared_(shared) {
      const std::uint64_t s0 = first / kStripeBlocks, s1 = last / kStripeBlocks;
      // A range over more stripes than the table has slots takes them all.
      if (s1 - s0 + 1 >= locks.mu_.size()) {
        for (std::size_t i = 0; i < locks.mu_.size(); ++i) slots_.push_back(i);
      } else {
        for (std::uint64_t s = s0; s <= s1; ++s) slots_.push_back(locks.slot(file, s));
        std::sort(slots_.begin(), slots_.end());
        slots_.erase(std::unique(slots_.begin(), slots_.end()), slots_.end());
      }
      for (std::size_t i : slots_) shared_ ? locks_.mu_[i].lock_shared() : locks_.mu_[i].lock();
    }
    ~Guard() {
      for (auto it = slots_.rbegin(); it != slots_.rend(); ++it)
        shared_ ? locks_.mu_[*it].unlock_shared() : locks_.mu_[*it].unlock();
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    RangeLocks& locks_;
    const bool shared_;
    std::vector<std::size_t> slots_;
  };

  // True if blocks [first, last] fall in at most two stripes.
  static bool fits(std::uint64_t first, std::uint64_t last) { return last / kStripeBlocks - first / kStripeBlocks <= 1; }

 private:
  std::size_t slot(std::uint64_t file, std::uint64_t stripe) const {
    const std::uint64_t h = (file * 0x9E3779B97F4A7C15ULL) ^ (stripe * 0xC2B2AE3D27D4EB4FULL);
    return static_cast<std::size_t>((h ^ (h >> 29)) % mu_.size());
  }
  std::array<std::shared_mutex, 1024> mu_;
};

}  // namespace dhfs
