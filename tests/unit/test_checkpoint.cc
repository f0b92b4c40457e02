// Tests of fs/checkpoint.h (checkpoint streams) and of the checkpoint root
// slot encoding in fs/format.h.
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "alloc/allocator.h"
#include "fs/checkpoint.h"
#include "fs/format.h"
#include "tests/unit/test_support.h"

namespace dhfs {
namespace {

constexpr std::uint64_t kTag = 0xfeedface01234567ULL;
constexpr std::uint64_t kDeviceBlocks = 16384;  // 64 MiB
constexpr Extent kArea{16, kDeviceBlocks - 32};

// Owns the strings that records' views point at.
struct RecordSet {
  std::deque<std::string> strings;
  std::vector<Record> recs;

  std::string_view keep(std::string s) { return strings.emplace_back(std::move(s)); }

  // A deterministic mix of every record type; one xattr record in ten
  // carries a 4 KiB value, so that 100k records pass 8 MiB.
  void generate(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < n; ++i) {
      Ino ino = 2 + rng() % 50000;
      switch (i % 7) {
        case 0:
          recs.push_back(InodeRec{ino, static_cast<std::uint32_t>(i), 0100644, 1, 2, 1, 0, rng(), 1, 2, 3, 4, 0, 0, {}});
          break;
        case 1:
          recs.push_back(InodeRec{ino, 1, 0120777, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
                                  keep("target/" + std::to_string(rng() % 1000))});
          break;
        case 2:
          recs.push_back(DirentSetRec{1, ino, 8, keep("file-" + std::to_string(i))});
          break;
        case 3:
          recs.push_back(ExtentSetRec{ino, rng() % 100000, 1 + rng() % 1000, 1 + rng() % 1000000, 0});
          break;
        case 4:
          recs.push_back(XattrSetRec{ino, keep("user.k" + std::to_string(i % 13)),
                                     keep((i / 7) % 10 == 0 ? test::pattern(4096, i) : std::string(rng() % 40, 'v'))});
          break;
        case 5:
          recs.push_back(i % 2 ? Record{DirentDelRec{1, keep("gone-" + std::to_string(i))}}
                               : Record{XattrDelRec{ino, keep("user.k" + std::to_string(i % 13))}});
          break;
        default:
          recs.push_back(InodeFreeRec{ino});
          break;
      }
    }
  }
};

struct Stream {
  Stream() : dev(kDeviceBlocks * kBlockSize), alloc(kArea) {}
  MemDevice dev;
  Allocator alloc;
};

// Writes `recs` as a stream; returns finish()'s result.
int write_stream(Stream& s, const std::vector<Record>& recs, CheckpointRoot& root) {
  CheckpointWriter w(s.dev, s.alloc, kTag);
  for (const Record& r : recs)
    if (int rc = w.add(r); rc != 0) return rc;
  return w.finish(root);
}

bool read_back(Stream& s, const CheckpointRoot& root, std::vector<Record>& out, std::deque<std::string>& store,
               std::string& why, std::uint64_t tag = kTag) {
  // The views in a record point into the reader's buffer: copy the strings
  // into `store` (a deque never moves its elements) while they are valid.
  out.clear();
  store.clear();
  return read_checkpoint(
      s.dev, root, tag,
      [&](const Record& r) {
        Record copy = r;
        std::visit(
            [&](auto& x) {
              using T = std::decay_t<decltype(x)>;
              if constexpr (std::is_same_v<T, InodeRec>) {
                x.symlink = store.emplace_back(x.symlink);
              } else if constexpr (std::is_same_v<T, DirentSetRec> || std::is_same_v<T, DirentDelRec> ||
                                   std::is_same_v<T, XattrDelRec>) {
                x.name = store.emplace_back(x.name);
              } else if constexpr (std::is_same_v<T, XattrSetRec>) {
                x.name = store.emplace_back(x.name);
                x.value = store.emplace_back(x.value);
              }
            },
            copy);
        out.push_back(copy);
        return true;
      },
      why);
}

std::uint64_t total_blocks(const std::vector<Extent>& ex) {
  std::uint64_t n = 0;
  for (const Extent& e : ex) n += e.len;
  return n;
}

}  // namespace

