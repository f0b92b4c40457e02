// RangeLocks: lets small writes to different parts of one file run at the
// same time. A file is cut into 1 MiB stripes (the largest cow_unit, so a
// copy-on-write unit never spans two stripes unless the write does); a
// writer holds the mutexes of the stripes its blocks fall in, taken in
// index order so that two writers never deadlock. Stripes of all files
// hash into one fixed table: a collision only serialises two writers that
// could have run together.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <mutex>

namespace dhfs {

class RangeLocks {
 public:
  static constexpr std::uint64_t kStripeBlocks = 256;

  // Holds the stripes of blocks [first, last] of `file` until destroyed.
  // A writer locks at most two stripes (writes taking this path are small).
  class Guard {
   public:
    Guard(RangeLocks& locks, std::uint64_t file, std::uint64_t first, std::uint64_t last) : locks_(locks) {
      a_ = locks.slot(file, first / kStripeBlocks);
      b_ = locks.slot(file, last / kStripeBlocks);
      if (b_ < a_) std::swap(a_, b_);
      locks_.mu_[a_].lock();
      if (b_ != a_) locks_.mu_[b_].lock();
    }
    ~Guard() {
      if (b_ != a_) locks_.mu_[b_].unlock();
      locks_.mu_[a_].unlock();
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    RangeLocks& locks_;
    std::size_t a_, b_;
  };

  // True if blocks [first, last] fall in at most two stripes.
  static bool fits(std::uint64_t first, std::uint64_t last) { return last / kStripeBlocks - first / kStripeBlocks <= 1; }

 private:
  std::size_t slot(std::uint64_t file, std::uint64_t stripe) const {
    const std::uint64_t h = (file * 0x9E3779B97F4A7C15ULL) ^ (stripe * 0xC2B2AE3D27D4EB4FULL);
    return static_cast<std::size_t>((h ^ (h >> 29)) % mu_.size());
  }
  std::array<std::mutex, 1024> mu_;
};

}  // namespace dhfs
