// Unit tests for container regions in Allocator: creation, placement inside a
// region, growth (in place first), soft reservations reclaimed under
// pressure, release, mount-time reload, deferred frees, the metadata reserve,
// a randomized model test and concurrent regions. (RegionMap, the slice index
// beneath, is checked through Allocator::consistent() throughout.)
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "alloc/allocator.h"
#include "tests/unit/model_steps.h"

namespace Catch {
template <>
struct StringMaker<dhfs::Extent> {
  static std::string convert(const dhfs::Extent& e) {
    return "[" + std::to_string(e.start) + ",+" + std::to_string(e.len) + ")";
  }
};
}  // namespace Catch

using dhfs::AllocRequest;
using dhfs::Allocator;
using dhfs::BlockNo;
using dhfs::Extent;
using dhfs::RegionId;
using dhfs::RegionInfo;

namespace {

AllocRequest in(RegionId region, std::uint64_t blocks, BlockNo hint = 0, std::uint64_t min_len = 1) {
  AllocRequest r;
  r.want = blocks;
  r.min_len = min_len;
  r.hint = hint;
  r.region = region;
  return r;
}

AllocRequest global(std::uint64_t blocks, BlockNo hint = 0, std::uint64_t min_len = 1) {
  return in(0, blocks, hint, min_len);
}

AllocRequest metadata(std::uint64_t blocks) {
  AllocRequest r = global(blocks);
  r.metadata = true;
  return r;
}

std::uint64_t total(const std::vector<Extent>& extents) {
  std::uint64_t sum = 0;
  for (const Extent& e : extents) sum += e.len;
  return sum;
}

RegionInfo info(const Allocator& a, RegionId id) {
  const auto r = a.region(id);
  REQUIRE(r);
  return *r;
}

std::vector<RegionId> ids(const std::vector<RegionInfo>& infos) {
  std::vector<RegionId> out;
  for (const RegionInfo& r : infos) out.push_back(r.id);
  return out;
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

bool inside(const std::vector<Extent>& slices, const Extent& e) {
  return std::any_of(slices.begin(), slices.end(),
                     [&](const Extent& s) { return e.start >= s.start && e.end() <= s.end(); });
}

}  // namespace

TEST_CASE("Regions: creation reserves one contiguous slice, best fit", "[regions]") {
  Allocator a({1, 100000});
  leave_free(a, {{1000, 300}, {5000, 5000}, {20000, 1200}, {30000, 2000}});

  REQUIRE(a.create_region(7, 1000));
  const RegionInfo r = info(a, 7);
  CHECK(r.id == 7);
  CHECK(r.reserved == std::vector<Extent>{{20000, 1000}});  // the smallest run that holds it
  CHECK(r.reserved_blocks == 1000);
  CHECK(r.free_blocks == 1000);
  CHECK(r.reclaimed_blocks == 0);
  CHECK(a.region_of(20000) == 7);
  CHECK(a.region_of(20999) == 7);
  CHECK(a.region_of(21000) == 0);
  CHECK(a.region_of(19999) == 0);

  // Reserved blocks are still free: the totals do not change.
  CHECK(a.free_blocks() == 8500);
  CHECK(a.available_blocks() == 8500);
  CHECK(a.free_extents() == std::vector<Extent>{{1000, 300}, {5000, 5000}, {20000, 1200}, {30000, 2000}});
  CHECK(a.consistent());

  CHECK_FALSE(a.create_region(7, 10));  // exists
  CHECK_FALSE(a.create_region(0, 10));  // 0 is "no region"
  CHECK_FALSE(a.region(0));
  CHECK_FALSE(a.region(8));

  const auto changed = a.take_changed_regions();
  REQUIRE(changed.size() == 1);
  CHECK(changed[0].id == 7);
  CHECK(changed[0].reserved == r.reserved);
  CHECK(a.take_changed_regions().empty());

  SECTION("an empty region is fine and reserves nothing") {
    REQUIRE(a.create_region(8, 0));
    CHECK(info(a, 8).reserved.empty());
    CHECK(ids(a.regions()) == std::vector<RegionId>{7, 8});
  }
  SECTION("short of space: the largest runs, then less or nothing") {
    REQUIRE(a.create_region(8, 6000));  // no run holds 6000
    CHECK(info(a, 8).reserved == std::vector<Extent>{{5000, 5000}, {30000, 1000}});
    REQUIRE(a.create_region(9, 5000));  // 1000 + 300 + 200 are left
    CHECK(info(a, 9).reserved == std::vector<Extent>{{1000, 300}, {20000 + 1000, 200}, {31000, 1000}});
    CHECK(info(a, 9).reserved_blocks == 1500);
    REQUIRE(a.create_region(10, 100));
    CHECK(info(a, 10).reserved_blocks == 0);
    CHECK(a.free_blocks() == 8500);
    CHECK(a.consistent());
  }
}

TEST_CASE("Regions: allocations stay inside the region and contiguous", "[regions]") {
  Allocator a({1, 100000});
  REQUIRE(a.allocate(global(500)) == Extent{1, 500});
  REQUIRE(a.create_region(1, 2000));
  REQUIRE(a.create_region(2, 2000));
  const auto r1 = info(a, 1).reserved;
  const auto r2 = info(a, 2).reserved;
  REQUIRE(r1 == std::vector<Extent>{{501, 2000}});
  REQUIRE(r2 == std::vector<Extent>{{2501, 2000}});

  SECTION("two files in two regions written in turns each stay in one run") {
    Extent f1{}, f2{};
    for (int i = 0; i < 100; ++i) {
      const auto e1 = a.allocate(in(1, 8, f1.end()));
      const auto e2 = a.allocate(in(2, 8, f2.end()));
      REQUIRE(e1);
      REQUIRE(e2);
      REQUIRE(inside(r1, *e1));
      REQUIRE(inside(r2, *e2));
      if (i == 0) {
        f1 = *e1;
        f2 = *e2;
      } else {
        REQUIRE(e1->start == f1.end());
        REQUIRE(e2->start == f2.end());
        f1.len += e1->len;
        f2.len += e2->len;
      }
    }
    CHECK(f1 == Extent{501, 800});
    CHECK(f2 == Extent{2501, 800});
    CHECK(info(a, 1).free_blocks == 1200);
    CHECK(info(a, 2).free_blocks == 1200);
    // Global requests do not touch the reservations.
    CHECK(a.allocate(global(8)) == Extent{4501, 8});
    CHECK(a.consistent());
  }
  SECTION("allocate_all for a region stays inside it") {
    std::vector<Extent> out;
    REQUIRE(a.allocate_all(in(2, 1500), out));
    CHECK(out == std::vector<Extent>{{2501, 1500}});
    REQUIRE(a.allocate_all(in(2, 100, out.back().end()), out));
    CHECK(out.back() == Extent{4001, 100});
  }
  SECTION("large requests are best fit inside the region") {
    a.free_now({1, 500});  // global space before the regions: not for region 1
    REQUIRE(a.allocate(in(1, 100)) == Extent{501, 100});
    REQUIRE(a.allocate(in(1, 300, 601)) == Extent{601, 300});
    REQUIRE(a.allocate(in(1, 100, 901)) == Extent{901, 100});
    a.free_now({601, 300});  // region 1 free: [601,+300) and [1001,+1500)
    // The hint is in use: best fit.
    CHECK(a.allocate(in(1, 300, 950)) == Extent{601, 300});
    // A free hint is taken exactly, even inside a run (file order kept).
    CHECK(a.allocate(in(1, 300, 1500)) == Extent{1500, 300});
  }
  SECTION("an unknown region means global space") {
    CHECK(a.allocate(in(99, 8)) == Extent{4501, 8});
  }
  SECTION("metadata requests ignore the region") {
    AllocRequest md = in(1, 8);
    md.metadata = true;
    CHECK(a.allocate(md) == Extent{4501, 8});
  }
}

TEST_CASE("Regions: a full region grows in place first", "[regions]") {
  Allocator a({1, 10000});
  a.set_region_growth(50);

  SECTION("at the end of its slice when the space after it is free") {
    REQUIRE(a.create_region(1, 100));
    REQUIRE(info(a, 1).reserved == std::vector<Extent>{{1, 100}});
    a.take_changed_regions();
    std::vector<Extent> out;
    REQUIRE(a.allocate_all(in(1, 100), out));
    CHECK(out == std::vector<Extent>{{1, 100}});
    CHECK(a.take_changed_regions().empty());  // allocating inside changes no slice

    CHECK(a.allocate(in(1, 8, 101)) == Extent{101, 8});
    CHECK(info(a, 1).reserved == std::vector<Extent>{{1, 150}});  // extended in place by the growth
    CHECK(info(a, 1).free_blocks == 42);
    const auto changed = a.take_changed_regions();
    REQUIRE(changed.size() == 1);
    CHECK(changed[0].reserved == std::vector<Extent>{{1, 150}});

    // A request bigger than the growth grows by the request.
    CHECK(a.allocate(in(1, 100, 109)) == Extent{109, 42});  // the rest of the region first
    CHECK(a.allocate(in(1, 100, 151)) == Extent{151, 100});
    CHECK(info(a, 1).reserved == std::vector<Extent>{{1, 250}});
    CHECK(a.consistent());
  }
  SECTION("allocate_all grows in place piece by piece into one run") {
    REQUIRE(a.create_region(1, 100));
    std::vector<Extent> out;
    REQUIRE(a.allocate_all(in(1, 130), out));
    CHECK(out == std::vector<Extent>{{1, 100}, {101, 30}});
    CHECK(info(a, 1).reserved == std::vector<Extent>{{1, 150}});
  }
  SECTION("at the start of its slice when only the space before it is free") {
    a.load_region(1, {{500, 100}});
    REQUIRE(a.mark_used({600, 9401}));
    std::vector<Extent> out;
    REQUIRE(a.allocate_all(in(1, 100), out));
    CHECK(a.allocate(in(1, 8, 600)) == Extent{450, 8});
    CHECK(info(a, 1).reserved == std::vector<Extent>{{450, 150}});
    CHECK(a.consistent());
  }
  SECTION("a contiguous allocation grows the slice at the hint rather than jump to another slice") {
    a.load_region(1, {{100, 100}, {1000, 100}});
    std::vector<Extent> out;
    REQUIRE(a.allocate_all(in(1, 200), out));
    CHECK(out == std::vector<Extent>{{100, 100}, {200, 100}});  // one run on the device
    CHECK(info(a, 1).reserved == std::vector<Extent>{{100, 200}, {1000, 100}});
    CHECK(a.allocate(in(1, 8)) == Extent{1000, 8});  // no hint: the region's own free space
    // A hint just past a slice, in the free space after it: the slice grows
    // to it, leaving room for the blocks in between.
    CHECK(a.allocate(in(1, 8, 320)) == Extent{320, 8});
    CHECK(info(a, 1).reserved == std::vector<Extent>{{100, 270}, {1000, 100}});
    CHECK(a.allocate(in(1, 20, 300)) == Extent{300, 20});
    CHECK(a.consistent());
  }
  SECTION("a new slice elsewhere when nothing next to it is free") {
    REQUIRE(a.create_region(1, 100));
    REQUIRE(a.create_region(2, 100));
    REQUIRE(info(a, 2).reserved == std::vector<Extent>{{101, 100}});
    REQUIRE(a.mark_used({201, 1000}));
    a.free_now({300, 30});  // too small for the growth of 50: not the best fit
    std::vector<Extent> out;
    REQUIRE(a.allocate_all(in(1, 100), out));
    CHECK(a.allocate(in(1, 8, 101)) == Extent{1201, 8});
    CHECK(info(a, 1).reserved == std::vector<Extent>{{1, 100}, {1201, 50}});
    CHECK(info(a, 2).reserved == std::vector<Extent>{{101, 100}});  // neighbours are not touched
    // The new slice then grows in place like any other.
    REQUIRE(a.allocate_all(in(1, 42, 1209), out));
    CHECK(a.allocate(in(1, 8, 1251)) == Extent{1251, 8});
    CHECK(info(a, 1).reserved == std::vector<Extent>{{1, 100}, {1201, 100}});
    CHECK(a.consistent());
  }
  SECTION("into the blocks a grown area gained, when its slice ends at the old end") {
    a.load_region(1, {{9901, 100}});
    REQUIRE(a.mark_used({1, 9900}));
    std::vector<Extent> out;
    REQUIRE(a.allocate_all(in(1, 100), out));
    CHECK_FALSE(a.allocate(in(1, 8, 10001)));  // the area ends at 10001
    a.extend_area(10501);  // dhfsctl grow
    CHECK(a.allocate(in(1, 8, 10001)) == Extent{10001, 8});
    CHECK(info(a, 1).reserved == std::vector<Extent>{{9901, 150}});  // the same slice, longer
    CHECK(a.take_changed_regions().size() == 1);
    CHECK(a.free_blocks() == 10500 - 9900 - 108);
    CHECK(a.consistent());
  }
  SECTION("a region that holds nothing gets a first slice of the growth size") {
    REQUIRE(a.create_region(1, 0));
    CHECK(a.allocate(in(1, 8)) == Extent{1, 8});
    CHECK(info(a, 1).reserved == std::vector<Extent>{{1, 50}});
  }
}

TEST_CASE("Regions: reservations are soft for global requests", "[regions]") {
  Allocator a({1, 1000});
  REQUIRE(a.create_region(1, 500));
  REQUIRE(info(a, 1).reserved == std::vector<Extent>{{1, 500}});
  a.take_changed_regions();

  // While global space lasts, global requests stay out of the region.
  std::vector<Extent> got;
  for (int i = 0; i < 50; ++i) {
    const auto e = a.allocate(global(10, i % 2 ? 0 : 1));
    REQUIRE(e);
    CHECK(a.region_of(e->start) == 0);
    CHECK(e->start >= 501);
    got.push_back(*e);
  }
  CHECK(info(a, 1).free_blocks == 500);
  CHECK(a.free_blocks() == 500);
  CHECK(a.take_changed_regions().empty());

  // Then they take unused reservation back, from the end of its run.
  CHECK(a.allocate(global(10)) == Extent{491, 10});
  RegionInfo r = info(a, 1);
  CHECK(r.reserved == std::vector<Extent>{{1, 490}});
  CHECK(r.reclaimed_blocks == 10);
  CHECK(r.free_blocks == 490);
  auto changed = a.take_changed_regions();
  REQUIRE(changed.size() == 1);
  CHECK(changed[0].reclaimed_blocks == 10);
  CHECK(changed[0].reserved == r.reserved);

  // No ENOSPC while a single block is free anywhere.
  REQUIRE(a.allocate(in(1, 5)) == Extent{1, 5});
  std::uint64_t taken = 0;
  while (a.free_blocks() > 0) {
    const auto e = a.allocate(global(7));
    REQUIRE(e);
    CHECK(a.region_of(e->start) == 0);  // reclaimed blocks left the reservation
    taken += e->len;
  }
  CHECK(taken == 485);
  CHECK_FALSE(a.allocate(global(1)));
  r = info(a, 1);
  CHECK(r.reserved == std::vector<Extent>{{1, 5}});
  CHECK(r.reclaimed_blocks == 495);
  CHECK(a.consistent());

  SECTION("freed reclaimed blocks are global again") {
    a.free_now({491, 10});
    CHECK(a.region_of(491) == 0);
    CHECK(info(a, 1).free_blocks == 0);
    CHECK(a.allocate(in(1, 10)) == Extent{491, 10});  // nothing adjacent is free: a new slice
    CHECK(info(a, 1).reserved == std::vector<Extent>{{1, 5}, {491, 10}});
  }
}

TEST_CASE("Regions: global requests reclaim from the region with the most unused reservation", "[regions]") {
  Allocator a({1, 1000});
  REQUIRE(a.create_region(1, 300));  // [1,+300)
  REQUIRE(a.create_region(2, 700));  // [301,+700)
  CHECK(a.free_blocks() == 1000);
  CHECK(a.allocate(global(100)) == Extent{901, 100});  // best fit inside region 2, from the end
  CHECK(info(a, 2).reclaimed_blocks == 100);
  std::vector<Extent> out;
  REQUIRE(a.allocate_all(global(500), out));  // region 2 has 600, region 1 300
  CHECK(out == std::vector<Extent>{{401, 500}});
  CHECK(info(a, 2).reserved == std::vector<Extent>{{301, 100}});
  REQUIRE(a.allocate_all(global(250), out));  // now region 1 has the most
  CHECK(out.back() == Extent{51, 250});
  CHECK(info(a, 1).reclaimed_blocks == 250);
  CHECK(ids(a.take_changed_regions()) == std::vector<RegionId>{1, 2});
  CHECK(a.consistent());
}

TEST_CASE("Regions: region requests reclaim from other regions", "[regions]") {
  Allocator a({1, 1000});
  REQUIRE(a.create_region(1, 300));  // [1,+300)
  REQUIRE(a.create_region(2, 400));  // [301,+400)
  REQUIRE(a.create_region(3, 300));  // [701,+300)
  a.take_changed_regions();
  std::vector<Extent> out;
  REQUIRE(a.allocate_all(in(1, 300), out));
  REQUIRE(a.allocate(in(3, 100)) == Extent{701, 100});

  // No global space left: region 1 takes from region 2 (400 unused, the most).
  CHECK(a.allocate(in(1, 50, 301)) == Extent{651, 50});
  CHECK(info(a, 1).reserved == std::vector<Extent>{{1, 300}, {651, 50}});
  CHECK(info(a, 2).reserved == std::vector<Extent>{{301, 350}});
  CHECK(info(a, 2).reclaimed_blocks == 50);
  CHECK(ids(a.take_changed_regions()) == std::vector<RegionId>{1, 2});

  // allocate_all takes as much as it needs, piece by piece, all or nothing.
  out.clear();
  REQUIRE(a.allocate_all(in(1, 500), out));
  CHECK(total(out) == 500);
  for (const Extent& e : out) CHECK(a.region_of(e.start) == 1);
  CHECK(a.free_blocks() == 50);
  CHECK(info(a, 1).free_blocks + info(a, 2).free_blocks + info(a, 3).free_blocks == 50);
  out.clear();
  CHECK_FALSE(a.allocate_all(in(1, 51), out));
  CHECK(a.allocate_all(in(1, 50), out));
  CHECK(a.free_blocks() == 0);
  CHECK_FALSE(a.allocate(in(2, 1)));
  CHECK(a.consistent());
}

TEST_CASE("Regions: release returns the unused reservation at once, used blocks later", "[regions]") {
  Allocator a({1, 1000});
  REQUIRE(a.create_region(1, 100));
  REQUIRE(a.create_region(2, 100));
  std::vector<Extent> used;
  REQUIRE(a.allocate_all(in(1, 30), used));
  REQUIRE(used == std::vector<Extent>{{1, 30}});
  REQUIRE(a.allocate(in(1, 10)) == Extent{31, 10});
  a.take_changed_regions();
  a.free_after({31, 10}, 5);  // pending when the region goes away

  a.release_region(1);
  CHECK_FALSE(a.region(1));
  CHECK(ids(a.regions()) == std::vector<RegionId>{2});
  CHECK(a.take_changed_regions().empty());  // released regions are not reported
  for (BlockNo b = 1; b <= 100; ++b) CHECK(a.region_of(b) == 0);
  CHECK(a.free_blocks() == 960);
  CHECK(a.pending_blocks() == 10);
  // Coalesced across owners: [41,+60) is global now, [101,+100) region 2's.
  CHECK(a.free_extents() == std::vector<Extent>{{41, 960}});
  CHECK(a.free_extent_count() == 1);
  CHECK(a.consistent());

  a.free_now({1, 30});
  a.mark_durable(5);
  CHECK(a.free_blocks() == 1000);
  CHECK(a.free_extents() == std::vector<Extent>{{1, 1000}});
  CHECK(info(a, 2).free_blocks == 100);
  CHECK(a.consistent());
  // It is all global space now, and global requests skip region 2's slice.
  CHECK(a.allocate(global(100)) == Extent{1, 100});
  CHECK(a.allocate(global(100)) == Extent{201, 100});
  CHECK(info(a, 2).free_blocks == 100);

  a.release_region(1);  // unknown: nothing happens
  a.release_region(0);
  CHECK(a.consistent());
  // The id may be used again.
  CHECK(a.create_region(1, 10));
}

TEST_CASE("Regions: load_region and mark_used at mount rebuild the same state", "[regions]") {
  const Extent area{10, 5000};
  Allocator a(area);
  a.set_region_growth(64);
  std::vector<Extent> used;
  std::mt19937_64 rng(42);
  REQUIRE(a.create_region(1, 300));
  REQUIRE(a.create_region(2, 200));
  REQUIRE(a.create_region(3, 100));
  for (int i = 0; i < 400; ++i) {
    const RegionId r = static_cast<RegionId>(rng() % 4);
    const BlockNo hint = used.empty() ? 0 : used[rng() % used.size()].end();
    if (auto e = a.allocate(in(r, 1 + rng() % 20, hint))) used.push_back(*e);
    if (rng() % 3 == 0 && !used.empty()) {
      const auto idx = rng() % used.size();
      a.free_now(used[idx]);
      used.erase(used.begin() + static_cast<std::ptrdiff_t>(idx));
    }
  }
  REQUIRE(a.consistent());
  const auto regions = a.regions();

  Allocator b(area);
  for (const RegionInfo& r : regions) b.load_region(r.id, r.reserved);
  for (const Extent& e : used) REQUIRE(b.mark_used(e));
  CHECK(b.consistent());
  CHECK(b.take_changed_regions().empty());  // nothing needed fixing
  CHECK(b.free_extents() == a.free_extents());
  CHECK(b.free_blocks() == a.free_blocks());
  const auto reloaded = b.regions();
  REQUIRE(reloaded.size() == regions.size());
  for (std::size_t i = 0; i < regions.size(); ++i) {
    CHECK(reloaded[i].id == regions[i].id);
    CHECK(reloaded[i].reserved == regions[i].reserved);
    CHECK(reloaded[i].reserved_blocks == regions[i].reserved_blocks);
    CHECK(reloaded[i].free_blocks == regions[i].free_blocks);
  }
  for (BlockNo blk = area.start; blk < area.end(); ++blk) REQUIRE(b.region_of(blk) == a.region_of(blk));
}

TEST_CASE("Regions: load_region fixes up bad slices and reports them", "[regions]") {
  Allocator a({100, 1000});
  a.load_region(1, {{200, 100}});
  a.load_region(2, {{50, 100}, {250, 100}, {400, 100}, {1050, 100}, {2000, 5}});
  a.load_region(3, {{600, 10}, {610, 10}, {700, 0}});  // touching: coalesced
  a.load_region(4, {{800, 10}});
  a.load_region(0, {{900, 10}});  // ignored
  CHECK(info(a, 1).reserved == std::vector<Extent>{{200, 100}});
  // Clipped to the area, the overlap with region 1 dropped, the one outside dropped.
  CHECK(info(a, 2).reserved == std::vector<Extent>{{100, 50}, {400, 100}, {1050, 50}});
  CHECK(info(a, 3).reserved == std::vector<Extent>{{600, 20}});
  CHECK(a.region_of(900) == 0);
  CHECK(ids(a.take_changed_regions()) == std::vector<RegionId>{2, 3});
  CHECK(a.free_blocks() == 1000);
  CHECK(a.consistent());

  SECTION("mark_used takes blocks from whichever free set holds them") {
    CHECK(a.mark_used({140, 70}));  // region 2, global, region 1
    CHECK(info(a, 2).free_blocks == 190);
    CHECK(info(a, 1).free_blocks == 90);
    CHECK_FALSE(a.mark_used({205, 1}));  // already used
    CHECK(a.free_blocks() == 930);
    CHECK(a.consistent());
  }
  SECTION("loading again adds to the region") {
    a.load_region(4, {{800, 20}});
    CHECK(info(a, 4).reserved == std::vector<Extent>{{800, 20}});
  }
}

TEST_CASE("Regions: deferred frees return to the region once durable", "[regions]") {
  Allocator a({1, 1000});
  REQUIRE(a.create_region(1, 100));
  std::vector<Extent> out;
  REQUIRE(a.allocate_all(in(1, 100), out));
  REQUIRE(info(a, 1).free_blocks == 0);

  a.free_after({10, 5}, 7);
  a.free_after({20, 5}, 8);
  CHECK(a.pending_blocks() == 10);
  CHECK(info(a, 1).free_blocks == 0);
  CHECK(a.free_blocks() == 900);

  // Pending blocks are not handed out: the region grows instead.
  a.set_region_growth(10);
  CHECK(a.allocate(in(1, 5, 10)) == Extent{101, 5});
  CHECK(info(a, 1).free_blocks == 5);

  a.mark_durable(7);
  CHECK(a.pending_blocks() == 5);
  CHECK(info(a, 1).free_blocks == 10);
  CHECK(a.free_blocks() == 900);
  CHECK(a.allocate(in(1, 5, 10)) == Extent{10, 5});

  // Double frees are still caught, in regions as in global space.
  a.free_now({106, 1});     // free in the region
  a.free_now({22, 1});      // pending
  a.free_after({106, 2}, 9);
  CHECK(a.pending_blocks() == 5);
  CHECK(info(a, 1).free_blocks == 5);
  CHECK(a.consistent());

  a.free_after({30, 5}, 6);  // already durable
  CHECK(info(a, 1).free_blocks == 10);
  a.mark_durable(8);
  CHECK(info(a, 1).free_blocks == 15);
  CHECK(a.pending_blocks() == 0);
  CHECK(a.consistent());
}

TEST_CASE("Regions: the metadata reserve applies to all free space", "[regions]") {
  Allocator a({1, 1000});
  a.set_metadata_reserve(300);
  REQUIRE(a.create_region(1, 950));
  CHECK(a.free_blocks() == 1000);
  CHECK(a.available_blocks() == 700);

  std::vector<Extent> out;
  CHECK_FALSE(a.allocate_all(in(1, 701), out));
  // 700 of the region's 950 would leave 250 there and 50 outside: no run a
  // checkpoint can take (at least FreeSpace::kLongRun blocks). The short
  // global run is taken instead, then the reserve stays one long run.
  CHECK(a.allocate(in(1, 950)) == Extent{951, 50});
  CHECK(a.allocate(in(1, 950)) == Extent{1, 650});  // shortened to stay above the reserve
  CHECK(a.available_blocks() == 0);
  CHECK_FALSE(a.allocate(in(1, 1)));
  CHECK_FALSE(a.allocate(global(1)));
  // Metadata may use it all, region 1's unused reservation included.
  CHECK(a.allocate(metadata(300)) == Extent{651, 300});
  CHECK(info(a, 1).reclaimed_blocks == 300);
  CHECK(a.free_blocks() == 0);
  CHECK(a.consistent());
}

TEST_CASE("Regions: metadata takes global space first, then unused reservations", "[regions]") {
  Allocator a({1, 1000});
  REQUIRE(a.create_region(1, 950));
  CHECK(a.allocate(metadata(60)) == Extent{951, 50});
  CHECK(a.allocate(metadata(60)) == Extent{891, 60});  // from the end of region 1's run
  CHECK(info(a, 1).reclaimed_blocks == 60);
  CHECK(a.consistent());
}

TEST_CASE("Regions match a block model under random operations", "[regions][random]") {
  const auto seed = GENERATE(1u, 2u, 3u, 4u);
  std::mt19937_64 rng(seed);
  auto uniform = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  };
  constexpr BlockNo kBase = 5;
  constexpr std::uint64_t kBlocks = 1500;
  constexpr std::uint64_t kReserve = 20;
  constexpr RegionId kMaxRegion = 6;
  Allocator a({kBase, kBlocks});
  a.set_metadata_reserve(kReserve);
  a.set_region_growth(40);