TEST_CASE("checkpoint: 100k records round-trip in order", "[checkpoint]") {
  RecordSet set;
  set.generate(100000, 42);
  Stream s;
  SECTION("contiguous free space") {}
  SECTION("fragmented free space: the stream spans many extents") {
    // Leave free runs of 300 blocks separated by used blocks.
    for (BlockNo b = kArea.start + 300; b + 1 < kArea.end(); b += 301) REQUIRE(s.alloc.mark_used({b, 1}));
  }
  const std::uint64_t free_before = s.alloc.free_blocks();
  CheckpointRoot root;
  REQUIRE(write_stream(s, set.recs, root) == 0);
  CHECK(root.uuid_tag == kTag);
  CHECK(root.stream_bytes > (8u << 20));
  CHECK(root.frame_count >= 8);
  CHECK(total_blocks(root.extents) * kBlockSize >= root.stream_bytes);
  CHECK(s.alloc.free_blocks() == free_before - total_blocks(root.extents));  // the caller owns them now

  std::vector<Record> out;
  std::deque<std::string> store;
  std::string why;
  INFO(why);
  REQUIRE(read_back(s, root, out, store, why));
  REQUIRE(out.size() == set.recs.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (!test::same_record(out[i], set.recs[i]))
      FAIL("record " << i << ": " << test::describe_record(out[i]) << " != " << test::describe_record(set.recs[i]));
  }
}

TEST_CASE("checkpoint: an empty stream", "[checkpoint]") {
  Stream s;
  CheckpointRoot root;
  REQUIRE(write_stream(s, {}, root) == 0);
  CHECK(root.stream_bytes == 0);
  CHECK(root.frame_count == 0);
  std::vector<Record> out;
  std::deque<std::string> store;
  std::string why;
  CHECK(read_back(s, root, out, store, why));
  CHECK(out.empty());
}

TEST_CASE("checkpoint: damage is detected with a reason", "[checkpoint]") {
  RecordSet set;
  set.generate(30000, 7);
  Stream s;
  CheckpointRoot root;
  REQUIRE(write_stream(s, set.recs, root) == 0);
  REQUIRE(root.frame_count >= 2);
  auto byte_at = [&](std::uint64_t stream_off) -> std::byte& {
    for (const Extent& e : root.extents) {
      if (stream_off < e.len * kBlockSize) return s.dev.bytes()[e.start * kBlockSize + stream_off];
      stream_off -= e.len * kBlockSize;
    }
    FAIL("offset beyond the stream");
    return s.dev.bytes()[0];
  };
  CheckpointRoot bad = root;
  std::uint64_t tag = kTag;
  std::string expect;
  SECTION("payload byte of the first frame") {
    byte_at(FrameHeader::kSize + 1000) ^= std::byte{1};
    expect = "checksum";
  }
  SECTION("payload byte of the last frame") {
    byte_at(root.stream_bytes - 3) ^= std::byte{0x80};
    expect = "checksum";
  }
  SECTION("frame magic") {
    byte_at(0) ^= std::byte{1};
    expect = "magic";
  }
  SECTION("frame record count") {
    byte_at(28) ^= std::byte{1};  // record_count lives at bytes 28..31 of the header
    expect = "checksum";
  }
  SECTION("another filesystem's tag") {
    tag = kTag ^ 1;
    expect = "out of place";
  }
  SECTION("stream cut short") {
    bad.stream_bytes -= 100;
    expect = "incomplete";
  }
  SECTION("stream longer than written") {
    bad.stream_bytes += 100;
  }
  SECTION("frame count disagrees") {
    bad.frame_count += 1;
    expect = "incomplete";
  }
  SECTION("extent list missing its last extent") {
    if (bad.extents.size() == 1) bad.extents[0].len = (bad.stream_bytes / 2) / kBlockSize;
    else bad.extents.pop_back();
  }
  SECTION("extent at block 0") {
    bad.extents[0].start = 0;
    expect = "out of range";
  }
  SECTION("extent beyond the device") {
    bad.extents[0].start = kDeviceBlocks + 10;
    expect = "beyond";
  }
  std::vector<Record> out;
  std::deque<std::string> store;
  std::string why;
  CHECK_FALSE(read_back(s, bad, out, store, why, tag));
  INFO("why: " << why);
  CHECK_FALSE(why.empty());
  if (!expect.empty()) CHECK(why.find(expect) != std::string::npos);
}

