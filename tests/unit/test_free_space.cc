// Unit tests for FreeSpace (and the RunTree index beneath it).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "alloc/free_space.h"

using dhfs::BlockNo;
using dhfs::Extent;
using dhfs::FreeSpace;

namespace {

std::vector<Extent> runs_of(const FreeSpace& fs) {
  std::vector<Extent> out;
  fs.for_each([&](const Extent& e) { out.push_back(e); });
  return out;
}

FreeSpace make(std::initializer_list<Extent> extents) {
  FreeSpace fs;
  for (const Extent& e : extents) REQUIRE(fs.insert(e));
  return fs;
}

// Reference model: one bool per block of the window [base, base + free.size()).
// Every operation of FreeSpace is recomputed here the slow, obvious way.
struct Model {
  BlockNo base;
  std::vector<bool> free;

  bool all(const Extent& e, bool value) const {
    for (BlockNo b = e.start; b < e.end(); ++b) {
      if (free[b - base] != value) return false;
    }
    return true;
  }
  void set(const Extent& e, bool value) {
    for (BlockNo b = e.start; b < e.end(); ++b) free[b - base] = value;
  }
  std::uint64_t count() const { return std::count(free.begin(), free.end(), true); }

  // Maximal runs: coalesced by construction.
  std::vector<Extent> runs() const {
    std::vector<Extent> out;
    for (std::size_t i = 0; i < free.size(); ++i) {
      if (!free[i]) continue;
      if (!out.empty() && out.back().end() == base + i) {
        ++out.back().len;
      } else {
        out.push_back({base + i, 1});
      }
    }
    return out;
  }

  std::optional<Extent> take_near(std::uint64_t want, std::uint64_t min_len, BlockNo hint) {
    if (want == 0) return std::nullopt;
    min_len = std::clamp<std::uint64_t>(min_len, 1, want);
    const auto rs = runs();
    std::optional<Extent> pick;
    for (const Extent& r : rs) {
      if (r.start >= hint && r.len >= min_len) {
        pick = r;
        break;
      }
    }
    for (const Extent& r : rs) {
      if (!pick && r.len >= min_len) pick = r;
    }
    return take(pick, want);
  }

  std::optional<Extent> take_best_fit(std::uint64_t want, std::uint64_t min_len) {
    if (want == 0) return std::nullopt;
    min_len = std::clamp<std::uint64_t>(min_len, 1, want);
    std::optional<Extent> best;    // smallest holding all of want
    std::optional<Extent> largest;
    for (const Extent& r : runs()) {
      if (r.len >= want && (!best || r.len < best->len)) best = r;
      if (!largest || r.len > largest->len) largest = r;
    }
    if (!best && largest && largest->len >= min_len) best = largest;
    return take(best, want);
  }

  std::optional<Extent> find_short_fit(std::uint64_t want, std::uint64_t min_len) const {
    if (want == 0) return std::nullopt;
    min_len = std::clamp<std::uint64_t>(min_len, 1, want);
    std::optional<Extent> best, largest;
    for (const Extent& r : runs()) {
      if (r.len >= FreeSpace::kLongRun) continue;
      if (r.len >= want && (!best || r.len < best->len)) best = r;
      if (!largest || r.len > largest->len) largest = r;
    }
    if (!best && largest && largest->len >= min_len) best = largest;
    return best;
  }

  std::optional<Extent> take(const std::optional<Extent>& run, std::uint64_t want) {
    if (!run) return std::nullopt;
    const Extent taken{run->start, std::min(want, run->len)};
    set(taken, false);
    return taken;
  }
};

void require_matches(const FreeSpace& fs, const Model& m) {
  REQUIRE(fs.consistent());
  REQUIRE(fs.free_blocks() == m.count());
  const auto runs = m.runs();
  REQUIRE(runs_of(fs) == runs);
  REQUIRE(fs.extent_count() == runs.size());
  std::uint64_t largest = 0, long_blocks = 0;
  for (const Extent& r : runs) {
    largest = std::max(largest, r.len);
    if (r.len >= FreeSpace::kLongRun) long_blocks += r.len;
  }
  REQUIRE(fs.largest() == largest);
  REQUIRE(fs.long_run_blocks() == long_blocks);
}

}  // namespace

