// ReadPlan: which device reads bring a file's segments into the caller's
// buffer, and that nothing else in that buffer changes, whatever order the
// device completes the reads in.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "fs/read_plan.h"

using dhfs::BlockNo;
using dhfs::DeviceIo;
using dhfs::kBlockSize;
using dhfs::ReadPlan;
using dhfs::Segment;

namespace {

// Every device block holds its own number; the caller's buffer starts out
// holding a sentinel that no device block has.
constexpr std::uint64_t kSentinel = ~std::uint64_t{0};

std::uint64_t block_value(const std::byte* block) {
  std::uint64_t v;
  std::memcpy(&v, block, sizeof v);
  for (std::size_t at = 0; at < kBlockSize; at += sizeof v) {
    std::uint64_t w;
    std::memcpy(&w, block + at, sizeof w);
    if (w != v) return kSentinel - 1;  // torn: two sources in one block
  }
  return v;
}

void fill_block(std::byte* block, std::uint64_t v) {
  for (std::size_t at = 0; at < kBlockSize; at += sizeof v) std::memcpy(block + at, &v, sizeof v);
}

// Runs the plan's reads in the given order against the numbered device,
// then finish(); returns the value each file block of the buffer holds.
std::vector<std::uint64_t> run_plan(std::span<const Segment> segs, std::uint64_t first, std::uint64_t nblk,
                                    std::mt19937_64* shuffle, std::uint64_t* bounced = nullptr,
                                    std::size_t* ios = nullptr) {
  dhfs::AlignedBuffer dst(nblk * kBlockSize);
  for (std::uint64_t b = 0; b < nblk; ++b) fill_block(dst.data() + b * kBlockSize, kSentinel);
  ReadPlan plan(segs, first, dst.data());
  std::vector<DeviceIo> order(plan.ios().begin(), plan.ios().end());
  if (shuffle) std::shuffle(order.begin(), order.end(), *shuffle);
  for (const DeviceIo& io : order) {
    REQUIRE(io.op == DeviceIo::Op::Read);
    REQUIRE(io.offset % kBlockSize == 0);
    REQUIRE(io.len % kBlockSize == 0);
    REQUIRE(reinterpret_cast<std::uintptr_t>(io.buf) % kBlockSize == 0);
    for (std::uint32_t b = 0; b < io.len / kBlockSize; ++b)
      fill_block(static_cast<std::byte*>(io.buf) + b * kBlockSize, io.offset / kBlockSize + b);
  }
  plan.finish();
  if (bounced) *bounced = plan.bounced_blocks();
  if (ios) *ios = plan.ios().size();
  std::vector<std::uint64_t> got(nblk);
  for (std::uint64_t b = 0; b < nblk; ++b) got[b] = block_value(dst.data() + b * kBlockSize);
  return got;
}

// What the buffer must hold: each segment's device blocks in its file
// blocks, the sentinel everywhere else.
std::vector<std::uint64_t> expected(std::span<const Segment> segs, std::uint64_t first, std::uint64_t nblk) {
  std::vector<std::uint64_t> want(nblk, kSentinel);
  for (const Segment& s : segs)
    for (std::uint64_t i = 0; i < s.len; ++i) want[s.lblk - first + i] = s.pblk + i;
  return want;
}

// Per file block, the device block it maps to (0: not read) -> segments.
std::vector<Segment> segments_of(const std::vector<BlockNo>& map, std::uint64_t first) {
  std::vector<Segment> segs;
  for (std::uint64_t i = 0; i < map.size(); ++i) {
    if (map[i] == 0) continue;
    if (!segs.empty() && segs.back().lblk + segs.back().len == first + i &&
        segs.back().pblk + segs.back().len == map[i]) {
      ++segs.back().len;
      continue;
    }
    segs.push_back({first + i, 1, map[i], 0});
  }
  return segs;
}

}  // namespace