TEST_CASE("checkpoint: the writer frees its blocks when abandoned", "[checkpoint]") {
  RecordSet set;
  set.generate(100000, 3);
  Stream s;
  const std::uint64_t free_before = s.alloc.free_blocks();
  {
    CheckpointWriter w(s.dev, s.alloc, kTag);
    for (const Record& r : set.recs) REQUIRE(w.add(r) == 0);
    CHECK(s.alloc.free_blocks() < free_before);  // more than 8 MiB went out already
  }
  CHECK(s.alloc.free_blocks() == free_before);
  CHECK(s.alloc.free_extent_count() == 1);

  // A finished writer hands its blocks over instead.
  CheckpointRoot root;
  {
    CheckpointWriter w(s.dev, s.alloc, kTag);
    for (const Record& r : set.recs) REQUIRE(w.add(r) == 0);
    REQUIRE(w.finish(root) == 0);
  }
  CHECK(s.alloc.free_blocks() == free_before - total_blocks(root.extents));
}

TEST_CASE("checkpoint: running out of space fails cleanly", "[checkpoint]") {
  RecordSet set;
  set.generate(100000, 5);
  MemDevice dev(kDeviceBlocks * kBlockSize);
  Allocator alloc({16, 1000});  // 4 MB: too small for the stream
  const std::uint64_t free_before = alloc.free_blocks();
  int rc = 0;
  {
    CheckpointWriter w(dev, alloc, kTag);
    for (const Record& r : set.recs)
      if ((rc = w.add(r)) != 0) break;
    CheckpointRoot root;
    if (rc == 0) rc = w.finish(root);
    CHECK(rc == -ENOSPC);
    CHECK(w.add(set.recs[0]) == -ENOSPC);  // the writer stays dead
  }
  CHECK(alloc.free_blocks() == free_before);
}

TEST_CASE("checkpoint: root slot encode and decode", "[checkpoint]") {
  CheckpointRoot root;
  root.seq = 77;
  root.uuid_tag = kTag;
  root.replay_lsn = 30141ULL * kBlockSize;
  root.stream_bytes = 3 * kBlockSize + 5;
  root.frame_count = 2;
  root.next_generation = 991;
  root.written_ns = 1700000000000000000LL;
  root.extents = {{100, 2}, {500, 3}};
  auto block = root.encode();
  REQUIRE(block.size() == kBlockSize);

  std::string why;
  auto back = CheckpointRoot::decode(block, kTag, why);
  INFO(why);
  REQUIRE(back);
  CHECK(back->seq == root.seq);
  CHECK(back->uuid_tag == root.uuid_tag);
  CHECK(back->replay_lsn == root.replay_lsn);
  CHECK(back->stream_bytes == root.stream_bytes);
  CHECK(back->frame_count == root.frame_count);
  CHECK(back->next_generation == root.next_generation);
  CHECK(back->written_ns == root.written_ns);
  CHECK(back->extents == root.extents);

  SECTION("wrong uuid tag") {
    CHECK_FALSE(CheckpointRoot::decode(block, kTag + 1, why));
    CHECK(why == "belongs to another filesystem");
  }
  SECTION("any flipped byte") {
    for (std::size_t at : {std::size_t{0}, std::size_t{9}, std::size_t{70}, std::size_t{100}, std::size_t{2000},
                           std::size_t{kBlockSize - 1}}) {
      auto b = block;
      b[at] ^= 0x10;
      why.clear();
      INFO("byte " << at);
      CHECK_FALSE(CheckpointRoot::decode(b, kTag, why));
      CHECK_FALSE(why.empty());
    }
  }
  SECTION("a zeroed slot") {
    std::vector<std::uint8_t> zero(kBlockSize, 0);
    CHECK_FALSE(CheckpointRoot::decode(zero, kTag, why));
    CHECK_FALSE(why.empty());
  }
  SECTION("a replay position inside a block") {
    CheckpointRoot r2 = root;
    r2.replay_lsn += 100;
    CHECK_FALSE(CheckpointRoot::decode(r2.encode(), kTag, why));
    CHECK_FALSE(why.empty());
  }
  SECTION("stream longer than its extents") {
    CheckpointRoot r2 = root;
    r2.stream_bytes = 5 * kBlockSize + 1;
    CHECK_FALSE(CheckpointRoot::decode(r2.encode(), kTag, why));
    CHECK(why == "stream longer than its extents");
  }
  SECTION("the maximum number of extents fits one block") {
    CheckpointRoot r2 = root;
    r2.extents.clear();
    for (std::size_t i = 0; i < CheckpointRoot::kMaxExtents; ++i) r2.extents.push_back({1000 + 10 * i, 5});
    auto b = r2.encode();
    REQUIRE(b.size() == kBlockSize);
    auto d = CheckpointRoot::decode(b, kTag, why);
    REQUIRE(d);
    CHECK(d->extents == r2.extents);
  }
}

}  // namespace dhfs
