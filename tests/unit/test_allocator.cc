// Unit tests for Allocator: placement policy, reserve, allocate_all,
// deferred frees and thread safety.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "alloc/allocator.h"

using dhfs::AllocRequest;
using dhfs::Allocator;
using dhfs::BlockNo;
using dhfs::Extent;

namespace {

AllocRequest want(std::uint64_t blocks, BlockNo hint = 0, std::uint64_t min_len = 1) {
  AllocRequest r;
  r.want = blocks;
  r.min_len = min_len;
  r.hint = hint;
  return r;
}

AllocRequest metadata(std::uint64_t blocks) {
  AllocRequest r = want(blocks);
  r.metadata = true;
  return r;
}

std::uint64_t total(const std::vector<Extent>& extents) {
  std::uint64_t sum = 0;
  for (const Extent& e : extents) sum += e.len;
  return sum;
}

// Leaves exactly `runs` free inside `area` by marking everything else used.
void leave_free(Allocator& a, const std::vector<Extent>& runs) {
  BlockNo at = a.area().start;
  for (const Extent& r : runs) {
    REQUIRE(a.mark_used({at, r.start - at}));
    at = r.end();
  }
  REQUIRE(a.mark_used({at, a.area().end() - at}));
  REQUIRE(a.free_extents() == runs);
}

}  // namespace

TEST_CASE("Allocator starts with the whole area free", "[allocator]") {
  Allocator a({100, 1000});
  CHECK(a.area() == Extent{100, 1000});
  CHECK(a.free_blocks() == 1000);
  CHECK(a.available_blocks() == 1000);
  CHECK(a.pending_blocks() == 0);
  CHECK(a.free_extent_count() == 1);
  CHECK(a.free_extents() == std::vector<Extent>{{100, 1000}});
}

TEST_CASE("Allocator mark_used", "[allocator]") {
  Allocator a({100, 1000});
  CHECK(a.mark_used({100, 10}));
  CHECK(a.mark_used({500, 1}));
  CHECK(a.mark_used({200, 0}));       // nothing to mark
  CHECK_FALSE(a.mark_used({105, 10}));  // overlaps [100,+10)
  CHECK_FALSE(a.mark_used({500, 1}));   // twice
  CHECK_FALSE(a.mark_used({90, 20}));   // starts before the area
  CHECK_FALSE(a.mark_used({1095, 10}));  // runs past the end
  CHECK_FALSE(a.mark_used({5000, 1}));
  CHECK(a.free_blocks() == 989);
  CHECK(a.free_extents() == std::vector<Extent>{{110, 390}, {501, 599}});
}

TEST_CASE("Allocator grows a file contiguously when hinted at its end", "[allocator]") {
  Allocator a({100, 10000});
  SECTION("repeated small allocations form one run") {
    auto first = a.allocate(want(8));
    REQUIRE(first);
    Extent file = *first;
    for (int i = 0; i < 100; ++i) {
      const auto next = a.allocate(want(8, file.end()));
      REQUIRE(next);
      REQUIRE(next->start == file.end());
      file.len += next->len;
    }
    CHECK(file == Extent{100, 808});
    CHECK(a.free_extents() == std::vector<Extent>{{908, 9192}});
  }
  SECTION("the run at the hint beats earlier holes and best fit") {
    REQUIRE(a.mark_used({100, 5000}));
    a.free_now({200, 300});  // an earlier hole that would fit
    a.free_now({1000, 2});   // a tiny hole that would be best fit
    CHECK(a.allocate(want(300, 5100)) == Extent{5100, 300});
    CHECK(a.allocate(want(10, 5400)) == Extent{5400, 10});
  }
  SECTION("a short run at the hint is used when min_len allows") {
    REQUIRE(a.mark_used({100, 10000}));
    a.free_now({500, 4});
    a.free_now({2000, 1000});
    CHECK(a.allocate(want(300, 500)) == Extent{500, 4});
    CHECK(a.allocate(want(300, 504, 8)) == Extent{2000, 300});  // too short: elsewhere
  }
}

TEST_CASE("Allocator serves small requests near the hint", "[allocator]") {
  Allocator a({1, 100000});
  leave_free(a, {{1000, 50}, {5000, 2000}, {20000, 300}});
  CHECK(a.allocate(want(20, 3000)) == Extent{5000, 20});
  CHECK(a.allocate(want(20, 10)) == Extent{1000, 20});
  CHECK(a.allocate(want(40, 30000)) == Extent{1020, 30});  // wraps; min_len 1 takes what is there
  CHECK(a.allocate(want(40, 30000, 40)) == Extent{5020, 40});
}

