// Tests of fs/extent_map.h: the block map of one file.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fs/extent_map.h"
#include "fs/records.h"
#include "tests/unit/model_steps.h"

namespace dhfs {
namespace {

constexpr std::uint64_t kEnd = std::numeric_limits<std::uint64_t>::max();

std::string dump(const ExtentMap& m) {
  std::ostringstream o;
  for (const FileExtent& e : m.extents()) o << "[" << e.lblk << "+" << e.len << "->" << e.pblk << " f" << e.flags << "] ";
  return o.str();
}

// Structural invariants: sorted, non-empty, non-overlapping, maximally
// merged, and mapped_blocks equal to the sum of the lengths.
void check_invariants(const ExtentMap& m) {
  INFO(dump(m));
  std::uint64_t sum = 0;
  const auto& ex = m.extents();
  for (std::size_t i = 0; i < ex.size(); ++i) {
    REQUIRE(ex[i].len > 0);
    REQUIRE(ex[i].pblk != 0);
    sum += ex[i].len;
    if (i > 0) {
      REQUIRE(ex[i - 1].lend() <= ex[i].lblk);
      const bool joinable = ex[i - 1].lend() == ex[i].lblk && ex[i - 1].pblk + ex[i - 1].len == ex[i].pblk &&
                            ex[i - 1].flags == ex[i].flags &&
                            std::uint64_t{ex[i - 1].len} + ex[i].len <= std::numeric_limits<std::uint32_t>::max();
      REQUIRE_FALSE(joinable);
    }
  }
  REQUIRE(m.mapped_blocks() == sum);
  REQUIRE(m.extent_count() == ex.size());
  REQUIRE(m.empty() == ex.empty());
}

}  // namespace

TEST_CASE("extent_map: an empty map is one hole", "[extent_map]") {
  ExtentMap m;
  CHECK(m.empty());
  CHECK(m.mapped_blocks() == 0);
  CHECK_FALSE(m.find(0));
  CHECK_FALSE(m.find_before(10));
  CHECK_FALSE(m.next_data(0));
  CHECK(m.next_hole(0) == 0);
  CHECK(m.next_hole(12345) == 12345);
  auto segs = m.segments(5, 10);
  REQUIRE(segs.size() == 1);
  CHECK(segs[0].hole());
  CHECK(segs[0].lblk == 5);
  CHECK(segs[0].len == 10);
  CHECK(m.segments(0, 0).empty());
}

TEST_CASE("extent_map: a map emptied by unmapping works like a new one", "[extent_map]") {
  // The tree behind the map is freed with its last extent (memory per
  // inode): everything must still work on both sides of that.
  ExtentMap m;
  m.set(0, 5, 0, 0);  // unmapping from an empty map
  CHECK(m.empty());
  m.set(3, 4, 50, 0);
  m.set(10, 2, 90, 0);
  std::vector<Segment> displaced;
  m.set(0, 20, 0, 0, &displaced);
  REQUIRE(displaced.size() == 2);
  CHECK(displaced[0].pblk == 50);
  CHECK(displaced[1].pblk == 90);
  check_invariants(m);
  CHECK(m.begin() == m.end());
  CHECK_FALSE(m.next_data(0));
  CHECK(m.next_hole(7) == 7);
  m.set(1, 2, 70, 0);
  check_invariants(m);
  CHECK(m.find(2)->pblk == 70);
  m.clear();
  CHECK(m.empty());
  CHECK(m.segments(0, 4).size() == 1);
}

TEST_CASE("extent_map: set, overwrite, split and unmap", "[extent_map]") {
  ExtentMap m;
  m.set(10, 10, 100, 0);  // [10,20) -> 100
  check_invariants(m);
  CHECK(m.extents() == std::vector<FileExtent>{{10, 100, 10, 0}});
  CHECK(m.mapped_blocks() == 10);

  SECTION("overwriting the middle splits in three") {
    std::vector<Segment> displaced;
    m.set(13, 2, 500, 0, &displaced);
    check_invariants(m);
    CHECK(m.extents() == std::vector<FileExtent>{{10, 100, 3, 0}, {13, 500, 2, 0}, {15, 105, 5, 0}});
    CHECK(m.mapped_blocks() == 10);
    REQUIRE(displaced.size() == 1);
    CHECK(displaced[0].lblk == 13);
    CHECK(displaced[0].len == 2);
    CHECK(displaced[0].pblk == 103);
  }
  SECTION("unmapping the middle leaves two pieces") {
    std::vector<Segment> displaced;
    m.set(12, 3, 0, 0, &displaced);
    check_invariants(m);
    CHECK(m.extents() == std::vector<FileExtent>{{10, 100, 2, 0}, {15, 105, 5, 0}});
    CHECK(m.mapped_blocks() == 7);
    REQUIRE(displaced.size() == 1);
    CHECK(displaced[0].pblk == 102);
    CHECK(displaced[0].len == 3);
  }
  SECTION("overwriting across several extents and holes") {
    m.set(30, 5, 300, 0);
    m.set(40, 5, 400, kExtentUnwritten);
    check_invariants(m);
    std::vector<Segment> displaced;
    m.set(15, 27, 900, 0, &displaced);  // [15,42)
    check_invariants(m);
    CHECK(m.extents() == std::vector<FileExtent>{{10, 100, 5, 0}, {15, 900, 27, 0}, {42, 402, 3, kExtentUnwritten}});
    REQUIRE(displaced.size() == 3);
    CHECK((displaced[0].lblk == 15 && displaced[0].len == 5 && displaced[0].pblk == 105));
    CHECK((displaced[1].lblk == 30 && displaced[1].len == 5 && displaced[1].pblk == 300));
    CHECK((displaced[2].lblk == 40 && displaced[2].len == 2 && displaced[2].pblk == 400 &&
           displaced[2].flags == kExtentUnwritten));
    CHECK(m.mapped_blocks() == 5 + 27 + 3);
  }
  SECTION("unmapping a hole displaces nothing") {
    std::vector<Segment> displaced;
    m.set(50, 10, 0, 0, &displaced);
    CHECK(displaced.empty());
    CHECK(m.mapped_blocks() == 10);
  }
  SECTION("a zero-length set changes nothing") {
    m.set(12, 0, 0, 0);
    m.set(12, 0, 777, 0);
    CHECK(m.extents() == std::vector<FileExtent>{{10, 100, 10, 0}});
  }
  SECTION("clear") {
    m.clear();
    CHECK(m.empty());
    CHECK(m.mapped_blocks() == 0);
  }
}

TEST_CASE("extent_map: physically contiguous neighbours merge", "[extent_map]") {
  ExtentMap m;
  SECTION("appending") {
    for (std::uint64_t i = 0; i < 100; ++i) m.set(i, 1, 1000 + i, 0);
    check_invariants(m);
    CHECK(m.extents() == std::vector<FileExtent>{{0, 1000, 100, 0}});
  }
  SECTION("prepending") {
    for (std::uint64_t i = 100; i-- > 0;) m.set(i, 1, 1000 + i, 0);
    CHECK(m.extents() == std::vector<FileExtent>{{0, 1000, 100, 0}});
  }
  SECTION("filling a gap joins both sides") {
    m.set(0, 10, 1000, 0);
    m.set(20, 10, 1020, 0);
    CHECK(m.extent_count() == 2);
    m.set(10, 10, 1010, 0);
    CHECK(m.extents() == std::vector<FileExtent>{{0, 1000, 30, 0}});
  }
  SECTION("re-mapping a split piece back joins it again") {
    m.set(0, 30, 1000, 0);
    m.set(10, 10, 5000, 0);
    CHECK(m.extent_count() == 3);
    m.set(10, 10, 1010, 0);
    CHECK(m.extents() == std::vector<FileExtent>{{0, 1000, 30, 0}});
  }
  SECTION("converting unwritten to written joins written neighbours") {
    m.set(0, 10, 1000, 0);
    m.set(10, 10, 1010, kExtentUnwritten);
    m.set(20, 10, 1020, 0);
    CHECK(m.extent_count() == 3);
    m.set(10, 10, 1010, 0);
    CHECK(m.extents() == std::vector<FileExtent>{{0, 1000, 30, 0}});
  }
  SECTION("no merge across different flags, a logical gap or a physical gap") {
    m.set(0, 10, 1000, 0);
    m.set(10, 10, 1010, kExtentUnwritten);
    m.set(21, 10, 1021, kExtentUnwritten);
    m.set(31, 10, 2000, kExtentUnwritten);
    check_invariants(m);
    CHECK(m.extent_count() == 4);
  }
  check_invariants(m);
}

TEST_CASE("extent_map: segments cover holes and mapped parts exactly", "[extent_map]") {
  ExtentMap m;
  m.set(10, 5, 100, 0);
  m.set(20, 5, 200, kExtentUnwritten);
  auto segs = m.segments(0, 30);
  REQUIRE(segs.size() == 5);
  CHECK((segs[0].lblk == 0 && segs[0].len == 10 && segs[0].hole()));
  CHECK((segs[1].lblk == 10 && segs[1].len == 5 && segs[1].pblk == 100 && segs[1].flags == 0));
  CHECK((segs[2].lblk == 15 && segs[2].len == 5 && segs[2].hole()));
  CHECK((segs[3].lblk == 20 && segs[3].len == 5 && segs[3].pblk == 200 && segs[3].flags == kExtentUnwritten));
  CHECK((segs[4].lblk == 25 && segs[4].len == 5 && segs[4].hole()));

  // A window that starts and ends inside extents.
  segs = m.segments(12, 10);
  REQUIRE(segs.size() == 3);
  CHECK((segs[0].lblk == 12 && segs[0].len == 3 && segs[0].pblk == 102));
  CHECK((segs[1].lblk == 15 && segs[1].len == 5 && segs[1].hole()));
  CHECK((segs[2].lblk == 20 && segs[2].len == 2 && segs[2].pblk == 200));

  // Inside one extent.
  segs = m.segments(11, 2);
  REQUIRE(segs.size() == 1);
  CHECK((segs[0].lblk == 11 && segs[0].len == 2 && segs[0].pblk == 101));

  // The whole address space.
  segs = m.segments(0, kEnd);
  std::uint64_t covered = 0;
  for (const Segment& s : segs) covered += s.len;
  CHECK(covered == kEnd);
  CHECK(segs.back().hole());
  CHECK(segs.back().lblk == 25);
}

TEST_CASE("extent_map: find and find_before", "[extent_map]") {
  ExtentMap m;
  m.set(10, 5, 100, 0);
  m.set(15, 5, 300, 0);  // adjacent logically, not physically
  CHECK_FALSE(m.find(9));
  CHECK(m.find(10) == FileExtent{10, 100, 5, 0});
  CHECK(m.find(14) == FileExtent{10, 100, 5, 0});
  CHECK(m.find(15) == FileExtent{15, 300, 5, 0});
  CHECK(m.find(19) == FileExtent{15, 300, 5, 0});
  CHECK_FALSE(m.find(20));
  CHECK_FALSE(m.find(kEnd));
  CHECK_FALSE(m.find_before(0));
  CHECK_FALSE(m.find_before(10));
  CHECK(m.find_before(11) == FileExtent{10, 100, 5, 0});
  CHECK(m.find_before(15) == FileExtent{10, 100, 5, 0});
  CHECK(m.find_before(20) == FileExtent{15, 300, 5, 0});
  CHECK_FALSE(m.find_before(21));
}

TEST_CASE("extent_map: next_data and next_hole", "[extent_map]") {
  ExtentMap m;
  m.set(10, 5, 100, 0);
  m.set(15, 5, 300, kExtentUnwritten);  // touching: one data run [10,20)
  m.set(30, 1, 400, 0);
  CHECK(m.next_data(0) == 10u);
  CHECK(m.next_data(10) == 10u);
  CHECK(m.next_data(17) == 17u);
  CHECK(m.next_data(20) == 30u);
  CHECK(m.next_data(30) == 30u);
  CHECK_FALSE(m.next_data(31));
  CHECK(m.next_hole(0) == 0u);
  CHECK(m.next_hole(10) == 20u);
  CHECK(m.next_hole(16) == 20u);
  CHECK(m.next_hole(20) == 20u);
  CHECK(m.next_hole(30) == 31u);
  CHECK(m.next_hole(1000) == 1000u);
}

TEST_CASE("extent_map: unmapping to the end of the address space", "[extent_map]") {
  ExtentMap m;
  m.set(0, 10, 100, 0);
  m.set(20, 10, 200, 0);
  m.set(1ULL << 40, 3, 300, 0);
  m.set(kEnd - 5, 5, 500, 0);  // the very last blocks a file can have
  check_invariants(m);
  CHECK(m.mapped_blocks() == 28);

  SECTION("from inside an extent") {
    std::vector<Segment> displaced;
    m.set(5, kEnd - 5, 0, 0, &displaced);
    check_invariants(m);
    CHECK(m.extents() == std::vector<FileExtent>{{0, 100, 5, 0}});
    CHECK(m.mapped_blocks() == 5);
    std::uint64_t gone = 0;
    for (const Segment& s : displaced) gone += s.len;
    CHECK(gone == 23);
    CHECK(displaced.size() == 4);
  }
  SECTION("from a hole") {
    m.set(15, kEnd - 15, 0, 0);
    CHECK(m.extents() == std::vector<FileExtent>{{0, 100, 10, 0}});
    CHECK(m.mapped_blocks() == 10);
  }
  SECTION("from 0") {
    m.set(0, kEnd, 0, 0);
    CHECK(m.empty());
    CHECK(m.mapped_blocks() == 0);
  }
  SECTION("a length that overflows is clamped to the end") {
    m.set(25, kEnd, 0, 0);
    CHECK(m.extents() == std::vector<FileExtent>{{0, 100, 10, 0}, {20, 200, 5, 0}});
    CHECK(m.mapped_blocks() == 15);
  }
}

TEST_CASE("extent_map: runs longer than 32 bits are split", "[extent_map]") {
  ExtentMap m;
  const std::uint64_t n = (1ULL << 33) + 7;
  m.set(5, n, 1000, 0);
  check_invariants(m);
  CHECK(m.mapped_blocks() == n);
  CHECK(m.extent_count() == 3);
  CHECK(m.find(5 + n - 1)->pblk + (5 + n - 1 - m.find(5 + n - 1)->lblk) == 1000 + n - 1);
  CHECK(m.next_hole(5) == 5 + n);
  m.set(6, n - 2, 0, 0);
  check_invariants(m);
  CHECK(m.extents() == std::vector<FileExtent>{{5, 1000, 1, 0}, {5 + n - 1, 1000 + n - 1, 1, 0}});
}

TEST_CASE("extent_map: matches a per-block model under random operations", "[extent_map][random]") {
  constexpr std::uint64_t kBlocks = 4096;
  struct Slot {
    BlockNo pblk = 0;
    std::uint32_t flags = 0;
  };
  std::vector<Slot> model(kBlocks);
  ExtentMap m;
  std::mt19937_64 rng(GENERATE(1u, 2u, 3u));
  int ops = 0;
  for (; ops < test::model_steps(4000); ++ops) {
    const std::uint64_t kind = rng() % 10;
    std::uint64_t lblk = rng() % kBlocks;
    std::uint64_t max_len = kBlocks - lblk;
    std::uint64_t len = 1 + rng() % std::min<std::uint64_t>(max_len, rng() % 4 == 0 ? 1024 : 32);
    BlockNo pblk = 0;
    std::uint32_t flags = 0;
    if (kind < 5) {
      // Identity-like placement (file block b at device block 100000+b)
      // makes neighbours contiguous often, so merges are exercised.
      pblk = 100000 + lblk;
      flags = rng() % 4 == 0 ? kExtentUnwritten : 0;
    } else if (kind < 8) {
      pblk = 1 + rng() % 1000000;
      flags = rng() % 8 == 0 ? kExtentUnwritten : 0;
    } else if (kind == 9 && rng() % 4 == 0) {
      len = kEnd - lblk;  // truncate
    }
    // What the model says will be displaced.
    std::vector<Segment> expect_displaced;
    std::uint64_t expect_gone = 0;
    for (std::uint64_t b = lblk; b < std::min(kBlocks, lblk + std::min(len, kBlocks)); ++b)
      if (model[b].pblk) ++expect_gone;

    std::vector<Segment> displaced;
    m.set(lblk, len, pblk, flags, &displaced);
    std::uint64_t gone = 0;
    for (const Segment& s : displaced) {
      REQUIRE_FALSE(s.hole());
      for (std::uint64_t i = 0; i < s.len; ++i) {
        INFO("op " << ops << " displaced block " << s.lblk + i);
        REQUIRE(s.lblk + i >= lblk);
        REQUIRE(model[s.lblk + i].pblk == s.pblk + i);
        REQUIRE(model[s.lblk + i].flags == s.flags);
      }
      gone += s.len;
    }
    REQUIRE(gone == expect_gone);

    const std::uint64_t end = std::min(kBlocks, len >= kBlocks ? kBlocks : lblk + len);
    for (std::uint64_t b = lblk; b < end; ++b) model[b] = pblk ? Slot{pblk + (b - lblk), flags} : Slot{};

    // Check block by block.
    check_invariants(m);
    std::uint64_t mapped = 0;
    for (std::uint64_t b = 0; b < kBlocks; ++b) {
      auto e = m.find(b);
      if (model[b].pblk == 0) {
        if (e) FAIL("op " << ops << ": block " << b << " should be a hole\n" << dump(m));
        continue;
      }
      ++mapped;
      if (!e || e->pblk + (b - e->lblk) != model[b].pblk || e->flags != model[b].flags)
        FAIL("op " << ops << ": block " << b << " should map to " << model[b].pblk << "\n" << dump(m));
    }
    REQUIRE(m.mapped_blocks() == mapped);

    // segments() over a random window agrees, covers it exactly, and
    // alternates (no two holes in a row).
    std::uint64_t wl = rng() % kBlocks, wn = 1 + rng() % (kBlocks - wl);
    auto segs = m.segments(wl, wn);
    std::uint64_t at = wl;
    bool prev_hole = false;
    for (std::size_t i = 0; i < segs.size(); ++i) {
      const Segment& s = segs[i];
      REQUIRE(s.lblk == at);
      REQUIRE(s.len > 0);
      if (i > 0 && s.hole()) REQUIRE_FALSE(prev_hole);
      prev_hole = s.hole();
      for (std::uint64_t k = 0; k < s.len; ++k) {
        const Slot& want = model[s.lblk + k];
        if (s.hole()) {
          REQUIRE(want.pblk == 0);
        } else {
          REQUIRE(want.pblk == s.pblk + k);
          REQUIRE(want.flags == s.flags);
        }
      }
      at += s.len;
    }
    REQUIRE(at == wl + wn);

    // next_data / next_hole from a random block.
    std::uint64_t q = rng() % kBlocks;
    std::uint64_t d = q;
    while (d < kBlocks && model[d].pblk == 0) ++d;
    if (d == kBlocks)
      REQUIRE_FALSE(m.next_data(q));
    else
      REQUIRE(m.next_data(q) == d);
    std::uint64_t h = q;
    while (h < kBlocks && model[h].pblk != 0) ++h;
    REQUIRE(m.next_hole(q) == h);
    if (q > 0) {
      auto before = m.find_before(q);
      REQUIRE(before.has_value() == (model[q - 1].pblk != 0));
    }
  }
  CHECK(ops == test::model_steps(4000));
}

}  // namespace dhfs