TEST_CASE("FreeSpace starts empty", "[free_space]") {
  FreeSpace fs;
  CHECK(fs.free_blocks() == 0);
  CHECK(fs.extent_count() == 0);
  CHECK(fs.largest() == 0);
  CHECK_FALSE(fs.take_near(1, 1, 0));
  CHECK_FALSE(fs.take_best_fit(1, 1));
  CHECK_FALSE(fs.run_containing(0));
  CHECK(fs.consistent());
}

TEST_CASE("FreeSpace insert coalesces with neighbours", "[free_space]") {
  SECTION("separate extents stay separate") {
    FreeSpace fs = make({{10, 5}, {20, 5}});
    CHECK(runs_of(fs) == std::vector<Extent>{{10, 5}, {20, 5}});
  }
  SECTION("merge with the left neighbour") {
    FreeSpace fs = make({{10, 5}, {15, 3}});
    CHECK(runs_of(fs) == std::vector<Extent>{{10, 8}});
  }
  SECTION("merge with the right neighbour") {
    FreeSpace fs = make({{15, 3}, {10, 5}});
    CHECK(runs_of(fs) == std::vector<Extent>{{10, 8}});
  }
  SECTION("merge with both neighbours") {
    FreeSpace fs = make({{10, 5}, {20, 5}, {15, 5}});
    CHECK(runs_of(fs) == std::vector<Extent>{{10, 15}});
    CHECK(fs.extent_count() == 1);
    CHECK(fs.largest() == 15);
  }
  SECTION("a one-block gap is not bridged") {
    FreeSpace fs = make({{10, 5}, {16, 5}});
    CHECK(fs.extent_count() == 2);
  }
  FreeSpace fs = make({{10, 5}, {20, 5}, {15, 5}});
  CHECK(fs.free_blocks() == 15);
  CHECK(fs.consistent());
}

TEST_CASE("FreeSpace insert rejects any overlap and changes nothing", "[free_space]") {
  FreeSpace fs = make({{10, 10}, {30, 10}});
  const auto before = runs_of(fs);
  CHECK_FALSE(fs.insert({10, 10}));  // identical
  CHECK_FALSE(fs.insert({5, 6}));    // overlaps the first block
  CHECK_FALSE(fs.insert({19, 5}));   // overlaps the last block
  CHECK_FALSE(fs.insert({12, 2}));   // inside
  CHECK_FALSE(fs.insert({0, 100}));  // covers both
  CHECK_FALSE(fs.insert({20, 11}));  // fills the gap and one block more
  CHECK(runs_of(fs) == before);
  CHECK(fs.free_blocks() == 20);
  CHECK(fs.insert({20, 10}));  // exactly the gap
  CHECK(runs_of(fs) == std::vector<Extent>{{10, 30}});
}

TEST_CASE("FreeSpace handles empty and wrapping extents", "[free_space]") {
  FreeSpace fs = make({{10, 10}});
  CHECK(fs.insert({5, 0}));
  CHECK(fs.insert({12, 0}));  // empty, even inside free space
  CHECK(fs.remove({50, 0}));
  CHECK(fs.contains({50, 0}));
  CHECK_FALSE(fs.intersects({12, 0}));
  CHECK(runs_of(fs) == std::vector<Extent>{{10, 10}});

  const BlockNo max = std::numeric_limits<BlockNo>::max();
  CHECK_FALSE(fs.insert({max - 5, 10}));
  CHECK_FALSE(fs.remove({15, max}));
  CHECK_FALSE(fs.contains({15, max}));
  CHECK(fs.intersects({15, max}));
  CHECK(fs.insert({max - 10, 10}));  // ends exactly at the largest BlockNo
  CHECK(fs.run_containing(max - 1) == Extent{max - 10, 10});
  CHECK(fs.consistent());
}