TEST_CASE("Allocator serves big requests best fit", "[allocator]") {
  Allocator a({1, 100000});
  leave_free(a, {{1000, 300}, {5000, 5000}, {20000, 1000}, {30000, 600}});
  SECTION("smallest run that holds the request, regardless of the hint") {
    CHECK(a.allocate(want(600, 900)) == Extent{30000, 600});
    CHECK(a.allocate(want(600, 900)) == Extent{20000, 600});
    CHECK(a.allocate(want(256)) == Extent{1000, 256});
  }
  SECTION("the largest run when none holds it") {
    CHECK(a.allocate(want(8000)) == Extent{5000, 5000});
    CHECK(a.allocate(want(8000)) == Extent{20000, 1000});
  }
  SECTION("255 blocks is still a small request") {
    CHECK(a.allocate(want(255, 900)) == Extent{1000, 255});
  }
}

TEST_CASE("Allocator keeps the metadata reserve for metadata", "[allocator]") {
  Allocator a({1, 1000});
  a.set_metadata_reserve(300);
  CHECK(a.available_blocks() == 700);
  CHECK(a.free_blocks() == 1000);

  SECTION("data gets a shorter extent that stays above the reserve") {
    CHECK(a.allocate(want(950)) == Extent{1, 700});
    CHECK(a.available_blocks() == 0);
    CHECK_FALSE(a.allocate(want(1)));
    CHECK(a.allocate(metadata(60)) == Extent{701, 60});
    CHECK(a.free_blocks() == 240);
    CHECK(a.available_blocks() == 0);  // not negative
  }
  SECTION("unless its min_len does not fit above the reserve") {
    CHECK_FALSE(a.allocate(want(950, 0, 701)));
    CHECK(a.allocate(want(950, 0, 700)) == Extent{1, 700});
  }
  SECTION("metadata may use the reserve down to the last block") {
    CHECK(a.allocate(metadata(1000)) == Extent{1, 1000});
    CHECK_FALSE(a.allocate(metadata(1)));
  }
  SECTION("allocate_all honours the reserve as a whole") {
    std::vector<Extent> out;
    CHECK_FALSE(a.allocate_all(want(701), out));
    CHECK(out.empty());
    CHECK(a.free_blocks() == 1000);
    CHECK(a.allocate_all(want(700), out));
    AllocRequest md = metadata(300);
    CHECK(a.allocate_all(md, out));
    CHECK(total(out) == 1000);
    CHECK(a.free_blocks() == 0);
  }
  SECTION("raising the reserve later takes effect at once") {
    REQUIRE(a.allocate(want(500)));
    a.set_metadata_reserve(600);
    CHECK(a.available_blocks() == 0);
    CHECK_FALSE(a.allocate(want(1)));
  }
}

TEST_CASE("Allocator keeps the metadata reserve in runs a checkpoint can use", "[allocator]") {
  // A checkpoint stream takes runs of at least FreeSpace::kLongRun blocks:
  // data fills the short runs and keeps the reserve in long ones.
  Allocator a({1, 4000});
  REQUIRE(a.allocate(metadata(4000)) == Extent{1, 4000});
  for (BlockNo b = 1; b <= 2000; b += 2) a.free_now({b, 1});  // 1000 single free blocks
  a.free_now({3001, 1000});                                  // and one long run
  a.set_metadata_reserve(300);
  REQUIRE(a.available_blocks() == 1700);

  SECTION("a data extent that would cut into the reserve's long run takes single blocks instead") {
    const auto e = a.allocate(want(900, 3001));
    REQUIRE(e);
    CHECK(e->len == 1);
    CHECK(e->end() <= 2001);
  }
  SECTION("filling up leaves the reserve as one long run") {
    std::vector<Extent> out;
    CHECK(a.allocate_all(want(1700), out));
    CHECK(total(out) == 1700);
    CHECK(a.free_extents() == std::vector<Extent>{{3701, 300}});
    CHECK(a.allocate(metadata(300)) == Extent{3701, 300});
  }
  CHECK(a.consistent());
}