  enum class State { kFree, kUsed, kPending };
  std::vector<State> state(kBlocks, State::kFree);
  std::multimap<std::uint64_t, Extent> pending;  // seq -> extent
  std::vector<Extent> used;
  std::set<RegionId> live;
  std::map<RegionId, std::vector<Extent>> seen;  // reservation as last reported
  std::uint64_t next_seq = 10, durable = 0;

  auto free_count = [&] { return static_cast<std::uint64_t>(std::count(state.begin(), state.end(), State::kFree)); };
  auto claim = [&](const Extent& e) {
    REQUIRE(e.start >= kBase);
    REQUIRE(e.end() <= kBase + kBlocks);
    for (BlockNo b = e.start; b < e.end(); ++b) {
      REQUIRE(state[b - kBase] == State::kFree);  // never handed out twice
      state[b - kBase] = State::kUsed;
    }
    used.push_back(e);
  };
  auto set = [&](const Extent& e, State s) {
    for (BlockNo b = e.start; b < e.end(); ++b) state[b - kBase] = s;
  };
  // Where the extent of a request for `r` must lie: inside r's reservation,
  // or outside every reservation for global requests.
  auto check_owner = [&](const Extent& e, RegionId r) {
    for (BlockNo b = e.start; b < e.end(); ++b) REQUIRE(a.region_of(b) == r);
  };