TEST_CASE("FreeSpace remove splits and needs every block free", "[free_space]") {
  FreeSpace fs = make({{100, 50}});
  SECTION("from the middle") {
    CHECK(fs.remove({110, 10}));
    CHECK(runs_of(fs) == std::vector<Extent>{{100, 10}, {120, 30}});
  }
  SECTION("from the start") {
    CHECK(fs.remove({100, 10}));
    CHECK(runs_of(fs) == std::vector<Extent>{{110, 40}});
  }
  SECTION("from the end") {
    CHECK(fs.remove({140, 10}));
    CHECK(runs_of(fs) == std::vector<Extent>{{100, 40}});
  }
  SECTION("the whole run") {
    CHECK(fs.remove({100, 50}));
    CHECK(fs.extent_count() == 0);
  }
  SECTION("rejections change nothing") {
    CHECK_FALSE(fs.remove({95, 10}));   // starts before
    CHECK_FALSE(fs.remove({145, 10}));  // runs past the end
    CHECK_FALSE(fs.remove({200, 1}));   // nowhere near
    REQUIRE(fs.remove({120, 5}));
    CHECK_FALSE(fs.remove({118, 4}));  // spans a used block
    CHECK_FALSE(fs.remove({120, 1}));  // already used
    CHECK(runs_of(fs) == std::vector<Extent>{{100, 20}, {125, 25}});
  }
  CHECK(fs.consistent());
}

TEST_CASE("FreeSpace contains, intersects and run_containing", "[free_space]") {
  const FreeSpace fs = make({{10, 10}, {30, 5}});
  CHECK(fs.contains({10, 10}));
  CHECK(fs.contains({12, 3}));
  CHECK_FALSE(fs.contains({15, 10}));
  CHECK_FALSE(fs.contains({10, 25}));  // both runs but also the gap

  CHECK(fs.intersects({0, 11}));
  CHECK(fs.intersects({19, 11}));
  CHECK(fs.intersects({25, 100}));
  CHECK_FALSE(fs.intersects({20, 10}));  // exactly the gap
  CHECK_FALSE(fs.intersects({0, 10}));
  CHECK_FALSE(fs.intersects({35, 10}));

  CHECK(fs.run_containing(10) == Extent{10, 10});
  CHECK(fs.run_containing(19) == Extent{10, 10});
  CHECK(fs.run_containing(32) == Extent{30, 5});
  CHECK_FALSE(fs.run_containing(9));
  CHECK_FALSE(fs.run_containing(20));
  CHECK_FALSE(fs.run_containing(35));
}

TEST_CASE("FreeSpace take_near preference order", "[free_space]") {
  // Runs: [10,+4) [20,+10) [40,+2) [50,+20)
  FreeSpace fs = make({{10, 4}, {20, 10}, {40, 2}, {50, 20}});

  SECTION("a run starting exactly at the hint wins") {
    CHECK(fs.take_near(5, 1, 20) == Extent{20, 5});
    CHECK(fs.run_containing(25) == Extent{25, 5});
  }
  SECTION("otherwise the first run at or after the hint that is long enough") {
    CHECK(fs.take_near(5, 5, 15) == Extent{20, 5});
    CHECK(fs.take_near(5, 5, 30) == Extent{50, 5});  // [40,+2) is too short
  }
  SECTION("short runs after the hint are fine when min_len allows") {
    CHECK(fs.take_near(5, 1, 30) == Extent{40, 2});
  }
  SECTION("a run containing the hint but starting before it counts as before") {
    CHECK(fs.take_near(3, 1, 22) == Extent{40, 2});
  }
  SECTION("wraps to the beginning when nothing after the hint fits") {
    CHECK(fs.take_near(8, 8, 60) == Extent{20, 8});
    CHECK(fs.take_near(3, 1, 1000) == Extent{10, 3});
  }
  SECTION("a run at the hint shorter than min_len is passed over") {
    CHECK(fs.take_near(4, 4, 40) == Extent{50, 4});
  }
  SECTION("takes the whole run when it is shorter than want") {
    CHECK(fs.take_near(100, 1, 20) == Extent{20, 10});
    CHECK_FALSE(fs.run_containing(25));
  }
  SECTION("min_len is clamped to want") {
    CHECK(fs.take_near(2, 50, 0) == Extent{10, 2});
  }
  SECTION("nothing long enough anywhere") {
    CHECK_FALSE(fs.take_near(30, 21, 0));
    CHECK(fs.free_blocks() == 36);
  }
  SECTION("want of zero takes nothing") {
    CHECK_FALSE(fs.take_near(0, 0, 10));
    CHECK(fs.free_blocks() == 36);
  }
  CHECK(fs.consistent());
}