TEST_CASE("Allocator keeps a metadata reserve shorter than a long run in one long run", "[allocator]") {
  Allocator a({1, 1000});
  a.set_metadata_reserve(100);
  CHECK(a.allocate(want(950)) == Extent{1, 744});
  CHECK_FALSE(a.allocate(want(1)));  // 156 more would leave the reserve in a short run
  CHECK(a.available_blocks() == 156);
  CHECK(a.allocate(metadata(256)) == Extent{745, 256});
  CHECK(a.consistent());
}

TEST_CASE("Allocator allocate_all", "[allocator]") {
  SECTION("one extent when the space is contiguous") {
    Allocator a({1, 10000});
    std::vector<Extent> out;
    REQUIRE(a.allocate_all(want(1234), out));
    CHECK(out == std::vector<Extent>{{1, 1234}});
  }
  SECTION("appends to what is already in out") {
    Allocator a({1, 100});
    std::vector<Extent> out{{7777, 1}};
    REQUIRE(a.allocate_all(want(10), out));
    CHECK(out == std::vector<Extent>{{7777, 1}, {1, 10}});
  }
  SECTION("fragmented space: largest runs first, as few pieces as possible") {
    Allocator a({1, 10000});
    leave_free(a, {{100, 10}, {200, 20}, {300, 30}, {400, 40}});
    std::vector<Extent> out;
    REQUIRE(a.allocate_all(want(60), out));
    CHECK(out == std::vector<Extent>{{400, 40}, {200, 20}});
    CHECK(a.free_blocks() == 40);
  }
  SECTION("continues at the hint, then fills from elsewhere") {
    Allocator a({1, 10000});
    leave_free(a, {{100, 50}, {500, 10}, {900, 200}});
    std::vector<Extent> out;
    REQUIRE(a.allocate_all(want(100, 500), out));
    CHECK(out == std::vector<Extent>{{500, 10}, {900, 90}});
  }
  SECTION("each piece is hinted at the end of the previous one") {
    Allocator a({1, 10000});
    leave_free(a, {{50, 10}, {100, 20}, {130, 20}, {160, 20}, {190, 20}});
    std::vector<Extent> out;
    // The last 10 blocks go after the previous piece, not to the earlier [50,+10).
    REQUIRE(a.allocate_all(want(70, 100), out));
    CHECK(out == std::vector<Extent>{{100, 20}, {130, 20}, {160, 20}, {190, 10}});
  }
  SECTION("rolls back on ENOSPC") {
    Allocator a({1, 10000});
    leave_free(a, {{100, 10}, {200, 20}, {300, 30}});
    std::vector<Extent> out{{1, 1}};
    CHECK_FALSE(a.allocate_all(want(61), out));
    CHECK(out == std::vector<Extent>{{1, 1}});
    CHECK(a.free_extents() == std::vector<Extent>{{100, 10}, {200, 20}, {300, 30}});
  }
  SECTION("rolls back when fragmentation defeats min_len") {
    Allocator a({1, 10000});
    leave_free(a, {{100, 10}, {200, 10}, {300, 30}});
    std::vector<Extent> out;
    // 30 blocks come from [300,+30); the last 15 would need a run of 15.
    CHECK_FALSE(a.allocate_all(want(45, 0, 15), out));
    CHECK(out.empty());
    CHECK(a.free_extents() == std::vector<Extent>{{100, 10}, {200, 10}, {300, 30}});
    CHECK(a.allocate_all(want(45, 0, 10), out));
    CHECK(total(out) == 45);
  }
  SECTION("zero blocks is trivially done") {
    Allocator a({1, 10});
    std::vector<Extent> out;
    CHECK(a.allocate_all(want(0), out));
    CHECK(out.empty());
  }
}

TEST_CASE("Allocator deferred frees wait for durability", "[allocator]") {
  Allocator a({1, 100});
  std::vector<Extent> all;
  REQUIRE(a.allocate_all(want(100), all));
  REQUIRE(all == std::vector<Extent>{{1, 100}});

  a.free_after({10, 5}, 7);
  CHECK(a.pending_blocks() == 5);
  CHECK(a.free_blocks() == 0);
  CHECK_FALSE(a.allocate(want(1)));
  CHECK_FALSE(a.allocate(want(5, 10)));

  a.mark_durable(6);  // an earlier transaction
  CHECK_FALSE(a.allocate(want(1)));
  CHECK(a.pending_blocks() == 5);

  a.mark_durable(7);
  CHECK(a.pending_blocks() == 0);
  CHECK(a.free_blocks() == 5);
  CHECK(a.allocate(want(5)) == Extent{10, 5});

  SECTION("free_now is reusable at once") {
    a.free_now({50, 3});
    CHECK(a.allocate(want(3)) == Extent{50, 3});
  }
}