  for (int step = 0; step < dhfs::test::model_steps(4000); ++step) {
    INFO("seed " << seed << " step " << step);
    auto op = uniform(0, 19);
    // Phases: filling up (under pressure, reservations are reclaimed), then
    // draining (plenty of global space, regions grow in place).
    if ((step / 500) % 2 == 1 && op < 9 && uniform(0, 2) != 0) op = 9 + uniform(0, 4);
    const auto region = static_cast<RegionId>(uniform(0, kMaxRegion));
    const RegionId effective = live.count(region) ? region : 0;
    const BlockNo hint = used.empty() || uniform(0, 3) == 0 ? uniform(0, kBase + kBlocks) : used.back().end();
    const std::uint64_t free_before = free_count();
    if (op < 6) {
      AllocRequest req = in(region, uniform(0, 9) == 0 ? uniform(1, 400) : uniform(1, 24), hint, uniform(1, 4));
      req.metadata = uniform(0, 5) == 0;
      const std::uint64_t grantable = req.metadata ? free_before : (free_before > kReserve ? free_before - kReserve : 0);
      const auto e = a.allocate(req);
      if (e) {
        REQUIRE(e->len >= std::min(req.min_len, req.want));
        REQUIRE(e->len <= req.want);
        claim(*e);
        check_owner(*e, req.metadata ? 0 : effective);
      } else if (req.min_len == 1) {
        REQUIRE(grantable == 0);  // soft reservations: no ENOSPC while a block is free
      }
    } else if (op < 9) {
      AllocRequest req = in(region, uniform(1, 80), hint);
      req.metadata = uniform(0, 5) == 0;
      const std::uint64_t grantable = req.metadata ? free_before : (free_before > kReserve ? free_before - kReserve : 0);
      std::vector<Extent> out;
      if (a.allocate_all(req, out)) {
        REQUIRE(total(out) == req.want);
        for (const Extent& e : out) {
          claim(e);
          check_owner(e, req.metadata ? 0 : effective);
        }
      } else {
        REQUIRE(out.empty());
        REQUIRE(req.want > grantable);  // min_len 1: only a real shortage fails
      }
    } else if (op < 14 && !used.empty()) {
      const auto i = uniform(0, used.size() - 1);
      const Extent e = used[i];
      used.erase(used.begin() + static_cast<std::ptrdiff_t>(i));
      if (op < 11) {
        a.free_now(e);
        set(e, State::kFree);
      } else {
        const auto seq = next_seq + 2 - uniform(0, 3);
        a.free_after(e, seq);
        if (seq <= durable) {
          set(e, State::kFree);
        } else {
          pending.emplace(seq, e);
          set(e, State::kPending);
        }
      }
    } else if (op == 14) {
      durable = std::max(durable, next_seq - uniform(0, 4));
      a.mark_durable(durable);
      const auto last = pending.upper_bound(durable);
      for (auto it = pending.begin(); it != last; ++it) set(it->second, State::kFree);
      pending.erase(pending.begin(), last);
      ++next_seq;
    } else if (op == 15 || op == 16) {
      const bool created = a.create_region(region, uniform(0, 300));
      REQUIRE(created == (region != 0 && !live.count(region)));
      if (created) live.insert(region);
    } else if (op == 17) {
      a.release_region(region);
      live.erase(region);
      seen.erase(region);
    } else if (op == 18) {
      a.set_region_growth(uniform(0, 100));
    } else if (used.size() > 0 && uniform(0, 9) == 0) {
      // A bad free (double free) must change nothing.
      const Extent e = used[uniform(0, used.size() - 1)];
      a.free_now(e);
      a.free_now(e);  // the second one is a double free
      set(e, State::kFree);
      used.erase(std::find(used.begin(), used.end(), e));
    }

    // After every step: the whole state against the model.
    REQUIRE(a.consistent());
    const std::uint64_t free = free_count();
    const auto waiting = static_cast<std::uint64_t>(std::count(state.begin(), state.end(), State::kPending));
    REQUIRE(a.free_blocks() == free);
    REQUIRE(a.pending_blocks() == waiting);
    REQUIRE(a.available_blocks() == (free > kReserve ? free - kReserve : 0));

    const auto infos = a.regions();
    REQUIRE(ids(infos) == std::vector<RegionId>(live.begin(), live.end()));
    std::vector<RegionId> owner(kBlocks, 0);  // from the regions' own slice lists
    std::map<RegionId, std::uint64_t> region_free;
    for (const RegionInfo& r : infos) {
      std::uint64_t sum = 0;
      for (std::size_t i = 0; i < r.reserved.size(); ++i) {
        const Extent& s = r.reserved[i];
        REQUIRE(!s.empty());
        if (i > 0) REQUIRE(r.reserved[i - 1].end() < s.start);  // ascending, coalesced
        for (BlockNo b = s.start; b < s.end(); ++b) {
          REQUIRE(owner[b - kBase] == 0);  // slices of regions are disjoint
          owner[b - kBase] = r.id;
        }
        sum += s.len;
      }
      REQUIRE(sum == r.reserved_blocks);
      region_free[r.id] = 0;
    }
    // Every free block is owned by exactly one free set: each region's free
    // count is exactly the free blocks inside its slices.
    std::uint64_t listed = 0;
    for (const Extent& e : a.free_extents()) {
      for (BlockNo b = e.start; b < e.end(); ++b) {
        REQUIRE(state[b - kBase] == State::kFree);
        if (owner[b - kBase] != 0) ++region_free[owner[b - kBase]];
      }
      listed += e.len;
    }
    REQUIRE(listed == free);
    for (const RegionInfo& r : infos) REQUIRE(r.free_blocks == region_free[r.id]);
    // The block index agrees with the slice lists (sampled: it costs a lock per block).
    for (int k = 0; k < 64; ++k) {
      const BlockNo b = kBase + uniform(0, kBlocks - 1);
      REQUIRE(a.region_of(b) == owner[b - kBase]);
    }
    // Every change of a reservation is reported.
    const auto changed = a.take_changed_regions();
    std::set<RegionId> reported;
    for (const RegionInfo& r : changed) {
      REQUIRE(live.count(r.id));
      reported.insert(r.id);
    }
    for (const RegionInfo& r : infos) {
      if (seen[r.id] != r.reserved) REQUIRE(reported.count(r.id));
      seen[r.id] = r.reserved;
    }
  }
  // Free everything: all space comes back, as one run.
  for (const Extent& e : used) a.free_now(e);
  a.mark_durable(next_seq + 10);
  CHECK(a.free_blocks() == kBlocks);
  CHECK(a.free_extents() == std::vector<Extent>{{kBase, kBlocks}});
  CHECK(a.consistent());
}

