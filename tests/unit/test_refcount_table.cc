#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <vector>

#include "alloc/refcount_table.h"

using namespace dhfs;

namespace {
// Block -> references, for blocks with at least one.
using Model = std::map<BlockNo, std::uint32_t>;

void check_against(const RefcountTable& t, const Model& m, BlockNo limit) {
  std::uint64_t shared = 0, saved = 0;
  for (BlockNo b = 0; b < limit; ++b) {
    auto it = m.find(b);
    std::uint32_t want = it == m.end() ? 1 : it->second;
    INFO("block " << b);
    REQUIRE(t.refs(b) == want);
    if (want >= 2) {
      ++shared;
      saved += want - 1;
    }
  }
  REQUIRE(t.shared_blocks() == shared);
  REQUIRE(t.saved_blocks() == saved);
  // Coalesced: no two adjacent ranges with the same count.
  Extent prev{};
  std::uint32_t prev_count = 0;
  t.for_each([&](Extent e, std::uint32_t c) {
    REQUIRE(c >= 2);
    REQUIRE(!(prev.end() == e.start && prev_count == c));
    prev = e;
    prev_count = c;
  });
}
}  // namespace

TEST_CASE("refcount table: add and drop references", "[refcount]") {
  RefcountTable t;
  std::vector<RefcountChange> changes;
  t.add_ref({100, 10}, &changes);
  CHECK(t.refs(99) == 1);
  CHECK(t.refs(100) == 2);
  CHECK(t.refs(109) == 2);
  CHECK(t.refs(110) == 1);
  REQUIRE(changes.size() == 1);
  CHECK(changes[0].extent == Extent{100, 10});
  CHECK(changes[0].count == 2);

  changes.clear();
  t.add_ref({105, 10}, &changes);  // overlaps the tail: 105..109 -> 3, 110..114 -> 2
  CHECK(t.refs(104) == 2);
  CHECK(t.refs(105) == 3);
  CHECK(t.refs(110) == 2);
  CHECK(t.range_count() == 3);
  CHECK(t.shared_blocks() == 15);
  CHECK(t.saved_blocks() == 20);

  std::vector<Extent> freed;
  t.drop_ref({100, 15}, freed);
  CHECK(freed.empty());  // nothing reached zero: every block still has one reference
  CHECK(t.refs(100) == 1);
  CHECK(t.refs(107) == 2);
  CHECK(t.refs(112) == 1);
  t.drop_ref({100, 20}, freed);
  // 100..104, 110..119 had one reference and are freed; 105..109 go 2 -> 1.
  REQUIRE(freed.size() == 2);
  CHECK(freed[0] == Extent{100, 5});
  CHECK(freed[1] == Extent{110, 10});
  CHECK(t.range_count() == 0);
  CHECK(t.shared_blocks() == 0);
}

TEST_CASE("refcount table: runs, any_shared and set", "[refcount]") {
  RefcountTable t;
  t.set({10, 5}, 4);
  t.set({15, 5}, 4);
  CHECK(t.range_count() == 1);  // merged
  t.set({12, 2}, 1);
  CHECK(t.range_count() == 2);
  CHECK(t.any_shared({0, 10}) == false);
  CHECK(t.any_shared({0, 11}) == true);
  CHECK(t.any_shared({12, 2}) == false);
  CHECK(t.any_shared({19, 5}) == true);
  std::vector<std::pair<Extent, std::uint32_t>> runs;
  t.for_runs({8, 14}, [&](Extent e, std::uint32_t c) { runs.push_back({e, c}); });
  REQUIRE(runs.size() == 5);
  CHECK(runs[0] == std::pair{Extent{8, 2}, 1u});
  CHECK(runs[1] == std::pair{Extent{10, 2}, 4u});
  CHECK(runs[2] == std::pair{Extent{12, 2}, 1u});
  CHECK(runs[3] == std::pair{Extent{14, 6}, 4u});
  CHECK(runs[4] == std::pair{Extent{20, 2}, 1u});
}

TEST_CASE("refcount table: random operations match a per-block model", "[refcount]") {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    std::mt19937_64 rng(seed);
    constexpr BlockNo kBlocks = 512;
    RefcountTable t;
    Model m;
    for (int step = 0; step < 3000; ++step) {
      BlockNo start = rng() % kBlocks;
      std::uint64_t len = 1 + rng() % std::min<std::uint64_t>(64, kBlocks - start);
      Extent e{start, len};
      std::vector<RefcountChange> changes;
      if (rng() % 2 == 0) {
        t.add_ref(e, &changes);
        for (BlockNo b = e.start; b < e.end(); ++b) m[b] = (m.count(b) ? m[b] : 1) + 1;
      } else {
        // Only drop references that exist beyond the implicit one, or
        // free blocks with exactly one (which then leave the model too).
        std::vector<Extent> freed;
        t.drop_ref(e, freed, &changes);
        std::uint64_t freed_blocks = 0;
        for (const Extent& f : freed) freed_blocks += f.len;
        std::uint64_t want_freed = 0;
        for (BlockNo b = e.start; b < e.end(); ++b) {
          std::uint32_t c = m.count(b) ? m[b] : 1;
          if (c == 1) ++want_freed;
          if (c <= 2) m.erase(b);
          else m[b] = c - 1;
        }
        REQUIRE(freed_blocks == want_freed);
      }
      // Every change names the count its range has now.
      for (const auto& ch : changes)
        for (BlockNo b = ch.extent.start; b < ch.extent.end(); ++b)
          if (ch.count >= 1) REQUIRE(t.refs(b) == ch.count);
      if (step % 100 == 0) check_against(t, m, kBlocks);
    }
    check_against(t, m, kBlocks);
  }
}