TEST_CASE("Allocator deferred frees with out-of-order seqs", "[allocator]") {
  Allocator a({1, 100});
  REQUIRE(a.mark_used({1, 100}));
  a.free_after({10, 1}, 7);
  a.free_after({20, 1}, 3);
  a.free_after({30, 1}, 5);
  a.free_after({40, 1}, 5);
  CHECK(a.pending_blocks() == 4);

  a.mark_durable(5);
  CHECK(a.free_extents() == std::vector<Extent>{{20, 1}, {30, 1}, {40, 1}});
  CHECK(a.pending_blocks() == 1);

  a.mark_durable(2);  // a late, older notification changes nothing
  CHECK(a.pending_blocks() == 1);

  a.free_after({50, 1}, 4);  // its transaction is already durable
  CHECK(a.pending_blocks() == 1);
  CHECK(a.free_blocks() == 4);

  a.free_after({60, 1}, 6);
  a.mark_durable(7);
  CHECK(a.pending_blocks() == 0);
  CHECK(a.free_extents() == std::vector<Extent>{{10, 1}, {20, 1}, {30, 1}, {40, 1}, {50, 1}, {60, 1}});
}

TEST_CASE("Allocator ignores bad frees without corrupting its state", "[allocator]") {
  Allocator a({1, 100});
  REQUIRE(a.mark_used({1, 50}));
  a.free_after({10, 5}, 3);
  const auto free_before = a.free_extents();

  a.free_now({60, 5});      // already free
  a.free_now({45, 10});     // partly free
  a.free_now({12, 1});      // pending
  a.free_now({90, 20});     // runs out of the area
  a.free_now({0, 1});       // before the area
  a.free_after({60, 1}, 4);  // already free
  a.free_after({8, 4}, 4);   // partly pending
  a.free_now({20, 0});       // empty: nothing to do

  CHECK(a.free_extents() == free_before);
  CHECK(a.pending_blocks() == 5);
  a.mark_durable(4);
  CHECK(a.free_extents() == std::vector<Extent>{{10, 5}, {51, 50}});
  CHECK(a.free_blocks() == 55);
}

TEST_CASE("Allocator matches a block-state model under random operations", "[allocator][random]") {
  const auto seed = GENERATE(7u, 8u, 9u);
  std::mt19937_64 rng(seed);
  auto uniform = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  };
  constexpr BlockNo kBase = 10;
  constexpr std::uint64_t kBlocks = 400;
  Allocator a({kBase, kBlocks});
  a.set_metadata_reserve(20);

  enum class State { kFree, kUsed, kPending };
  std::vector<State> state(kBlocks, State::kFree);
  std::multimap<std::uint64_t, Extent> pending;  // seq -> extent
  std::vector<Extent> used;
  std::uint64_t next_seq = 10, durable = 0;  // 10: the arithmetic below stays positive

  auto claim = [&](const Extent& e) {
    for (BlockNo b = e.start; b < e.end(); ++b) {
      REQUIRE(state[b - kBase] == State::kFree);
      state[b - kBase] = State::kUsed;
    }
    used.push_back(e);
  };
  auto set = [&](const Extent& e, State s) {
    for (BlockNo b = e.start; b < e.end(); ++b) state[b - kBase] = s;
  };

  for (int step = 0; step < 3000; ++step) {
    INFO("seed " << seed << " step " << step);
    const auto op = uniform(0, 9);
    if (op < 4) {
      AllocRequest req = want(uniform(1, op == 0 ? 300 : 20), uniform(0, kBase + kBlocks), uniform(1, 8));
      req.metadata = uniform(0, 3) == 0;
      const auto e = a.allocate(req);
      if (e) {
        REQUIRE(e->len >= std::min(req.min_len, req.want));
        REQUIRE(e->len <= req.want);
        claim(*e);
      }
    } else if (op < 5) {
      std::vector<Extent> out;
      const auto before = a.free_blocks();
      if (a.allocate_all(want(uniform(1, 60), uniform(0, kBase + kBlocks)), out)) {
        for (const Extent& e : out) claim(e);
      } else {
        REQUIRE(out.empty());
        REQUIRE(a.free_blocks() == before);
      }
    } else if (op < 8 && !used.empty()) {
      const auto i = uniform(0, used.size() - 1);
      const Extent e = used[i];
      used.erase(used.begin() + i);
      if (op == 5) {
        a.free_now(e);
        set(e, State::kFree);
      } else {
        const auto seq = next_seq + 2 - uniform(0, 3);  // sometimes already durable
        a.free_after(e, seq);
        if (seq <= durable) {
          set(e, State::kFree);
        } else {
          pending.emplace(seq, e);
          set(e, State::kPending);
        }
      }
    } else if (op == 8) {
      durable = std::max(durable, next_seq - uniform(0, 4));
      a.mark_durable(durable);
      const auto last = pending.upper_bound(durable);
      for (auto it = pending.begin(); it != last; ++it) set(it->second, State::kFree);
      pending.erase(pending.begin(), last);
    } else {
      ++next_seq;
    }

    const auto free = static_cast<std::uint64_t>(std::count(state.begin(), state.end(), State::kFree));
    const auto waiting = static_cast<std::uint64_t>(std::count(state.begin(), state.end(), State::kPending));
    REQUIRE(a.free_blocks() == free);
    REQUIRE(a.pending_blocks() == waiting);
    REQUIRE(a.available_blocks() == (free > 20 ? free - 20 : 0));
    std::uint64_t listed = 0;
    for (const Extent& e : a.free_extents()) {
      for (BlockNo b = e.start; b < e.end(); ++b) REQUIRE(state[b - kBase] == State::kFree);
      listed += e.len;
    }
    REQUIRE(listed == free);
  }
}