TEST_CASE("FreeSpace take_best_fit", "[free_space]") {
  FreeSpace fs = make({{10, 30}, {100, 8}, {200, 12}, {300, 8}, {400, 30}});

  SECTION("smallest run that holds everything, lowest start among equals") {
    CHECK(fs.take_best_fit(8, 8) == Extent{100, 8});
    CHECK(fs.take_best_fit(8, 8) == Extent{300, 8});
    CHECK(fs.take_best_fit(8, 8) == Extent{200, 8});
    CHECK(fs.run_containing(208) == Extent{208, 4});
  }
  SECTION("exact fit is preferred over a larger run") {
    CHECK(fs.take_best_fit(12, 1) == Extent{200, 12});
  }
  SECTION("the largest run when nothing holds everything") {
    CHECK(fs.take_best_fit(50, 1) == Extent{10, 30});
    CHECK(fs.take_best_fit(50, 1) == Extent{400, 30});
    CHECK(fs.take_best_fit(50, 1) == Extent{200, 12});
  }
  SECTION("unless the largest run is shorter than min_len") {
    CHECK_FALSE(fs.take_best_fit(50, 31));
    CHECK(fs.free_blocks() == 88);
  }
  CHECK(fs.consistent());
}

TEST_CASE("FreeSpace counts the blocks in long runs and finds short runs apart", "[free_space]") {
  constexpr std::uint64_t L = FreeSpace::kLongRun;
  FreeSpace fs = make({{10, 30}, {100, L - 1}, {1000, L}, {2000, 2 * L}});
  CHECK(fs.long_run_blocks() == 3 * L);
  SECTION("the smallest short run that holds everything") {
    CHECK(fs.find_short_fit(20, 1) == Extent{10, 30});
    CHECK(fs.find_short_fit(31, 1) == Extent{100, L - 1});
  }
  SECTION("else the longest short run, if it has min_len; never a long one") {
    CHECK(fs.find_short_fit(L, 1) == Extent{100, L - 1});
    CHECK(fs.find_short_fit(3 * L, L - 1) == Extent{100, L - 1});
    CHECK_FALSE(fs.find_short_fit(3 * L, L));
  }
  SECTION("taking from a long run that leaves it short") {
    CHECK(fs.remove({1000, 1}));
    CHECK(fs.long_run_blocks() == 2 * L);
    CHECK(fs.find_short_fit(L, 1) == Extent{100, L - 1});  // lowest start among equals
    CHECK(fs.find_short_fit(L - 1, 1) == Extent{100, L - 1});
    CHECK(fs.insert({1000, 1}));
    CHECK(fs.long_run_blocks() == 3 * L);
  }
  SECTION("coalescing short runs into a long one") {
    CHECK(fs.insert({40, 60}));
    CHECK(fs.insert({100 + L - 1, 1000 - 100 - L + 1}));
    CHECK(fs.insert({1000 + L, 1000 - L}));  // 10 .. 2000 + 2L: one run
    CHECK(fs.extent_count() == 1);
    CHECK(fs.long_run_blocks() == fs.free_blocks());
    CHECK_FALSE(fs.find_short_fit(1, 1));
  }
  CHECK(fs.consistent());
}

TEST_CASE("FreeSpace keeps a shared tally of its long-run blocks", "[free_space]") {
  std::uint64_t tally = 0;
  {
    FreeSpace a, b;
    a.add_long_runs_to(&tally);
    b.add_long_runs_to(&tally);
    CHECK(a.insert({0, 300}));
    CHECK(b.insert({1000, 10}));
    CHECK(tally == 300);
    CHECK(b.insert({1010, 250}));  // joins the 10: one long run
    CHECK(tally == 560);
    CHECK(a.remove({0, 100}));  // 200 left: short
    CHECK(tally == 260);
    FreeSpace copy(b);  // a copy adds to no tally
    CHECK(copy.remove({1000, 260}));
    CHECK(tally == 260);
    b = FreeSpace{};  // assigned: b's share goes with its runs
    CHECK(tally == 0);
    b = copy;
    CHECK(tally == 0);
    CHECK(b.insert({5000, 256}));
    CHECK(tally == 256);
  }
  CHECK(tally == 0);  // each set takes its share away when it goes
}

