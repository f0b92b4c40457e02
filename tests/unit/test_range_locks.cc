// Tests of RangeLocks (fs/range_locks.h): which holders exclude each other,
// and that a guard over ranges of several files takes them all or waits.
#include <catch2/catch.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

#include "fs/range_locks.h"

namespace dhfs {
namespace {

using namespace std::chrono_literals;
constexpr std::uint64_t kStripe = RangeLocks::kStripeBlocks;

// Takes `make()` on a thread of its own; acquired() tells whether the guard
// is held yet, release() lets the thread drop it.
class Taker {
 public:
  template <typename Make>
  explicit Taker(Make make)
      : thread_([this, make] {
          auto guard = make();
          acquired_ = true;
          while (!release_) std::this_thread::sleep_for(1ms);
        }) {}
  ~Taker() {
    release_ = true;
    thread_.join();
  }
  bool acquired() const { return acquired_; }
  // True once acquired, false if not within `limit`.
  bool acquires_within(std::chrono::milliseconds limit) const {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!acquired_ && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1ms);
    return acquired_;
  }

 private:
  std::atomic<bool> acquired_{false}, release_{false};
  std::thread thread_;
};

TEST_CASE("range locks: writers exclude overlapping holders, readers share", "[range_locks]") {
  auto locks = std::make_unique<RangeLocks>();
  auto writer = std::make_unique<RangeLocks::Guard>(*locks, 7, 0, kStripe - 1);  // stripe 0 of file 7

  SECTION("a reader of the same stripe waits for the writer") {
    Taker reader([&] { return std::make_unique<RangeLocks::Guard>(*locks, 7, kStripe / 2, kStripe / 2, true); });
    CHECK_FALSE(reader.acquires_within(50ms));
    writer.reset();
    CHECK(reader.acquires_within(5000ms));
  }
  SECTION("the next stripe of the file is free") {
    Taker other([&] { return std::make_unique<RangeLocks::Guard>(*locks, 7, kStripe, 2 * kStripe - 1); });
    CHECK(other.acquires_within(5000ms));
  }
  SECTION("readers share a stripe") {
    writer.reset();
    RangeLocks::Guard first(*locks, 7, 0, 0, true);
    Taker second([&] { return std::make_unique<RangeLocks::Guard>(*locks, 7, 1, 1, true); });
    CHECK(second.acquires_within(5000ms));
  }
}

TEST_CASE("range locks: a guard over two files takes every stripe of both, or waits", "[range_locks]") {
  // (A Taker still waiting cannot be joined: every section releases what
  // its Takers wait for before they go out of scope.)
  auto locks = std::make_unique<RangeLocks>();
  // A copy-up's write: its own stripes exclusively, the source's shared.
  const RangeLocks::Range own{1, 0, 4 * kStripe - 1, false}, source{2, 0, 4 * kStripe - 1, true};

  SECTION("a writer of the source holds it up until it is done, and is held up in turn") {
    auto source_writer = std::make_unique<RangeLocks::Guard>(*locks, 2, 3 * kStripe, 3 * kStripe);
    auto copy = std::make_unique<Taker>([&] {
      return std::make_unique<RangeLocks::Guard>(*locks, std::initializer_list{own, source});
    });
    CHECK_FALSE(copy->acquires_within(50ms));
    source_writer.reset();
    REQUIRE(copy->acquires_within(5000ms));
    Taker late_writer([&] { return std::make_unique<RangeLocks::Guard>(*locks, 2, 0, 0); });
    CHECK_FALSE(late_writer.acquires_within(50ms));
    copy.reset();
    CHECK(late_writer.acquires_within(5000ms));
  }
  SECTION("readers of the source run beside it, readers of its own stripes wait") {
    auto copy = std::make_unique<RangeLocks::Guard>(*locks, std::initializer_list{own, source});
    Taker source_reader([&] { return std::make_unique<RangeLocks::Guard>(*locks, 2, kStripe, kStripe, true); });
    CHECK(source_reader.acquires_within(5000ms));
    Taker own_reader([&] { return std::make_unique<RangeLocks::Guard>(*locks, 1, kStripe, kStripe, true); });
    CHECK_FALSE(own_reader.acquires_within(50ms));
    copy.reset();
    CHECK(own_reader.acquires_within(5000ms));
  }
  SECTION("a stripe wanted shared by one range and exclusively by another is held exclusively") {
    // File 1 as its own source (the exclusive path's case, here in one guard).
    auto both = std::make_unique<RangeLocks::Guard>(
        *locks, std::initializer_list{RangeLocks::Range{1, 0, 0, false}, RangeLocks::Range{1, 0, 0, true}});
    Taker reader([&] { return std::make_unique<RangeLocks::Guard>(*locks, 1, 0, 0, true); });
    CHECK_FALSE(reader.acquires_within(50ms));
    both.reset();
    CHECK(reader.acquires_within(5000ms));
  }
}

TEST_CASE("range locks: two guards over the same two files in opposite roles never deadlock", "[range_locks][threads]") {
  // Copies from file 1 to 2 and from 2 to 1 at once: each wants its own
  // stripes exclusively and the other's shared. Taken in slot order, one
  // of them always gets all it wants.
  auto locks = std::make_unique<RangeLocks>();
  std::atomic<int> done{0};
  auto copier = [&](std::uint64_t to, std::uint64_t from) {
    for (int i = 0; i < 2000; ++i) {
      RangeLocks::Guard g(*locks, {RangeLocks::Range{to, 0, 8 * kStripe - 1, false},
                                   RangeLocks::Range{from, 0, 8 * kStripe - 1, true}});
    }
    ++done;
  };
  std::thread a(copier, 1, 2), b(copier, 2, 1);
  const auto end = std::chrono::steady_clock::now() + 60s;
  while (done < 2 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1ms);
  if (done < 2) {
    // The threads cannot be joined: say so and stop here rather than hang.
    std::fprintf(stderr, "range locks: two opposite copiers deadlocked\n");
    std::abort();
  }
  a.join();
  b.join();
}

}  // namespace
}  // namespace dhfs