TEST_CASE("Regions: threads allocating in different regions never collide", "[regions][threads]") {
  constexpr BlockNo kBase = 1;
  constexpr std::uint64_t kBlocks = 40000;
  Allocator a({kBase, kBlocks});
  a.set_metadata_reserve(50);
  a.set_region_growth(256);
  for (RegionId r = 1; r <= 4; ++r) REQUIRE(a.create_region(r, 2000));

  std::mutex owners_mu;
  std::vector<int> owner(kBlocks, -1);  // -1: not handed out
  std::atomic<int> violations{0}, outside{0};
  std::atomic<std::uint64_t> next_seq{10};

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
  auto unclaim = [&](const Extent& e) {
    std::lock_guard lock(owners_mu);
    for (BlockNo b = e.start; b < e.end(); ++b) owner[b - kBase] = -1;
  };

  auto worker = [&](int id) {
    const auto region = static_cast<RegionId>(id + 1);
    std::mt19937_64 rng(2000 + id);
    auto uniform = [&](std::uint64_t lo, std::uint64_t hi) {
      return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
    };
    std::vector<Extent> held;
    for (int i = 0; i < 4000; ++i) {
      const auto op = uniform(0, 9);
      const BlockNo hint = held.empty() ? 0 : held.back().end();
      if (op < 4) {
        if (auto e = a.allocate(in(region, uniform(0, 9) == 0 ? 300 : uniform(1, 32), hint))) {
          claim(*e, id);
          // Allocated blocks cannot be reclaimed, so they stay in the region.
          if (a.region_of(e->start) != region || a.region_of(e->end() - 1) != region) ++outside;
          held.push_back(*e);
        }
      } else if (op < 5) {
        std::vector<Extent> out;
        if (a.allocate_all(in(region, uniform(1, 100), hint), out)) {
          for (const Extent& e : out) {
            claim(e, id);
            if (a.region_of(e.start) != region) ++outside;
            held.push_back(e);
          }
        }
      } else if (op < 6) {
        if (auto e = a.allocate(global(uniform(1, 16)))) {  // some global traffic too
          claim(*e, id);
          held.push_back(*e);
        }
      } else if (!held.empty()) {
        const auto idx = uniform(0, held.size() - 1);
        const Extent e = held[idx];
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(idx));
        unclaim(e);
        if (op < 8) {
          a.free_now(e);
        } else {
          a.free_after(e, next_seq.fetch_add(1));
          if (op == 9) a.mark_durable(next_seq.load() - uniform(0, 3));
        }
      }
      if (i % 500 == 0) a.take_changed_regions();
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
  CHECK(outside == 0);
  a.mark_durable(next_seq.load());
  CHECK(a.pending_blocks() == 0);
  CHECK(a.free_blocks() == kBlocks);
  CHECK(a.free_extents() == std::vector<Extent>{{kBase, kBlocks}});
  CHECK(a.consistent());
  std::uint64_t reserved = 0;
  for (const RegionInfo& r : a.regions()) {
    reserved += r.reserved_blocks;
    CHECK(r.free_blocks == r.reserved_blocks);
  }
  CHECK(reserved <= kBlocks);
}