TEST_CASE("FreeSpace copies are independent", "[free_space]") {
  FreeSpace a = make({{10, 10}, {30, 10}});
  FreeSpace b = a;
  REQUIRE(b.remove({30, 10}));
  CHECK(a.extent_count() == 2);
  CHECK(b.extent_count() == 1);
  a = b;
  CHECK(runs_of(a) == std::vector<Extent>{{10, 10}});
  CHECK(a.consistent());
  CHECK(b.consistent());
}

TEST_CASE("FreeSpace stays fast and sound with many runs", "[free_space]") {
  // 100k one-block holes before a single long run: a first-fit search that
  // stepped over the short runs one by one would make this quadratic.
  FreeSpace fs;
  constexpr BlockNo kRuns = 100000;
  for (BlockNo i = 0; i < kRuns; ++i) REQUIRE(fs.insert({2 * i, 1}));
  REQUIRE(fs.insert({4 * kRuns, 100000}));
  for (int i = 0; i < 10000; ++i) {
    REQUIRE(fs.take_near(10, 2, 0) == Extent{4 * kRuns + 10 * static_cast<BlockNo>(i), 10});
  }
  REQUIRE(fs.extent_count() == kRuns);
  for (BlockNo i = 0; i < kRuns; ++i) REQUIRE(fs.remove({2 * i, 1}));
  CHECK(fs.extent_count() == 0);
  CHECK(fs.consistent());
}

TEST_CASE("FreeSpace matches a bitmap model under random operations", "[free_space][random]") {
  const auto seed = GENERATE(1u, 2u, 3u, 42u);
  std::mt19937_64 rng(seed);
  constexpr BlockNo kBase = 1000;
  constexpr std::uint64_t kBlocks = 300;
  Model model{kBase, std::vector<bool>(kBlocks, false)};
  FreeSpace fs;

  auto uniform = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  };
  auto random_extent = [&] {
    const BlockNo start = kBase + uniform(0, kBlocks - 1);
    return Extent{start, std::min<std::uint64_t>(uniform(0, 24), kBase + kBlocks - start)};
  };

  for (int step = 0; step < 5000; ++step) {
    INFO("seed " << seed << " step " << step);
    const auto op = uniform(0, 9);
    if (op < 4) {  // insert is the most frequent so the space does not run dry
      const Extent e = random_extent();
      const bool expect = model.all(e, false);
      REQUIRE(fs.insert(e) == expect);
      if (expect) model.set(e, true);
    } else if (op < 6) {
      const Extent e = random_extent();
      const bool expect = model.all(e, true);
      REQUIRE(fs.remove(e) == expect);
      if (expect) model.set(e, false);
    } else if (op < 8) {
      const auto want = uniform(0, 24), min_len = uniform(0, 30);
      const BlockNo hint = uniform(0, kBase + kBlocks + 10);
      REQUIRE(fs.take_near(want, min_len, hint) == model.take_near(want, min_len, hint));
    } else if (op < 9) {
      const auto want = uniform(0, 40), min_len = uniform(0, 40);
      REQUIRE(fs.take_best_fit(want, min_len) == model.take_best_fit(want, min_len));
      const auto short_want = uniform(0, 300), short_min = uniform(0, 300);
      REQUIRE(fs.find_short_fit(short_want, short_min) == model.find_short_fit(short_want, short_min));
    } else {
      const Extent e = random_extent();
      REQUIRE(fs.contains(e) == model.all(e, true));
      REQUIRE(fs.intersects(e) == (!e.empty() && !model.all(e, false)));
      const std::optional<Extent> run = fs.run_containing(e.start);
      REQUIRE(run.has_value() == model.free[e.start - kBase]);
      if (run) {
        REQUIRE(run->contains(e.start));
        REQUIRE(model.all(*run, true));
        REQUIRE((run->start == kBase || !model.free[run->start - 1 - kBase]));
        REQUIRE((run->end() == kBase + kBlocks || !model.free[run->end() - kBase]));
      }
    }
    require_matches(fs, model);
  }
}
