// PrefetchedBlocks: blocks read ahead are handed out only while they still
// hold what the device holds.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "fs/prefetched_blocks.h"

using dhfs::AlignedBuffer;
using dhfs::BlockNo;
using dhfs::BlockReader;
using dhfs::DeviceIo;
using dhfs::Extent;
using dhfs::kBlockSize;
using dhfs::MemDevice;
using dhfs::PrefetchedBlocks;
using dhfs::WatchedDevice;

namespace {

// Fills the read's buffer as a device would: block b holds the byte b % 251.
void fill(PrefetchedBlocks::Read& r) {
  const Extent b = r.blocks();
  for (std::uint64_t i = 0; i < b.len; ++i) std::memset(r.buffer() + i * kBlockSize, (b.start + i) % 251, kBlockSize);
}

bool holds(const std::byte* p, BlockNo b) {
  for (std::size_t i = 0; i < kBlockSize; ++i)
    if (p[i] != std::byte((b % 251) & 0xff)) return false;
  return true;
}

}  // namespace

TEST_CASE("prefetched blocks: kept blocks are handed out until a write touches them", "[prefetch]") {
  PrefetchedBlocks p;
  AlignedBuffer out(8 * kBlockSize);
  CHECK_FALSE(p.take(100, 1, out.data()));
  {
    PrefetchedBlocks::Read r(p, {100, 16});
    REQUIRE(r.wanted());
    fill(r);
    r.keep();
  }
  CHECK(p.kept_bytes() == 16 * kBlockSize);
  CHECK(p.kept_end(100) == 116);
  CHECK(p.kept_end(115) == 116);
  CHECK(p.kept_end(116) == 116);
  CHECK(p.kept_end(99) == 99);
  REQUIRE(p.take(104, 3, out.data()));
  for (int i = 0; i < 3; ++i) CHECK(holds(out.data() + i * kBlockSize, 104 + i));
  CHECK_FALSE(p.take(114, 3, out.data()));  // runs past the kept blocks
  p.writing({110, 1});                       // the whole run goes
  CHECK_FALSE(p.take(104, 1, out.data()));
  CHECK(p.kept_bytes() == 0);
}

// What a copy's write compares with (share_stored_chunk): the bytes must
// match, the blocks must lie in one kept run, and a run compared up to its
// end goes, its buffer serving the next read.
TEST_CASE("prefetched blocks: a copy's writes are compared with kept runs, which go once compared to their end",
          "[prefetch]") {
  PrefetchedBlocks p;
  auto keep_run = [&](BlockNo start, std::uint64_t len) {
    PrefetchedBlocks::Read r(p, {start, len});
    REQUIRE(r.wanted());
    fill(r);
    r.keep();
  };
  auto device_bytes = [](BlockNo start, std::size_t bytes) {
    std::vector<std::byte> v(bytes);
    for (std::size_t i = 0; i < bytes; ++i) v[i] = std::byte(((start + i / kBlockSize) % 251) & 0xff);
    return v;
  };
  CHECK_FALSE(p.compare_kept(100, device_bytes(100, kBlockSize)));  // nothing kept
  keep_run(100, 16);

  std::vector<std::byte> differs = device_bytes(100, 2 * kBlockSize);
  differs[kBlockSize + 17] ^= std::byte{1};
  CHECK_FALSE(p.compare_kept(100, differs));
  CHECK_FALSE(p.compare_kept(110, device_bytes(110, 8 * kBlockSize)));  // runs past the kept blocks
  CHECK(p.compare_kept(100, device_bytes(100, 8 * kBlockSize)));
  CHECK(p.compare_kept(108, device_bytes(108, 4 * kBlockSize + 100)));  // a file's short last block
  CHECK(p.kept_bytes() == 16 * kBlockSize);                             // not compared to its end yet
  CHECK(p.compare_kept(100, device_bytes(100, kBlockSize)));           // again: a run is compared as often as asked
  CHECK(p.compare_kept(113, device_bytes(113, 3 * kBlockSize)));
  CHECK(p.kept_bytes() == 0);  // compared to its end: gone
  CHECK_FALSE(p.compare_kept(113, device_bytes(113, kBlockSize)));

  // A write to kept blocks drops them before any comparison.
  keep_run(200, 4);
  p.writing({201, 1});
  CHECK_FALSE(p.compare_kept(200, device_bytes(200, kBlockSize)));
}