TEST_CASE("Allocator never hands out a block twice under concurrency", "[allocator][threads]") {
  constexpr BlockNo kBase = 1;
  constexpr std::uint64_t kBlocks = 20000;
  Allocator a({kBase, kBlocks});
  a.set_metadata_reserve(50);

  std::mutex owners_mu;
  std::vector<int> owner(kBlocks, -1);  // -1: not handed out
  std::atomic<int> violations{0};
  std::atomic<std::uint64_t> next_seq{10};  // 10: next_seq - 3 stays positive

  auto claim = [&](const Extent& e, int id) {
    std::lock_guard lock(owners_mu);
    if (e.start < kBase || e.end() > kBase + kBlocks) {
      ++violations;
      return;
    }
    for (BlockNo b = e.start; b < e.end(); ++b) {
      if (owner[b - kBase] != -1) ++violations;
      owner[b - kBase] = id;
    }
  };
  // Ownership is dropped before the blocks go back, or another thread could
  // legitimately get them before we cleared them.
  auto unclaim = [&](const Extent& e) {
    std::lock_guard lock(owners_mu);
    for (BlockNo b = e.start; b < e.end(); ++b) owner[b - kBase] = -1;
  };

  auto worker = [&](int id) {
    std::mt19937_64 rng(1000 + id);
    auto uniform = [&](std::uint64_t lo, std::uint64_t hi) {
      return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
    };
    std::vector<Extent> held;
    for (int i = 0; i < 4000; ++i) {
      const auto op = uniform(0, 9);
      const BlockNo hint = held.empty() ? 0 : held.back().end();
      if (op < 4) {
        AllocRequest req = want(uniform(0, 9) == 0 ? 300 : uniform(1, 32), hint);
        req.metadata = uniform(0, 3) == 0;
        if (auto e = a.allocate(req)) {
          claim(*e, id);
          held.push_back(*e);
        }
      } else if (op < 5) {
        std::vector<Extent> out;
        if (a.allocate_all(want(uniform(1, 100), hint), out)) {
          for (const Extent& e : out) {
            claim(e, id);
            held.push_back(e);
          }
        }
      } else if (!held.empty()) {
        const auto idx = uniform(0, held.size() - 1);
        const Extent e = held[idx];
        held.erase(held.begin() + idx);
        unclaim(e);
        if (op < 7) {
          a.free_now(e);
        } else {
          a.free_after(e, next_seq.fetch_add(1));
          if (op == 9) a.mark_durable(next_seq.load() - uniform(0, 3));
        }
      }
    }
    for (const Extent& e : held) {
      unclaim(e);
      a.free_now(e);
    }
  };

  std::vector<std::thread> threads;
  for (int id = 0; id < 4; ++id) threads.emplace_back(worker, id);
  for (auto& t : threads) t.join();

  CHECK(violations == 0);
  a.mark_durable(next_seq.load());
  CHECK(a.pending_blocks() == 0);
  CHECK(a.free_blocks() == kBlocks);
  CHECK(a.free_extents() == std::vector<Extent>{{kBase, kBlocks}});
}