TEST_CASE("read plan: a clone after scattered overwrites reads its old extent in place and bounces only the new "
          "blocks", "[read_plan]") {
  // 1 MiB of a clone: its old extent at 10000 + block, every fourth block
  // (and a few more) overwritten and laid side by side in file order at 50000.
  const std::uint64_t first = 512, nblk = 256;
  std::vector<BlockNo> map(nblk);
  BlockNo next_new = 50000;
  std::uint64_t overwritten = 0;
  for (std::uint64_t i = 0; i < nblk; ++i) {
    const bool cow = i % 4 == 1 || i % 37 == 0;
    map[i] = cow ? next_new++ : 10000 + first + i;
    overwritten += cow;
  }
  std::vector<Segment> segs = segments_of(map, first);
  REQUIRE(segs.size() > 100);
  std::uint64_t bounced = 0;
  std::size_t ios = 0;
  CHECK(run_plan(segs, first, nblk, nullptr, &bounced, &ios) == expected(segs, first, nblk));
  CHECK(ios == 2);                    // the old extent, the new blocks
  CHECK(bounced == overwritten);      // only the new blocks are copied
  std::mt19937_64 rng(7);
  std::shuffle(segs.begin(), segs.end(), rng);  // any order of segments, any order of completion
  CHECK(run_plan(segs, first, nblk, &rng) == expected(segs, first, nblk));
}

TEST_CASE("read plan: a run whose gap nothing in the read fills (a hole, a block taken from memory) does not land "
          "in place", "[read_plan]") {
  const std::uint64_t first = 0, nblk = 64;
  std::vector<BlockNo> map(nblk);
  for (std::uint64_t i = 0; i < nblk; ++i) map[i] = 3000 + i;
  map[20] = 0;          // a hole the caller zeroed
  map[40] = 9000;       // a new block far away: a single I/O of its own
  std::vector<Segment> segs = segments_of(map, first);
  std::uint64_t bounced = 0;
  std::size_t ios = 0;
  const std::vector<std::uint64_t> got = run_plan(segs, first, nblk, nullptr, &bounced, &ios);
  CHECK(got == expected(segs, first, nblk));
  CHECK(got[20] == kSentinel);
  CHECK(ios == 2);
  CHECK(bounced == nblk);  // the whole run went through the bounce buffer
}

TEST_CASE("read plan: segments far apart on the device are each read into place, nothing bounces",
          "[read_plan]") {
  const std::vector<Segment> segs{{100, 8, 5000, 0}, {108, 8, 1000, 0}, {116, 4, 90000, 0}};
  std::uint64_t bounced = 1;
  std::size_t ios = 0;
  CHECK(run_plan(segs, 100, 20, nullptr, &bounced, &ios) == expected(segs, 100, 20));
  CHECK(ios == 3);
  CHECK(bounced == 0);
}

TEST_CASE("read plan: random layouts read right and leave every other block alone, in any completion order",
          "[read_plan]") {
  std::mt19937_64 rng(20261128);
  for (int round = 0; round < 2000; ++round) {
    const std::uint64_t nblk = 1 + rng() % 600, first = rng() % 5000;
    // Old extents (file and device keep a distance; each holds a stretch
    // of the file, with blocks of the others in it), new blocks side by
    // side in file order, far blocks, blocks shared within the file, and
    // blocks not read (holes, blocks the caller has from memory).
    std::vector<BlockNo> bases(1 + rng() % 4);
    for (std::size_t k = 0; k < bases.size(); ++k) bases[k] = 100000 + k * (20 + rng() % 3000);
    BlockNo next_new = 400000 + rng() % 100;
    const unsigned mix = rng() % 5;
    std::vector<BlockNo> map(nblk);
    for (std::uint64_t i = 0; i < nblk; ++i) {
      const unsigned pick = rng() % 16;
      const std::size_t own = i * bases.size() / nblk;
      if (pick < 2 + mix) map[i] = next_new++;
      else if (pick < 3 + mix) map[i] = 0;
      else if (pick == 15) map[i] = 700000 + rng() % 4096;
      else if (pick == 14 && i > 0) {
        const BlockNo earlier = map[rng() % i];
        map[i] = earlier ? earlier : bases[own] + first + i;
      } else if (pick == 13) map[i] = bases[rng() % bases.size()] + first + i;
      else map[i] = bases[own] + first + i;
    }
    if (rng() % 3 == 0) std::shuffle(map.begin(), map.end(), rng);  // nothing in order
    std::vector<Segment> segs = segments_of(map, first);
    std::shuffle(segs.begin(), segs.end(), rng);
    INFO("round " << round << ", " << segs.size() << " segments over " << nblk << " blocks");
    REQUIRE(run_plan(segs, first, nblk, &rng) == expected(segs, first, nblk));
  }
}