TEST_CASE("prefetched blocks: a read that a write overlapped is not kept", "[prefetch]") {
  PrefetchedBlocks p;
  AlignedBuffer out(kBlockSize);
  SECTION("a write that started during the read") {
    PrefetchedBlocks::Read r(p, {0, 8});
    REQUIRE(r.wanted());
    fill(r);
    p.writing({7, 1});
    r.keep();
  }
  SECTION("a write that was under way when the read began and ended during it") {
    PrefetchedBlocks::Read r(p, {0, 8});
    REQUIRE(r.wanted());
    fill(r);
    p.writing({3, 2});  // its end, reported by WatchedDevice after the write
    r.keep();
  }
  SECTION("more writes than the log holds, none of them on the blocks") {
    PrefetchedBlocks::Read r(p, {0, 8});
    REQUIRE(r.wanted());
    fill(r);
    for (BlockNo b = 0; b < 5000; ++b) p.writing({1000 + b, 1});
    r.keep();
  }
  CHECK_FALSE(p.take(0, 1, out.data()));
  CHECK(p.kept_bytes() == 0);
  // Writes elsewhere do not stop a read from being kept.
  {
    PrefetchedBlocks::Read r(p, {0, 8});
    REQUIRE(r.wanted());
    fill(r);
    p.writing({8, 4});
    r.keep();
  }
  CHECK(p.take(0, 8, AlignedBuffer(8 * kBlockSize).data()));
}

TEST_CASE("prefetched blocks: reads cover only what is not kept, or read, already", "[prefetch]") {
  PrefetchedBlocks p;
  {
    PrefetchedBlocks::Read r(p, {100, 10});
    fill(r);
    r.keep();
  }
  {
    PrefetchedBlocks::Read r(p, {200, 10});
    fill(r);
    r.keep();
  }
  {
    PrefetchedBlocks::Read r(p, {105, 200});  // between the two runs only
    REQUIRE(r.wanted());
    CHECK(r.blocks() == Extent{110, 90});
    PrefetchedBlocks::Read again(p, {150, 10});  // under way
    CHECK_FALSE(again.wanted());
    fill(r);
    r.keep();
  }
  CHECK_FALSE(PrefetchedBlocks::Read(p, {100, 110}).wanted());  // all kept
  AlignedBuffer out(kBlockSize);
  for (BlockNo b = 100; b < 210; ++b) {
    REQUIRE(p.take(b, 1, out.data()));
    CHECK(holds(out.data(), b));
  }
  CHECK(p.kept_bytes() == 110 * kBlockSize);
}

TEST_CASE("prefetched blocks: the oldest runs go beyond the byte limit", "[prefetch]") {
  PrefetchedBlocks p(32 * kBlockSize);
  for (BlockNo s = 0; s < 5 * 100; s += 100) {
    PrefetchedBlocks::Read r(p, {s, 10});
    fill(r);
    r.keep();
  }
  CHECK(p.kept_bytes() == 30 * kBlockSize);
  AlignedBuffer out(kBlockSize);
  CHECK_FALSE(p.take(0, 1, out.data()));
  CHECK_FALSE(p.take(100, 1, out.data()));
  CHECK(p.take(200, 1, out.data()));
  CHECK(p.take(400, 1, out.data()));
  CHECK_FALSE(PrefetchedBlocks::Read(p, {0, 33}).wanted());  // larger than the limit
}

TEST_CASE("prefetched blocks: the reader thread reads through the device, writes through it drop them",
          "[prefetch]") {
  auto mem = std::make_unique<MemDevice>(4 << 20);
  for (BlockNo b = 0; b < 1024; ++b) std::memset(mem->bytes().data() + b * kBlockSize, b % 251, kBlockSize);
  PrefetchedBlocks p;
  WatchedDevice dev(std::move(mem), p);
  {
    BlockReader reader(dev, p);
    reader.request({10, 20});
    AlignedBuffer out(kBlockSize);
    for (int i = 0; i < 500 && !p.take(29, 1, out.data()); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    REQUIRE(p.take(29, 1, out.data()));
    CHECK(holds(out.data(), 29));
  }
  AlignedBuffer zeros(kBlockSize);
  REQUIRE(dev.write(15 * kBlockSize, zeros.data(), kBlockSize) == 0);
  AlignedBuffer out(kBlockSize);
  CHECK_FALSE(p.take(15, 1, out.data()));
  CHECK_FALSE(p.take(29, 1, out.data()));  // the run went whole
}
