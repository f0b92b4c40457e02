// Shared extents through the core API (no FUSE): copy_file_range clones,
// whole-chunk writes of stored bytes, redirect-on-write of shared blocks,
// and the reference counts behind them, checked against an in-memory model
// of every file's bytes and against the fsck Checker (which derives every
// count from the block maps) across shutdowns and reopens.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fmt/format.h>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fs/chunk_index.h"
#include "fs/filesystem.h"
#include "fs/fsck.h"
#include "tests/unit/sharing_support.h"
#include "tests/unit/test_support.h"
#include "tests/unit/model_steps.h"

namespace dhfs {
namespace {

using test::as_bytes;
using test::getattr_of;
using test::kRoot;
using test::lookup_ino;
using test::pattern;
using test::read_at;
using test::read_file;
using test::write_file;

using namespace sharing_test;

// --------------------------------------------------------- clones: basics

TEST_CASE("sharing: a clone shares every block and costs no space", "[sharing]") {
  Rig rig;
  FileSystem& fs = *rig.fs;
  const std::string a_data = pattern(8 * kMiB, 1);
  const Ino a = write_file(fs, kRootIno, "a", a_data);
  const Ino b = create_empty(fs, kRootIno, "b");
  REQUIRE(fs.syncfs() == 0);
  const FsStats s0 = synced(fs);

  REQUIRE(cfr(fs, a, 0, b, 0, a_data.size()) == static_cast<ssize_t>(a_data.size()));
  const FsStats s1 = synced(fs);
  CHECK(s1.saved_blocks == s0.saved_blocks + a_data.size() / kB);
  CHECK(s1.shared_blocks == s0.shared_blocks + a_data.size() / kB);
  CHECK(s1.free_blocks == s0.free_blocks);
  CHECK(s1.allocated_blocks == s0.allocated_blocks + a_data.size() / kB);
  CHECK(s1.logical_bytes == s0.logical_bytes + a_data.size());
  CHECK(getattr_of(fs, b).blocks == getattr_of(fs, a).blocks);
  CHECK_CONTENT(fs, b, a_data);
  CHECK_CONTENT(fs, a, a_data);
  const FragReport fb = frag_of(fs, b);
  CHECK(fb.shared_blocks == a_data.size() / kB);
  CHECK(fb.mapped_blocks == a_data.size() / kB);
  rig.reopen();
  CHECK_CONTENT(*rig.fs, a, a_data);
  CHECK_CONTENT(*rig.fs, b, a_data);
}

TEST_CASE("sharing: a clone and its source are independent", "[sharing]") {
  Rig rig;
  std::string ma = pattern(4 * kMiB + 1234, 2);
  std::string mb;
  const Ino a = write_file(*rig.fs, kRootIno, "a", ma);
  const Ino b = create_empty(*rig.fs, kRootIno, "b");
  REQUIRE(cfr(*rig.fs, a, 0, b, 0, ma.size()) == static_cast<ssize_t>(ma.size()));
  mb = ma;
  auto both = [&] {
    CHECK_CONTENT(*rig.fs, a, ma);
    CHECK_CONTENT(*rig.fs, b, mb);
  };
  both();
  const std::uint64_t shared_blocks = (ma.size() + kB - 1) / kB;
  REQUIRE(synced(*rig.fs).saved_blocks == shared_blocks);

  SECTION("a write to a shared block copies it: one new block, one block less shared") {
    REQUIRE(rig.fs->syncfs() == 0);
    const FsStats s0 = synced(*rig.fs);
    const std::string d = pattern(kB, 3);
    write_bytes(*rig.fs, b, 5 * kB, d);
    model_write(mb, 5 * kB, d);
    both();
    const FsStats s1 = synced(*rig.fs);
    CHECK(s1.saved_blocks == s0.saved_blocks - 1);
    CHECK(s1.free_blocks == s0.free_blocks - 1);
    // The copied block is now the writer's own: overwriting it again is in place.
    write_bytes(*rig.fs, b, 5 * kB + 100, "in place");
    model_write(mb, 5 * kB + 100, "in place");
    both();
    CHECK(synced(*rig.fs).free_blocks == s1.free_blocks);
    // The same through the source.
    write_bytes(*rig.fs, a, 5 * kB + 7, "source side");
    model_write(ma, 5 * kB + 7, "source side");
    both();
    CHECK(synced(*rig.fs).saved_blocks == s1.saved_blocks);  // block 5 was no longer shared
  }
  SECTION("writes to either side, at every alignment") {
    std::mt19937_64 rng(7);
    for (int i = 0; i < 200; ++i) {
      const bool to_a = i % 2;
      std::string& m = to_a ? ma : mb;
      const std::uint64_t off = rng() % (m.size() + 3 * kB);
      const std::string d = pattern(1 + rng() % (3 * kB), 100 + i);
      write_bytes(*rig.fs, to_a ? a : b, off, d);
      model_write(m, off, d);
      INFO("step " << i);
      both();
    }
  }
  SECTION("truncating either side") {
    truncate_to(*rig.fs, b, 3 * kB + 10);
    mb.resize(3 * kB + 10);
    both();
    truncate_to(*rig.fs, b, 2 * kMiB);  // the old tail reads as zeros
    mb.resize(2 * kMiB, '\0');
    both();
    truncate_to(*rig.fs, a, 100);
    ma.resize(100);
    both();
    truncate_to(*rig.fs, a, 6 * kMiB);
    ma.resize(6 * kMiB, '\0');
    both();
  }
  SECTION("punching holes in either side") {
    punch(*rig.fs, b, 10, 3 * kB);  // partial first block, whole blocks, partial last
    model_punch(mb, 10, 3 * kB);
    both();
    punch(*rig.fs, a, kMiB, kMiB);
    model_punch(ma, kMiB, kMiB);
    both();
    punch(*rig.fs, a, 2 * kB + 17, 5);
    model_punch(ma, 2 * kB + 17, 5);
    both();
  }
  SECTION("unlinking the source leaves the clone whole") {
    REQUIRE(rig.fs->unlink(kRootIno, "a") == 0);
    CHECK_CONTENT(*rig.fs, b, mb);
    CHECK(synced(*rig.fs).saved_blocks == 0);
    CHECK(synced(*rig.fs).shared_blocks == 0);
    // b owns its blocks alone now: a write is in place.
    REQUIRE(rig.fs->syncfs() == 0);
    const std::uint64_t free0 = synced(*rig.fs).free_blocks;
    write_bytes(*rig.fs, b, 0, "solo");
    model_write(mb, 0, "solo");
    CHECK_CONTENT(*rig.fs, b, mb);
    CHECK(synced(*rig.fs).free_blocks == free0);
    rig.reopen();
    CHECK_CONTENT(*rig.fs, b, mb);
    return;
  }
  rig.reopen();
  both();
}

TEST_CASE("sharing: clone of unaligned ranges copies only the edges", "[sharing]") {
  Rig rig;
  FileSystem& fs = *rig.fs;
  const std::string ma = pattern(3 * kMiB, 4);
  const Ino a = write_file(fs, kRootIno, "a", ma);
  std::string mb = pattern(20000, 5);
  const Ino b = write_file(fs, kRootIno, "b", mb);

  SECTION("same offset within the block: the middle is shared") {
    const std::uint64_t off_in = 1000, off_out = 4 * kB + 1000, len = kMiB + 5000;
    const std::uint64_t before = synced(fs).saved_blocks;
    REQUIRE(cfr(fs, a, off_in, b, off_out, len) == static_cast<ssize_t>(len));
    model_copy(ma, off_in, mb, off_out, len);
    CHECK_CONTENT(fs, b, mb);
    CHECK_CONTENT(fs, a, ma);
    // Whole blocks between the first and the last block boundary.
    const std::uint64_t first = (off_in + kB - 1) / kB, end = (off_in + len) / kB;
    CHECK(synced(fs).saved_blocks == before + (end - first));
  }
  SECTION("different offsets within the block: a plain copy, nothing shared") {
    const std::uint64_t off_in = 1000, off_out = 4 * kB + 1001, len = kMiB + 5000;
    REQUIRE(cfr(fs, a, off_in, b, off_out, len) == static_cast<ssize_t>(len));
    model_copy(ma, off_in, mb, off_out, len);
    CHECK_CONTENT(fs, b, mb);
    CHECK(synced(fs).saved_blocks == 0);
  }
  SECTION("less than a block") {
    REQUIRE(cfr(fs, a, 4 * kB, b, 8 * kB, 100) == 100);
    model_copy(ma, 4 * kB, mb, 8 * kB, 100);
    CHECK_CONTENT(fs, b, mb);
    CHECK(synced(fs).saved_blocks == 0);
  }
  SECTION("past the end of the destination: the gap reads as zeros") {
    REQUIRE(cfr(fs, a, 8 * kB, b, 2 * kMiB, 64 * kB) == static_cast<ssize_t>(64 * kB));
    model_copy(ma, 8 * kB, mb, 2 * kMiB, 64 * kB);
    CHECK_CONTENT(fs, b, mb);
    CHECK(synced(fs).saved_blocks == 64);
  }
  SECTION("a range reaching past the source's end is cut at the end") {
    REQUIRE(cfr(fs, a, ma.size() - 5 * kB - 7, b, 0, 10 * kMiB) == static_cast<ssize_t>(5 * kB + 7));
    model_copy(ma, ma.size() - 5 * kB - 7, mb, 0, 10 * kMiB);
    CHECK_CONTENT(fs, b, mb);
    REQUIRE(cfr(fs, a, ma.size(), b, 0, 10) == 0);
    REQUIRE(cfr(fs, a, ma.size() + 10, b, 0, 10) == 0);
    CHECK_CONTENT(fs, b, mb);
  }
  CHECK_CONTENT(fs, a, ma);
  rig.reopen();
  CHECK_CONTENT(*rig.fs, a, ma);
  CHECK_CONTENT(*rig.fs, b, mb);
}

TEST_CASE("sharing: a clone over existing data releases the old blocks", "[sharing]") {
  Rig rig;
  FileSystem& fs = *rig.fs;
  const std::string ma = pattern(2 * kMiB, 6);
  std::string mb = pattern(4 * kMiB, 7);
  const Ino a = write_file(fs, kRootIno, "a", ma);
  const Ino b = write_file(fs, kRootIno, "b", mb);
  REQUIRE(fs.syncfs() == 0);
  const FsStats s0 = synced(fs);
  REQUIRE(cfr(fs, a, 0, b, kMiB, 2 * kMiB) == static_cast<ssize_t>(2 * kMiB));
  model_copy(ma, 0, mb, kMiB, 2 * kMiB);
  CHECK_CONTENT(fs, b, mb);
  CHECK_CONTENT(fs, a, ma);
  REQUIRE(fs.syncfs() == 0);
  const FsStats s1 = synced(fs);
  CHECK(s1.saved_blocks == s0.saved_blocks + 2 * kMiB / kB);
  CHECK(s1.free_blocks == s0.free_blocks + 2 * kMiB / kB);  // b's old blocks
  CHECK(s1.allocated_blocks == s0.allocated_blocks);
  CHECK(getattr_of(fs, b).size == 4 * kMiB);

  // Cloning the same blocks again onto themselves changes nothing.
  REQUIRE(cfr(fs, a, 0, b, kMiB, 2 * kMiB) == static_cast<ssize_t>(2 * kMiB));
  REQUIRE(fs.syncfs() == 0);
  CHECK(synced(fs).saved_blocks == s1.saved_blocks);
  CHECK(synced(fs).free_blocks == s1.free_blocks);
  CHECK_CONTENT(fs, b, mb);
  // A third reference: a second clone of the same range.
  const Ino c = create_empty(fs, kRootIno, "c");
  REQUIRE(cfr(fs, b, kMiB, c, 0, kMiB) == static_cast<ssize_t>(kMiB));
  std::string mc = mb.substr(kMiB, kMiB);
  CHECK(synced(fs).saved_blocks == s1.saved_blocks + kMiB / kB);
  CHECK(synced(fs).shared_blocks == s1.shared_blocks);
  CHECK_CONTENT(fs, c, mc);
  rig.reopen();
  CHECK_CONTENT(*rig.fs, a, ma);
  CHECK_CONTENT(*rig.fs, b, mb);
  CHECK_CONTENT(*rig.fs, c, mc);
}

TEST_CASE("sharing: a clone of a sparse file keeps its holes", "[sharing]") {
  Rig rig;
  FileSystem& fs = *rig.fs;
  const Ino a = create_empty(fs, kRootIno, "a");
  std::string ma;
  const std::string d1 = pattern(64 * kB, 8), d2 = pattern(3 * kB, 9);
  write_bytes(fs, a, 0, d1);
  write_bytes(fs, a, 8 * kMiB, d2);
  model_write(ma, 0, d1);
  model_write(ma, 8 * kMiB, d2);
  truncate_to(fs, a, 12 * kMiB);
  ma.resize(12 * kMiB, '\0');
  REQUIRE(fs.fallocate(a, FALLOC_FL_KEEP_SIZE, 10 * kMiB, 16 * kB) == 0);  // unwritten: reads as zeros

  const Ino b = clone_whole(fs, a, ma.size());
  CHECK_CONTENT(fs, b, ma);
  const FragReport fb = frag_of(fs, b);
  CHECK(fb.mapped_blocks == (64 + 3) * kB / kB);  // the unwritten blocks become holes
  CHECK(synced(fs).saved_blocks == 64 + 3);
  CHECK(fs.lseek(b, 0, SEEK_HOLE) == static_cast<std::int64_t>(64 * kB));
  CHECK(fs.lseek(b, 64 * kB, SEEK_DATA) == static_cast<std::int64_t>(8 * kMiB));
  CHECK(fs.lseek(b, 8 * kMiB, SEEK_HOLE) == static_cast<std::int64_t>(8 * kMiB + 3 * kB));
  CHECK(fs.lseek(b, 8 * kMiB + 3 * kB, SEEK_DATA) == -ENXIO);

  // A clone of a hole over data punches the data.
  std::string mc = pattern(2 * kMiB, 10);
  const Ino c = write_file(fs, kRootIno, "c", mc);
  REQUIRE(cfr(fs, a, 2 * kMiB, c, 0, kMiB) == static_cast<ssize_t>(kMiB));
  model_copy(ma, 2 * kMiB, mc, 0, kMiB);
  CHECK_CONTENT(fs, c, mc);
  CHECK(frag_of(fs, c).mapped_blocks == kMiB / kB);
  rig.reopen();
  CHECK_CONTENT(*rig.fs, b, ma);
  CHECK_CONTENT(*rig.fs, c, mc);
}

TEST_CASE("sharing: clone of a file's last partial block", "[sharing]") {
  Rig rig;
  FileSystem& fs = *rig.fs;

  SECTION("shared whole when it ends the destination; extending either side reads zeros past the old end") {
    std::string ma = pattern(5 * kB + 1000, 11);
    const Ino a = write_file(fs, kRootIno, "a", ma);
    const Ino b = create_empty(fs, kRootIno, "b");
    std::string mb;
    REQUIRE(cfr(fs, a, 0, b, 0, ma.size()) == static_cast<ssize_t>(ma.size()));
    model_copy(ma, 0, mb, 0, ma.size());
    CHECK(synced(fs).saved_blocks == 6);
    CHECK_CONTENT(fs, b, mb);
    truncate_to(fs, b, 7 * kB);
    mb.resize(7 * kB, '\0');
    CHECK_CONTENT(fs, b, mb);
    CHECK_CONTENT(fs, a, ma);
    write_bytes(fs, a, ma.size() + 10, "after a gap");
    model_write(ma, ma.size() + 10, "after a gap");
    CHECK_CONTENT(fs, a, ma);
    CHECK_CONTENT(fs, b, mb);
  }
  SECTION("stale bytes past the source's end never show in the clone") {
    // The source's last block holds old bytes beyond its end on the device.
    std::string ma = pattern(2 * kB, 12);
    const Ino a = write_file(fs, kRootIno, "a", ma);
    truncate_to(fs, a, kB + 100);
    ma.resize(kB + 100);
    const Ino b = create_empty(fs, kRootIno, "b");
    std::string mb;
    REQUIRE(cfr(fs, a, 0, b, 0, ma.size()) == static_cast<ssize_t>(ma.size()));
    model_copy(ma, 0, mb, 0, ma.size());
    CHECK_CONTENT(fs, b, mb);
    truncate_to(fs, b, 2 * kB);
    mb.resize(2 * kB, '\0');
    CHECK_CONTENT(fs, b, mb);
    // Growing by a write past the end, and by cloning past the end.
    const Ino c = create_empty(fs, kRootIno, "c");
    std::string mc;
    REQUIRE(cfr(fs, a, 0, c, 0, ma.size()) == static_cast<ssize_t>(ma.size()));
    model_copy(ma, 0, mc, 0, ma.size());
    write_bytes(fs, c, 3 * kB, "x");
    model_write(mc, 3 * kB, "x");
    CHECK_CONTENT(fs, c, mc);
    const Ino d = create_empty(fs, kRootIno, "d");
    std::string md;
    REQUIRE(cfr(fs, a, 0, d, 0, ma.size()) == static_cast<ssize_t>(ma.size()));
    model_copy(ma, 0, md, 0, ma.size());
    REQUIRE(cfr(fs, a, 0, d, 3 * kB, kB) == static_cast<ssize_t>(kB));  // past d's end: its tail is zeroed
    model_copy(ma, 0, md, 3 * kB, kB);
    CHECK_CONTENT(fs, d, md);
    CHECK_CONTENT(fs, a, ma);
  }
  SECTION("copied when the destination goes on after it") {
    std::string ma = pattern(3 * kB + 500, 13);
    std::string mb = pattern(40 * kB, 14);
    const Ino a = write_file(fs, kRootIno, "a", ma);
    const Ino b = write_file(fs, kRootIno, "b", mb);
    REQUIRE(cfr(fs, a, 0, b, 8 * kB, ma.size()) == static_cast<ssize_t>(ma.size()));
    model_copy(ma, 0, mb, 8 * kB, ma.size());
    CHECK_CONTENT(fs, b, mb);
    CHECK(synced(fs).saved_blocks == 3);
  }
  rig.reopen();
}

TEST_CASE("sharing: clone within one file", "[sharing]") {
  Rig rig;
  FileSystem& fs = *rig.fs;
  std::string ma = pattern(4 * kMiB, 15);
  const Ino a = write_file(fs, kRootIno, "a", ma);
  REQUIRE(cfr(fs, a, 0, a, 8 * kMiB, 2 * kMiB) == static_cast<ssize_t>(2 * kMiB));
  model_copy(ma, 0, ma, 8 * kMiB, 2 * kMiB);
  CHECK_CONTENT(fs, a, ma);
  CHECK(synced(fs).saved_blocks == 2 * kMiB / kB);
  REQUIRE(cfr(fs, a, 3 * kMiB, a, kMiB / 2, 64 * kB) == static_cast<ssize_t>(64 * kB));  // backwards, disjoint
  model_copy(ma, 3 * kMiB, ma, kMiB / 2, 64 * kB);
  CHECK_CONTENT(fs, a, ma);
  // Adjacent but not overlapping.
  REQUIRE(cfr(fs, a, 0, a, kMiB, kMiB) == static_cast<ssize_t>(kMiB));
  model_copy(ma, 0, ma, kMiB, kMiB);
  CHECK_CONTENT(fs, a, ma);

  // Overlapping ranges of one file are refused, aligned or not.
  CHECK(cfr(fs, a, 0, a, kB, 2 * kB) == -EINVAL);
  CHECK(cfr(fs, a, kB, a, 0, 2 * kB) == -EINVAL);
  CHECK(cfr(fs, a, 10, a, 20, 100) == -EINVAL);
  CHECK(cfr(fs, a, 0, a, 0, kB) == -EINVAL);
  CHECK_CONTENT(fs, a, ma);

  // The copies are independent of each other.
  write_bytes(fs, a, 8 * kMiB + 3, "changed");
  model_write(ma, 8 * kMiB + 3, "changed");
  CHECK_CONTENT(fs, a, ma);
  rig.reopen();
  CHECK_CONTENT(*rig.fs, a, ma);
}

TEST_CASE("sharing: copy_file_range errors", "[sharing]") {
  Rig rig;
  FileSystem& fs = *rig.fs;
  const Ino a = write_file(fs, kRootIno, "a", pattern(2 * kB, 16));
  Attr d;
  REQUIRE(fs.mkdir(kRootIno, "d", 0755, kRoot, &d) == 0);
  fs.forget(d.ino, 1);
  CHECK(cfr(fs, a, 0, d.ino, 0, kB) == -EISDIR);
  CHECK(cfr(fs, d.ino, 0, a, 0, kB) == -EISDIR);
  CHECK(cfr(fs, a, 0, 999999, 0, kB) == -ENOENT);
  CHECK(cfr(fs, a, 0, a, 4 * kB, 0) == 0);
}

// ------------------------------------------------------ whole-chunk sharing

TEST_CASE("sharing: whole-chunk writes of stored bytes share them", "[sharing]") {
  Rig rig;
  FileSystem& fs = *rig.fs;
  const std::string data = pattern(4 * kMiB, 17);
  const Ino a = create_empty(fs, kRootIno, "a");
  write_chunked(fs, a, 0, data);
  REQUIRE(fs.syncfs() == 0);
  const FsStats s0 = synced(fs);

  SECTION("identical chunks are shared, not stored again") {
    const Ino b = create_empty(fs, kRootIno, "b");
    write_chunked(fs, b, 0, data);
    REQUIRE(fs.syncfs() == 0);
    const FsStats s1 = synced(fs);
    CHECK(s1.saved_blocks == s0.saved_blocks + data.size() / kB);
    CHECK(s1.free_blocks == s0.free_blocks);
    CHECK_CONTENT(fs, b, data);
    // The copy is independent.
    write_bytes(fs, b, kMiB + 5, "mine");
    std::string mb = data;
    model_write(mb, kMiB + 5, "mine");
    CHECK_CONTENT(fs, b, mb);
    CHECK_CONTENT(fs, a, data);
    rig.reopen();
    CHECK_CONTENT(*rig.fs, a, data);
    CHECK_CONTENT(*rig.fs, b, mb);
  }
  SECTION("a chunk with one byte different is stored") {
    std::string other = data;
    other[2 * kMiB + 777] ^= 0x5a;
    const Ino b = create_empty(fs, kRootIno, "b");
    write_chunked(fs, b, 0, other);
    REQUIRE(fs.syncfs() == 0);
    const FsStats s1 = synced(fs);
    CHECK(s1.saved_blocks == s0.saved_blocks + (data.size() - kChunkBytes) / kB);
    CHECK(s1.free_blocks == s0.free_blocks - kChunkBytes / kB);
    CHECK_CONTENT(fs, b, other);
    CHECK_CONTENT(fs, a, data);
  }
  SECTION("a chunk at another place of the file, and a short last chunk") {
    const std::string tail = pattern(kMiB / 2 + 100, 18);
    write_bytes(fs, a, 4 * kMiB, tail);  // ends the file: a chunk
    std::string ma = data + tail;
    const Ino b = create_empty(fs, kRootIno, "b");
    std::string mb;
    // b's chunk 0 holds a's chunk 3, its chunk 1 a's short last chunk.
    write_bytes(fs, b, 0, data.substr(3 * kMiB, kMiB));
    write_bytes(fs, b, kMiB, tail);
    model_write(mb, 0, data.substr(3 * kMiB, kMiB));
    model_write(mb, kMiB, tail);
    CHECK_CONTENT(fs, b, mb);
    CHECK(synced(fs).saved_blocks == s0.saved_blocks + kMiB / kB + (tail.size() + kB - 1) / kB);
    // b grows past the shared short chunk: the rest of its last block is zeros.
    truncate_to(fs, b, 2 * kMiB + 3 * kB);
    mb.resize(2 * kMiB + 3 * kB, '\0');
    CHECK_CONTENT(fs, b, mb);
    CHECK_CONTENT(fs, a, ma);
    rig.reopen();
    CHECK_CONTENT(*rig.fs, a, ma);
    CHECK_CONTENT(*rig.fs, b, mb);
  }
  SECTION("a stored chunk written past the end: the gap and the old tail read as zeros") {
    std::string mb = pattern(3 * kB, 35);
    const Ino b = write_file(fs, kRootIno, "b", mb);
    truncate_to(fs, b, 5000);  // the device keeps the old bytes past 5000 in block 1
    mb.resize(5000);
    write_bytes(fs, b, kMiB, data.substr(0, kMiB));
    model_write(mb, kMiB, data.substr(0, kMiB));
    CHECK_CONTENT(fs, b, mb);
    CHECK(synced(fs).saved_blocks == s0.saved_blocks + kMiB / kB);
    // The same through a clone past the end.
    std::string mc = pattern(3 * kB, 36);
    const Ino c = write_file(fs, kRootIno, "c", mc);
    truncate_to(fs, c, 5000);
    mc.resize(5000);
    REQUIRE(cfr(fs, a, 0, c, 2 * kMiB, kMiB) == static_cast<ssize_t>(kMiB));
    model_copy(data, 0, mc, 2 * kMiB, kMiB);
    CHECK_CONTENT(fs, c, mc);
    rig.reopen();
    CHECK_CONTENT(*rig.fs, b, mb);
    CHECK_CONTENT(*rig.fs, c, mc);
  }
  SECTION("a clone rewriting its own bytes as a chunk stays shared") {
    const Ino b = clone_whole(fs, a, data.size());
    REQUIRE(fs.syncfs() == 0);
    const FsStats s1 = synced(fs);
    write_bytes(fs, b, 2 * kMiB, data.substr(2 * kMiB, kMiB));  // the same bytes: shares a's blocks again
    REQUIRE(fs.syncfs() == 0);
    CHECK(synced(fs).saved_blocks == s1.saved_blocks);
    CHECK(synced(fs).free_blocks == s1.free_blocks);
    CHECK_CONTENT(fs, b, data);
    rig.reopen();
  }
  SECTION("the same chunk written within one file") {
    write_bytes(fs, a, 6 * kMiB, data.substr(0, kMiB));
    std::string ma = data;
    model_write(ma, 6 * kMiB, data.substr(0, kMiB));
    CHECK(synced(fs).saved_blocks == s0.saved_blocks + kMiB / kB);
    CHECK_CONTENT(fs, a, ma);
    // Rewriting a chunk with the bytes it already holds changes nothing.
    REQUIRE(fs.syncfs() == 0);
    const FsStats s1 = synced(fs);
    write_bytes(fs, a, kMiB, data.substr(kMiB, kMiB));
    CHECK(synced(fs).saved_blocks == s1.saved_blocks);
    CHECK_CONTENT(fs, a, ma);
    rig.reopen();
    CHECK_CONTENT(*rig.fs, a, ma);
  }
}

namespace {
// Forwards to a MemDevice and counts the bytes read through the medium's
// page cache and not.
class CacheWatch final : public Device {
 public:
  explicit CacheWatch(std::shared_ptr<MemDevice> inner) : inner_(std::move(inner)) {}
  int submit(std::span<const DeviceIo> ios) override {
    for (const DeviceIo& io : ios)
      if (io.op == DeviceIo::Op::Read) (io.cached ? cached_reads : direct_reads).fetch_add(io.len);
    return inner_->submit(ios);
  }
  int flush() override { return inner_->flush(); }
  std::uint64_t size_bytes() const override { return inner_->size_bytes(); }
  bool read_only() const override { return false; }
  std::string describe() const override { return "cache watch"; }
  void reset() { cached_reads = direct_reads = 0; }

  std::atomic<std::uint64_t> cached_reads{0}, direct_reads{0};

 private:
  std::shared_ptr<MemDevice> inner_;
};
}  // namespace

// An overlay copy-up (or cp) first asks where the source's data lies
// (SEEK_DATA), then reads it, then writes the same bytes: from then on the
// blocks the source serves stay in memory until the copy's writes are
// compared with them, and the comparison reads no device. Reads before the
// question keep nothing, and no file is read through the medium's page
// cache for it.
TEST_CASE("sharing: a file asked where its data lies keeps the blocks it serves for its copy", "[sharing]") {
  auto owned = std::make_unique<CacheWatch>(test::format_medium(256 * kMiB));
  CacheWatch& dev = *owned;
  std::string error;
  auto fs = FileSystem::open(std::move(owned), Rig::exact_cow(), error);
  REQUIRE(fs);
  const std::string data = pattern(4 * kMiB, 31);
  const Ino a = create_empty(*fs, kRootIno, "a");
  write_chunked(*fs, a, 0, data);
  REQUIRE(fs->syncfs() == 0);
  const FsStats s0 = synced(*fs);

  dev.reset();
  CHECK(read_at(*fs, a, 0, kMiB) == data.substr(0, kMiB));
  CHECK(dev.direct_reads >= kMiB);
  CHECK(dev.cached_reads == 0);

  REQUIRE(fs->lseek(a, 0, SEEK_DATA) == 0);
  dev.reset();
  for (std::uint64_t off = kMiB; off < data.size(); off += kMiB)
    CHECK(read_at(*fs, a, off, kMiB) == data.substr(off, kMiB));
  CHECK(dev.direct_reads == data.size() - kMiB);
  CHECK(dev.cached_reads == 0);

  // The copy: every chunk is shared; only the first MiB, read before the
  // question, is read again to be compared.
  dev.reset();
  const Ino b = create_empty(*fs, kRootIno, "b");
  write_chunked(*fs, b, 0, data);
  REQUIRE(fs->syncfs() == 0);
  CHECK(synced(*fs).saved_blocks == s0.saved_blocks + data.size() / kB);
  CHECK(dev.direct_reads == kMiB);
  CHECK(dev.cached_reads == 0);
  CHECK_CONTENT(*fs, b, data);
  CHECK_CONTENT(*fs, a, data);

  // The source's last handle closes before a copy compares (cp to another
  // filesystem never compares): the blocks it kept go. A copy that asks
  // again but reads nothing then finds none to compare with.
  REQUIRE(fs->open(a, O_RDONLY) == 0);
  REQUIRE(fs->lseek(a, 0, SEEK_DATA) == 0);
  for (std::uint64_t off = 0; off < data.size(); off += kMiB) read_at(*fs, a, off, kMiB);
  fs->release(a);
  REQUIRE(fs->open(a, O_RDONLY) == 0);
  REQUIRE(fs->lseek(a, 0, SEEK_DATA) == 0);
  dev.reset();
  const Ino c = create_empty(*fs, kRootIno, "c");
  write_chunked(*fs, c, 0, data);
  REQUIRE(fs->syncfs() == 0);
  CHECK(synced(*fs).saved_blocks == s0.saved_blocks + 2 * data.size() / kB);
  CHECK(dev.direct_reads >= data.size());
  fs->release(a);
  CHECK_CONTENT(*fs, c, data);
}

// ---------------------------------------------- persistence of the counts

TEST_CASE("sharing: bytes of a deleted file are written side by side, not down the exclusive path", "[sharing]") {
  // The chunk index still names the deleted file's windows; such entries
  // must not count as stored chunks (which send large writes down the
  // exclusive path, one at a time per file).
  Rig rig;
  FileSystem& fs = *rig.fs;
  const std::string data = pattern(4 * kMiB, 23);
  const Ino a = create_empty(fs, kRootIno, "a");
  const WritePathCounts c0 = fs.write_path_counts();
  write_chunked(fs, a, 0, data);
  const WritePathCounts c1 = fs.write_path_counts();
  CHECK(c1.in_stripes == c0.in_stripes + 4);
  CHECK(c1.exclusive == c0.exclusive);
  auto unlink_a = [&] {
    REQUIRE(fs.unlink(kRootIno, "a") == 0);
    REQUIRE(fs.syncfs() == 0);
  };
  // A third copy shares all of b's blocks if b's windows were remembered.
  // (b is read only afterwards: a read remembers the windows it loads.)
  auto third_copy_shares_b = [&](Ino b) {
    const Ino c = create_empty(fs, kRootIno, "c");
    write_chunked(fs, c, 0, data);
    CHECK(synced(fs).shared_blocks == data.size() / kB);
    CHECK_CONTENT(fs, c, data);
    CHECK_CONTENT(fs, b, data);
  };

  SECTION("while the file lives, its bytes are shared (side by side too: whole windows, another file)") {
    const Ino b = create_empty(fs, kRootIno, "b");
    write_chunked(fs, b, 0, data);
    const WritePathCounts c2 = fs.write_path_counts();
    CHECK(c2.in_stripes == c1.in_stripes + 4);
    CHECK(c2.exclusive == c1.exclusive);
    CHECK(synced(fs).shared_blocks == data.size() / kB);
    CHECK_CONTENT(fs, b, data);
  }
  SECTION("once it is deleted, they are plain new data") {
    unlink_a();
    const Ino b = create_empty(fs, kRootIno, "b");
    write_chunked(fs, b, 0, data);
    const WritePathCounts c2 = fs.write_path_counts();
    CHECK(c2.in_stripes == c1.in_stripes + 4);
    CHECK(c2.exclusive == c1.exclusive);
    CHECK(synced(fs).shared_blocks == 0);
    // And b's windows are remembered in their place.
    third_copy_shares_b(b);
  }
  SECTION("written down the exclusive path, they are remembered in their place too") {
    unlink_a();
    // A first block, then the rest in one write that starts off a window
    // boundary: the exclusive path (write_piece_locked) meets the deleted
    // file's windows.
    const Ino b = create_empty(fs, kRootIno, "b");
    write_bytes(fs, b, 0, data.substr(0, kB));
    const WritePathCounts c2 = fs.write_path_counts();
    write_bytes(fs, b, kB, data.substr(kB, kMiB));
    write_chunked(fs, b, kB + kMiB, data.substr(kB + kMiB));
    CHECK(fs.write_path_counts().exclusive > c2.exclusive);
    CHECK(synced(fs).shared_blocks == 0);
    // (Had the exclusive path left the deleted file's entries in place, c
    // would share only b's first window, which was completed whole.)
    third_copy_shares_b(b);
  }
}

TEST_CASE("sharing: reference counts survive a crash (journal replay) and keep copy-on-write", "[sharing]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium, 128 * kMiB);
  const std::string ma = pattern(2 * kMiB, 19);
  const Ino a = write_file(*fs, kRootIno, "a", ma);
  const Ino b = create_empty(*fs, kRootIno, "b");
  REQUIRE(cfr(*fs, a, 0, b, 0, ma.size()) == static_cast<ssize_t>(ma.size()));
  const Ino c = create_empty(*fs, kRootIno, "c");
  REQUIRE(cfr(*fs, b, 0, c, 0, kMiB) == static_cast<ssize_t>(kMiB));
  std::string mb = ma;
  write_bytes(*fs, b, 3 * kB, "cow");
  model_write(mb, 3 * kB, "cow");
  REQUIRE(fs->syncfs() == 0);
  const FsStats s = synced(*fs);
  auto copy = test::crash_copy(medium);  // the journal holds everything, no checkpoint since
  fs.reset();

  check_image(copy);
  auto again = test::open_fs(copy);
  REQUIRE(again->journal_replayed_batches() > 0);
  CHECK(synced(*again).saved_blocks == s.saved_blocks);
  CHECK(synced(*again).shared_blocks == s.shared_blocks);
  CHECK_CONTENT(*again, a, ma);
  CHECK_CONTENT(*again, b, mb);
  CHECK_CONTENT(*again, c, ma.substr(0, kMiB));
  // Still shared after recovery: a write to any side must not show elsewhere.
  write_bytes(*again, c, 0, "c writes");
  write_bytes(*again, a, 10 * kB, "a writes");
  std::string ma2 = ma, mc = ma.substr(0, kMiB);
  model_write(mc, 0, "c writes");
  model_write(ma2, 10 * kB, "a writes");
  CHECK_CONTENT(*again, a, ma2);
  CHECK_CONTENT(*again, b, mb);
  CHECK_CONTENT(*again, c, mc);
  REQUIRE(again->shutdown() == 0);
  again.reset();
  check_image(copy);
}

TEST_CASE("sharing: an unlinked open clone is freed at the next mount after a crash", "[sharing]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium, 128 * kMiB);
  const std::string ma = pattern(2 * kMiB, 30);
  const Ino a = write_file(*fs, kRootIno, "a", ma);
  Attr b;
  REQUIRE(fs->create(kRootIno, "b", 0644, O_RDWR | O_CREAT, kRoot, &b) == 0);  // stays open
  REQUIRE(cfr(*fs, a, 0, b.ino, 0, ma.size()) == static_cast<ssize_t>(ma.size()));
  write_bytes(*fs, b.ino, 10 * kB, "private");
  REQUIRE(fs->unlink(kRootIno, "b") == 0);
  REQUIRE(fs->syncfs() == 0);
  CHECK(synced(*fs).saved_blocks == (ma.size() - kDefaultCowUnitBytes) / kB);  // the unit around the write was copied
  auto copy = test::crash_copy(medium);  // b: an orphan holding shared blocks
  fs.reset();

  check_image(copy);
  auto again = test::open_fs(copy);
  CHECK(synced(*again).saved_blocks == 0);
  CHECK(synced(*again).shared_blocks == 0);
  CHECK_CONTENT(*again, a, ma);
  REQUIRE(again->syncfs() == 0);
  write_bytes(*again, a, 0, "a is alone now");  // in place
  REQUIRE(again->shutdown() == 0);
  again.reset();
  const FsckReport r = check_image(copy);
  CHECK(r.file_blocks == ma.size() / kB);
}

TEST_CASE("sharing: a clone of a file of thousands of extents", "[sharing]") {
  Rig rig;
  FileSystem& fs = *rig.fs;
  // Every other block written: 3000 extents and as many holes.
  const Ino a = create_empty(fs, kRootIno, "a");
  std::string ma;
  for (std::uint64_t l = 0; l < 6000; l += 2) {
    const std::string d = pattern(kB, l);
    write_bytes(fs, a, l * kB, d);
    model_write(ma, l * kB, d);
  }
  REQUIRE(frag_of(fs, a).extents >= 3000);
  const Ino b = clone_whole(fs, a, ma.size());
  CHECK_CONTENT(fs, b, ma);
  CHECK(synced(fs).saved_blocks == 3000);
  CHECK(frag_of(fs, b).mapped_blocks == 3000);
  // At an offset, into a file with data of its own.
  std::string mc = pattern(30 * kMiB, 31);
  const Ino c = write_file(fs, kRootIno, "c", mc);
  REQUIRE(cfr(fs, a, 4 * kB, c, kMiB, ma.size()) == static_cast<ssize_t>(ma.size() - 4 * kB));
  model_copy(ma, 4 * kB, mc, kMiB, ma.size());
  CHECK_CONTENT(fs, c, mc);
  rig.reopen();
  CHECK_CONTENT(*rig.fs, a, ma);
  CHECK_CONTENT(*rig.fs, b, ma);
  CHECK_CONTENT(*rig.fs, c, mc);
}

TEST_CASE("sharing: copy-on-write on a full device fails with ENOSPC and changes nothing", "[sharing][enospc]") {
  Rig rig(64 * kMiB);
  FileSystem& fs = *rig.fs;
  const std::string ma = pattern(4 * kMiB, 32);
  const Ino a = write_file(fs, kRootIno, "a", ma);
  const Ino b = clone_whole(fs, a, ma.size());
  // Fill the device.
  const Ino fill = create_empty(fs, kRootIno, "fill");
  std::uint64_t off = 0;
  while (fs.write(fill, off, as_bytes(pattern(kMiB, off))) == static_cast<ssize_t>(kMiB)) off += kMiB;
  while (fs.write(fill, off, as_bytes(pattern(kB, off))) == static_cast<ssize_t>(kB)) off += kB;
  REQUIRE(synced(fs).available_blocks == 0);
  // A write to a shared block needs a new block: none.
  CHECK(fs.write(b, 5 * kB, as_bytes(pattern(2 * kB, 33))) == -ENOSPC);
  CHECK(fs.write(a, 0, as_bytes(pattern(kMiB, 34))) == -ENOSPC);
  CHECK_CONTENT(fs, a, ma);
  CHECK_CONTENT(fs, b, ma);
  // A clone needs no data blocks.
  const Ino c = create_empty(fs, kRootIno, "c");
  CHECK(cfr(fs, a, 0, c, 0, ma.size()) == static_cast<ssize_t>(ma.size()));
  CHECK_CONTENT(fs, c, ma);
  // Freeing the filler makes room again.
  REQUIRE(fs.unlink(kRootIno, "fill") == 0);
  REQUIRE(fs.syncfs() == 0);
  std::string mb = ma;
  write_bytes(fs, b, 5 * kB, "now it fits");
  model_write(mb, 5 * kB, "now it fits");
  CHECK_CONTENT(fs, b, mb);
  CHECK_CONTENT(fs, a, ma);
  CHECK_CONTENT(fs, c, ma);
  rig.reopen();
}

// Threads clone one constant source and change their own clones (writes,
// chunk writes of the source's bytes, truncates, punches, re-clones) at
// the same time; every thread checks its file against its model, and the
// source must stay intact.
TEST_CASE("sharing: concurrent clones and copy-on-write of one source", "[sharing][threads]") {
  Rig rig;
  FileSystem& fs = *rig.fs;
  const std::string src = pattern(4 * kMiB, 40);
  const Ino s = create_empty(fs, kRootIno, "src");
  write_chunked(fs, s, 0, src);
  constexpr int kThreads = 4;
  std::vector<Ino> mine(kThreads);
  for (int t = 0; t < kThreads; ++t) mine[t] = create_empty(fs, kRootIno, "t" + std::to_string(t));
  std::vector<std::string> errors(kThreads);
  std::vector<std::string> models(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      std::string& m = models[t];
      const Ino f = mine[t];
      for (int i = 0; i < 300 && errors[t].empty(); ++i) {
        const auto op = rng() % 6;
        ssize_t rc = 0;
        std::size_t want = 0;
        if (op == 0) {  // clone a piece of the source
          const std::uint64_t off = rng() % (src.size() / kB) * kB, len = 1 + rng() % (2 * kMiB);
          const std::uint64_t out = rng() % (4 * kMiB / kB) * kB;
          want = model_copy(src, off, m, out, len);
          rc = fs.copy_file_range(s, off, f, out, len);
        } else if (op == 1) {  // a chunk of the source, written
          const std::uint64_t k = rng() % 4, out = rng() % 4;
          const std::string_view d = std::string_view(src).substr(k * kMiB, kMiB);
          model_write(m, out * kMiB, d);
          want = kMiB;
          rc = fs.write(f, out * kMiB, as_bytes(d));
        } else if (op == 2 || op == 3) {  // small writes
          const std::uint64_t off = rng() % (m.size() + 1);
          const std::string d = pattern(1 + rng() % (3 * kB), rng());
          model_write(m, off, d);
          want = d.size();
          rc = fs.write(f, off, as_bytes(d));
        } else if (op == 4) {
          const std::uint64_t size = rng() % (m.size() + 1);
          SetAttr sa;
          sa.valid = SetAttr::kSize;
          sa.size = size;
          Attr out;
          rc = fs.setattr(f, sa, &out);
          m.resize(size, '\0');
        } else {
          const std::uint64_t off = rng() % (m.size() + 1), len = 1 + rng() % (64 * kB);
          model_punch(m, off, len);
          rc = fs.fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
        }
        if (rc != static_cast<ssize_t>(want)) {
          errors[t] = fmt::format("op {} returned {} (want {})", op, rc, want);
          break;
        }
        if (std::string d = content_diff(fs, f, m); !d.empty()) errors[t] = fmt::format("after op {} #{}: {}", op, i, d);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    INFO("thread " << t);
    CHECK(errors[t] == "");
  }
  CHECK_CONTENT(fs, s, src);
  rig.reopen();
  CHECK_CONTENT(*rig.fs, s, src);
  for (int t = 0; t < kThreads; ++t) CHECK_CONTENT(*rig.fs, mine[t], models[t]);
}

// Small writes inside one file run side by side (shared I/O lock, stripe
// locks): threads overwrite their own bytes of one clone at random, aligned
// and not, while a reader checks that the clone's source never changes.
TEST_CASE("sharing: concurrent small writes into one clone", "[sharing][threads]") {
  FsOptions o;
  o.cow_unit_bytes = GENERATE(as<std::uint64_t>{}, 4096, 64 * 1024, 1024 * 1024);
  INFO("cow_unit " << *o.cow_unit_bytes);
  Rig rig(128 * kMiB, o);
  FileSystem& fs = *rig.fs;
  const std::string src = pattern(4 * kMiB, 50);
  const Ino a = write_file(fs, kRootIno, "a", src);
  const Ino b = clone_whole(fs, a, src.size());
  constexpr int kWriters = 4;
  std::string model = src;  // writers change disjoint bytes of it
  std::vector<std::string> errors(kWriters + 1);
  std::atomic<bool> writing{true};
  std::vector<std::thread> threads;
  for (int t = 0; t < kWriters; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(700 + t);
      for (int i = 0; i < 1500 && errors[t].empty(); ++i) {
        // Thread t owns the blocks whose number is t modulo kWriters.
        const std::uint64_t blk = (rng() % (src.size() / kB / kWriters)) * kWriters + t;
        const std::uint64_t in = rng() % 2 ? 0 : rng() % kB;
        const std::string d = pattern(1 + rng() % (kB - in), rng());
        const ssize_t rc = fs.write(b, blk * kB + in, as_bytes(d));
        if (rc != static_cast<ssize_t>(d.size())) errors[t] = fmt::format("write returned {}", rc);
        std::memcpy(model.data() + blk * kB + in, d.data(), d.size());  // disjoint bytes per thread
      }
    });
  }
  threads.emplace_back([&] {
    std::mt19937_64 rng(799);
    while (writing && errors[kWriters].empty()) {
      const std::uint64_t off = rng() % src.size(), len = 1 + rng() % (256 * kB);
      if (std::string got = read_at(fs, a, off, len); got != src.substr(off, len))
        errors[kWriters] = fmt::format("the source changed at {}+{}", off, len);
    }
  });
  for (int t = 0; t < kWriters; ++t) threads[t].join();
  writing = false;
  threads.back().join();
  for (int t = 0; t <= kWriters; ++t) {
    INFO("thread " << t);
    CHECK(errors[t] == "");
  }
  CHECK_CONTENT(fs, b, model);
  CHECK_CONTENT(fs, a, src);
  rig.reopen();  // fsck clean, space accounted exactly
  CHECK_CONTENT(*rig.fs, b, model);
  CHECK_CONTENT(*rig.fs, a, src);
}

TEST_CASE("sharing: large writes of stored bytes share side by side while files are copied into each other",
          "[sharing][threads]") {
  // Threads write whole 128 KiB pieces (two chunk windows) drawn from a
  // small pool into four files, so each write's bytes are stored in another
  // file (or another place of its own) that other threads rewrite meanwhile:
  // the side-by-side path shares while the sources change under it, and
  // threads holding one file's stripes want another's, both ways round.
  Rig rig(256 * kMiB);
  FileSystem& fs = *rig.fs;
  constexpr std::uint64_t kPiece = 128 * kB, kPieces = 16, kFiles = 4, kPool = 6;
  std::vector<std::string> pool;
  for (std::uint64_t i = 0; i < kPool; ++i) pool.push_back(pattern(kPiece, 900 + i));
  std::vector<Ino> files;
  std::vector<std::string> model(kFiles);
  for (std::uint64_t f = 0; f < kFiles; ++f) {
    for (std::uint64_t p = 0; p < kPieces; ++p) model[f] += pool[(f + p) % kPool];
    files.push_back(write_file(fs, kRootIno, fmt::format("f{}", f), model[f]));
  }
  const WritePathCounts c0 = fs.write_path_counts();
  constexpr int kWriters = 4;
  std::vector<std::string> errors(kWriters);
  std::vector<std::thread> threads;
  for (int t = 0; t < kWriters; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(950 + t);
      for (int i = 0; i < 300 && errors[t].empty(); ++i) {
        // Thread t owns the pieces whose number is t modulo kWriters.
        const std::uint64_t f = rng() % kFiles, p = (rng() % (kPieces / kWriters)) * kWriters + t;
        const std::string& d = pool[rng() % kPool];
        if (const ssize_t rc = fs.write(files[f], p * kPiece, as_bytes(d)); rc != static_cast<ssize_t>(kPiece))
          errors[t] = fmt::format("write returned {}", rc);
        model[f].replace(p * kPiece, kPiece, d);  // disjoint pieces per thread
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kWriters; ++t) {
    INFO("thread " << t);
    CHECK(errors[t] == "");
  }
  const WritePathCounts c1 = fs.write_path_counts();
  CHECK(c1.in_stripes > c0.in_stripes);
  for (std::uint64_t f = 0; f < kFiles; ++f) CHECK_CONTENT(fs, files[f], model[f]);
  // 32 MiB of files hold six distinct pieces (3 MiB); where a source
  // changed under a write or was busy, its bytes were written instead
  // (about half to two thirds of the blocks are saved, a quarter at least).
  const FsStats st = synced(fs);
  INFO("blocks referenced " << st.allocated_blocks << ", saved by sharing " << st.saved_blocks);
  CHECK(st.saved_blocks >= kFiles * kPieces * kPiece / kB / 4);
  rig.reopen();  // fsck clean, reference counts exact
  for (std::uint64_t f = 0; f < kFiles; ++f) CHECK_CONTENT(*rig.fs, files[f], model[f]);
}

TEST_CASE("sharing: blocks copied on write in file order lie side by side and read back right", "[sharing]") {
  // Every fourth block of a clone overwritten in file order (the order the
  // kernel writes dirty pages back in): the copies are placed one after
  // another, not each where the file's offset would put it, so that a read
  // of the clone merges them into one device read.
  FsOptions o;
  o.cow_unit_bytes = kB;
  Rig rig(128 * kMiB, o);
  FileSystem& fs = *rig.fs;
  const std::string ma = pattern(2 * kMiB, 40);
  const Ino a = write_file(fs, kRootIno, "a", ma);
  const Ino b = clone_whole(fs, a, ma.size());
  std::string mb = ma;
  std::vector<std::string> blocks;
  for (std::uint64_t l = 1; l < ma.size() / kB; l += 4) {
    blocks.push_back(pattern(kB, 4000 + l));
    write_bytes(fs, b, l * kB, blocks.back());
    model_write(mb, l * kB, blocks.back());
  }
  REQUIRE(fs.syncfs() == 0);
  // Where each copy landed on the device.
  const std::vector<std::byte>& dev = rig.medium->bytes();
  auto block_at = [&](const std::string& want) -> std::int64_t {
    for (std::size_t at = 0; at + kB <= dev.size(); at += kB)
      if (std::memcmp(dev.data() + at, want.data(), kB) == 0) return static_cast<std::int64_t>(at / kB);
    return -1;
  };
  std::vector<std::int64_t> where;
  for (const std::string& blk : blocks) where.push_back(block_at(blk));
  for (std::size_t i = 1; i < where.size(); ++i) {
    INFO("copy " << i << " at block " << where[i] << ", the one before at " << where[i - 1]);
    REQUIRE(where[i - 1] >= 0);
    CHECK(where[i] == where[i - 1] + 1);
  }
  // Reads see the old extent and the copies merged where they lie close.
  CHECK_CONTENT(fs, b, mb);
  for (std::uint64_t off = 0; off < mb.size(); off += 96 * kB)
    CHECK(read_at(fs, b, off, 200 * kB) == mb.substr(off, 200 * kB));
  CHECK_CONTENT(fs, a, ma);
  rig.reopen();
  CHECK_CONTENT(*rig.fs, b, mb);
}

// --------------------------------------------------------- cow_unit option

TEST_CASE("sharing: cow_unit copies the aligned unit around a write to a shared block", "[sharing][cow_unit]") {
  FsOptions o;
  o.cow_unit_bytes = 64 * 1024;
  Rig rig(128 * kMiB, o);
  FileSystem& fs = *rig.fs;
  const std::string ma = pattern(kMiB, 20);
  const Ino a = write_file(fs, kRootIno, "a", ma);
  const Ino b = clone_whole(fs, a, ma.size());
  std::string mb = ma;
  write_bytes(fs, b, 100 * kB + 10, "unit");  // block 100: inside the unit of blocks [96, 112)
  model_write(mb, 100 * kB + 10, "unit");
  CHECK_CONTENT(fs, b, mb);
  CHECK_CONTENT(fs, a, ma);
  // The whole 64 KiB unit holding the write is b's own now, in one extent.
  const FragReport f = frag_of(fs, b);
  CHECK(f.shared_blocks == kMiB / kB - 16);
  CHECK(f.extents == 3);
  // The unit is persisted: a mount without the option keeps it.
  rig.opts = FsOptions{};
  rig.reopen();
  write_bytes(*rig.fs, b, 200 * kB, "again");  // unit [192, 208)
  model_write(mb, 200 * kB, "again");
  CHECK_CONTENT(*rig.fs, b, mb);
  CHECK_CONTENT(*rig.fs, a, ma);
  CHECK(frag_of(*rig.fs, b).shared_blocks == kMiB / kB - 32);
}

// A file `a` of `bytes` and its clone `b` on a filesystem with `cow_unit`,
// with a hook that counts the data-area reads `counts` says to count.
struct CowUnitRig {
  std::shared_ptr<MemDevice> medium = test::format_medium(128 * kMiB);
  // Installed once and never changed: the reader thread may be inside it at
  // any time, so counting is switched on and off instead.
  std::function<void(const DeviceIo&)> count;
  std::atomic<bool> counting = false;
  std::uint64_t data_area = 0;
  std::shared_ptr<test::IoHook> hook = std::make_shared<test::IoHook>([this](std::span<const DeviceIo> ios) {
    if (!counting) return 0;
    for (const DeviceIo& io : ios)
      if (io.op == DeviceIo::Op::Read && io.offset >= data_area) count(io);
    return 0;
  });
  std::unique_ptr<FileSystem> fs;
  std::string ma;
  Ino a = 0, b = 0;

  CowUnitRig(std::uint64_t cow_unit, std::size_t bytes, int seed) : ma(pattern(bytes, seed)) {
    FsOptions o;
    o.cow_unit_bytes = cow_unit;
    std::string error;
    fs = test::try_open_fs(medium, error, o, hook);
    REQUIRE(fs);
    a = write_file(*fs, kRootIno, "a", ma);
    b = clone_whole(*fs, a, ma.size());
    data_area = fs->superblock().data_start * kBlockSize;
  }
  void count_reads(std::function<void(const DeviceIo&)> fn) {
    count = std::move(fn);
    counting = true;
  }
  void stop_counting() { counting = false; }
};

// The blocks of the unit before and after the write are two pieces of the
// one old extent: they are loaded with one device read, not one each.
TEST_CASE("sharing: a cow_unit copy loads the rest of its unit in one device read", "[sharing][cow_unit]") {
  CowUnitRig rig(64 * 1024, kMiB, 21);
  // The writer's own reads (the blocks after the unit are read ahead on
  // another thread).
  const std::thread::id writer = std::this_thread::get_id();
  std::atomic<std::size_t> reads = 0, read_blocks = 0;
  rig.count_reads([&](const DeviceIo& io) {
    if (std::this_thread::get_id() != writer) return;
    ++reads;
    read_blocks += io.len / kBlockSize;
  });
  std::string mb = rig.ma;
  write_bytes(*rig.fs, rig.b, 100 * kB, std::string(kB, 'w'));  // block 100 of the unit [96, 112)
  model_write(mb, 100 * kB, std::string(kB, 'w'));
  CHECK(reads == 1);
  CHECK(read_blocks == 16);  // the unit, with the block the write replaces
  rig.stop_counting();
  CHECK_CONTENT(*rig.fs, rig.b, mb);
  CHECK_CONTENT(*rig.fs, rig.a, rig.ma);
  CHECK(frag_of(*rig.fs, rig.b).shared_blocks == kMiB / kB - 16);
}

// The kernel writes dirty pages back in file order: after a write to one
// unit, the next units' old blocks are read ahead on another thread, and
// their copies load nothing from the device.
TEST_CASE("sharing: cow_unit copies in file order load the next units from blocks read ahead",
          "[sharing][cow_unit]") {
  constexpr std::uint64_t kUnit = 32 * 1024;
  CowUnitRig rig(kUnit, 8 * kMiB, 22);
  std::atomic<std::size_t> reads = 0, small_reads = 0;
  rig.count_reads([&](const DeviceIo& io) {
    ++reads;
    if (io.len <= kUnit) ++small_reads;
  });
  std::string mb = rig.ma;
  const std::uint64_t units = rig.ma.size() / kUnit;
  for (std::uint64_t u = 0; u < units; ++u) {
    const std::uint64_t off = u * kUnit + (u % 8) * kB;  // one block of each unit
    const std::string data(kB, static_cast<char>('a' + u % 26));
    write_bytes(*rig.fs, rig.b, off, data);
    model_write(mb, off, data);
    // (Let the read ahead land, as the kernel's next requests would.)
    if (u % 16 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  INFO("device reads " << reads << ", of them loads of one unit " << small_reads);
  CHECK(small_reads <= units / 8);
  CHECK(reads <= units / 4);
  rig.stop_counting();
  CHECK_CONTENT(*rig.fs, rig.b, mb);
  CHECK_CONTENT(*rig.fs, rig.a, rig.ma);
}

// ------------------------------------------------------ the model test

// Several files, thousands of random operations, every file compared with
// the model after every step; every `reopen_every` steps a shutdown, the
// Checker, exact space accounting, and a reopen.
TEST_CASE("sharing: random clones, writes, truncates, punches and unlinks match a model", "[sharing][random]") {
  const char* steps_env = std::getenv("DHFS_SHARING_STEPS");
  const char* seed_env = std::getenv("DHFS_SHARING_SEED");
  const int steps = steps_env ? std::max(1, std::atoi(steps_env)) : test::model_steps(3000);
  const std::uint64_t seed = seed_env ? std::strtoull(seed_env, nullptr, 0) : 0x5eed5ULL;
  constexpr int kReopenEvery = 250;
  constexpr int kFiles = 5;
  constexpr std::uint64_t kMaxSize = 2 * kMiB;  // where random offsets end
  constexpr std::uint64_t kCapSize = 4 * kMiB;  // no file grows past this

  // Both the exact copy-on-write of 4 KiB and a cow_unit that copies
  // neighbouring shared blocks too.
  FsOptions o;
  o.cow_unit_bytes = GENERATE(as<std::uint64_t>{}, 4096, 64 * 1024);
  INFO("cow_unit " << *o.cow_unit_bytes);
  Rig rig(256 * kMiB, o);
  const std::uint64_t fresh_free = synced(*rig.fs).free_blocks;
  std::mt19937_64 rng(seed);
  auto rnd = [&](std::uint64_t n) { return n ? rng() % n : 0; };

  struct File {
    std::string name;
    Ino ino = 0;
    std::string content;
  };
  std::vector<File> files(kFiles);
  for (int i = 0; i < kFiles; ++i) {
    files[i].name = "m" + std::to_string(i);
    files[i].content = pattern(rnd(kMaxSize), 1000 + i);
    files[i].ino = write_file(*rig.fs, kRootIno, files[i].name, "");
    write_chunked(*rig.fs, files[i].ino, 0, files[i].content);
  }
  std::deque<std::string> recent;
  auto note = [&](std::string s) {
    recent.push_back(std::move(s));
    if (recent.size() > 12) recent.pop_front();
  };
  auto history = [&] {
    std::string h;
    for (const auto& r : recent) h += "  " + r + "\n";
    return h;
  };
  auto compare_all = [&](int step) {
    for (const File& f : files) {
      if (!f.ino) continue;
      const std::string d = content_diff(*rig.fs, f.ino, f.content);
      if (!d.empty()) FAIL("seed " << seed << " step " << step << ": " << f.name << ": " << d << "\nlast operations:\n" << history());
    }
    const FsStats s = rig.fs->stats();
    if (s.saved_blocks > s.allocated_blocks || s.shared_blocks > s.allocated_blocks - s.saved_blocks)
      FAIL("step " << step << ": inconsistent sharing numbers\n" << history());
  };
  // A random offset in `f` or a little past its end; aligned when asked.
  auto offset_in = [&](const File& f, bool aligned) {
    std::uint64_t off = rnd(std::min<std::uint64_t>(f.content.size() + 16 * kB, kMaxSize));
    return aligned ? off / kB * kB : off;
  };

  std::uint64_t clones = 0, chunk_copies = 0, shared_seen = 0;
  for (int step = 1; step <= steps; ++step) {
    FileSystem& fs = *rig.fs;
    File& f = files[rnd(kFiles)];
    File& g = files[rnd(kFiles)];
    if (!f.ino) {  // recreate
      f.ino = create_empty(fs, kRootIno, f.name);
      f.content.clear();
      note(fmt::format("create {}", f.name));
      if (g.ino && &g != &f && rnd(2)) {
        const std::size_t len = g.content.size();
        REQUIRE(cfr(fs, g.ino, 0, f.ino, 0, len) == static_cast<ssize_t>(len));
        f.content = g.content;
        note(fmt::format("clone whole {} -> {} ({} bytes)", g.name, f.name, len));
      }
      compare_all(step);
      continue;
    }
    const std::uint64_t op = rnd(100);
    if (op < 20) {  // small write anywhere
      const std::uint64_t off = offset_in(f, false);
      const std::size_t len = 1 + rnd(rnd(2) ? 3 * kB : 64 * kB);
      const std::string d = pattern(len, rng());
      note(fmt::format("write {} at {} +{}", f.name, off, len));
      write_bytes(fs, f.ino, off, d);
      model_write(f.content, off, d);
    } else if (op < 27) {  // a fresh 1 MiB chunk
      const std::uint64_t off = rnd(3) * kMiB;
      const std::string d = pattern(kMiB, rng());
      note(fmt::format("chunk write {} at {}", f.name, off));
      write_bytes(fs, f.ino, off, d);
      model_write(f.content, off, d);
    } else if (op < 37) {  // a chunk copied from another file: shared if that was written as a chunk
      if (!g.ino || g.content.size() < kMiB) continue;
      const std::uint64_t src = rnd(g.content.size() / kMiB) * kMiB;
      const std::uint64_t off = rnd(3) * kMiB;
      const std::string d = g.content.substr(src, kMiB);
      note(fmt::format("chunk copy {}@{} -> {} at {}", g.name, src, f.name, off));
      const std::uint64_t saved0 = fs.stats().saved_blocks;
      write_bytes(fs, f.ino, off, d);
      model_write(f.content, off, d);
      ++chunk_copies;
      if (fs.stats().saved_blocks > saved0) ++shared_seen;
    } else if (op < 52) {  // clone, block aligned
      if (!g.ino) continue;
      const std::uint64_t off_in = offset_in(g, rnd(4) != 0);
      const std::size_t len = rnd(4) == 0 ? g.content.size() : 1 + rnd(kMiB + kB);
      std::uint64_t off_out;
      if (&f == &g)  // disjoint from the source range, clamped or not
        off_out = ((off_in + std::max<std::uint64_t>(len, g.content.size())) / kB + 1) * kB + off_in % kB;
      else
        off_out = offset_in(f, true) + off_in % kB;
      const std::uint64_t copied = off_in < g.content.size() ? std::min<std::uint64_t>(len, g.content.size() - off_in) : 0;
      if (off_out + copied > kCapSize) continue;
      note(fmt::format("clone {}@{} -> {}@{} +{}", g.name, off_in, f.name, off_out, len));
      const std::size_t want = model_copy(g.content, off_in, f.content, off_out, len);
      INFO(history());
      REQUIRE(cfr(fs, g.ino, off_in, f.ino, off_out, len) == static_cast<ssize_t>(want));
      ++clones;
    } else if (op < 58) {  // copy_file_range at unrelated offsets
      if (!g.ino || &f == &g) continue;
      const std::uint64_t off_in = offset_in(g, false), off_out = offset_in(f, false);
      const std::size_t len = 1 + rnd(300 * kB);
      if (off_out + len > kCapSize) continue;
      note(fmt::format("copy {}@{} -> {}@{} +{}", g.name, off_in, f.name, off_out, len));
      const std::size_t want = model_copy(g.content, off_in, f.content, off_out, len);
      INFO(history());
      REQUIRE(cfr(fs, g.ino, off_in, f.ino, off_out, len) == static_cast<ssize_t>(want));
    } else if (op < 60) {  // overlapping ranges of one file: refused, nothing changes
      if (f.content.size() < 2 * kB) continue;
      const std::uint64_t off_in = rnd(f.content.size() - kB);
      const std::uint64_t len = std::min<std::uint64_t>(1 + rnd(64 * kB), f.content.size() - off_in);
      const std::uint64_t off_out = off_in + rnd(len);
      note(fmt::format("overlapping clone {}@{} -> @{} +{}", f.name, off_in, off_out, len));
      REQUIRE(cfr(fs, f.ino, off_in, f.ino, off_out, len) == -EINVAL);
    } else if (op < 72) {  // truncate
      const std::uint64_t size = rnd(3) == 0 ? rnd(kMaxSize) : rnd(f.content.size() + 1);
      note(fmt::format("truncate {} to {}", f.name, size));
      truncate_to(fs, f.ino, size);
      f.content.resize(size, '\0');
    } else if (op < 84) {  // punch
      const std::uint64_t off = offset_in(f, rnd(2) == 0);
      const std::uint64_t len = 1 + rnd(rnd(2) ? 8 * kB : kMiB);
      note(fmt::format("punch {} at {} +{}", f.name, off, len));
      punch(fs, f.ino, off, len);
      model_punch(f.content, off, len);
    } else if (op < 87) {  // unlink (recreated when picked next)
      note(fmt::format("unlink {}", f.name));
      REQUIRE(fs.unlink(kRootIno, f.name) == 0);
      f.ino = 0;
      f.content.clear();
    } else if (op < 90) {  // rename another file over this one
      if (!g.ino || &f == &g) continue;
      note(fmt::format("rename {} over {}", g.name, f.name));
      REQUIRE(fs.rename(kRootIno, g.name, kRootIno, f.name, 0, kRoot) == 0);
      f.ino = g.ino;
      f.content = std::move(g.content);
      g.ino = 0;
      g.content.clear();
    } else if (op < 92) {
      note("syncfs");
      REQUIRE(fs.syncfs() == 0);
    } else if (op < 94) {  // preallocate: holes become unwritten extents
      const std::uint64_t off = offset_in(f, false);
      const std::uint64_t len = 1 + rnd(256 * kB);
      const bool keep = rnd(2);
      if (!keep && off + len > kCapSize) continue;
      note(fmt::format("fallocate{} {} at {} +{}", keep ? " keep_size" : "", f.name, off, len));
      REQUIRE(fs.fallocate(f.ino, keep ? FALLOC_FL_KEEP_SIZE : 0, off, len) == 0);
      if (!keep && f.content.size() < off + len) f.content.resize(off + len, '\0');
    } else {  // overwrite a cloned region of the file block by block
      if (f.content.size() < kB) continue;
      const std::uint64_t first = rnd(f.content.size() / kB);
      const std::uint64_t n = 1 + rnd(16);
      note(fmt::format("block overwrites {} from block {} x{}", f.name, first, n));
      for (std::uint64_t i = 0; i < n; ++i) {
        const std::string d = pattern(kB, rng());
        write_bytes(fs, f.ino, (first + i) * kB, d);
        model_write(f.content, (first + i) * kB, d);
      }
    }
    compare_all(step);
    if (step % kReopenEvery == 0) {
      INFO("reopen after step " << step << "\n" << history());
      rig.reopen();
      compare_all(step);
    }
  }
  WARN("sharing model: " << steps << " steps, " << clones << " clones, " << chunk_copies << " chunk copies ("
                         << shared_seen << " shared), saved blocks at the end " << rig.fs->stats().saved_blocks);
  CHECK(clones > static_cast<std::uint64_t>(steps) / 10);

  // Everything deleted: every block comes back.
  for (File& f : files)
    if (f.ino) REQUIRE(rig.fs->unlink(kRootIno, f.name) == 0);
  REQUIRE(rig.fs->syncfs() == 0);
  REQUIRE(rig.fs->checkpoint() == 0);
  const FsStats end = synced(*rig.fs);
  CHECK(end.allocated_blocks == 0);
  CHECK(end.saved_blocks == 0);
  CHECK(end.shared_blocks == 0);
  CHECK(end.free_blocks == fresh_free);
  const FsckReport r = rig.reopen();
  CHECK(r.file_blocks == 0);
  CHECK(synced(*rig.fs).free_blocks == fresh_free);
}

}  // namespace
}  // namespace dhfs

namespace dhfs::sharing_test {
namespace {

// The kernel writes a file back in 1 MiB requests that dhfs serves side by
// side (write_large_in_stripes). Pieces written in shuffled order by several
// threads must land whole: one piece stores the same bytes as another (its
// chunks are shared on the exclusive path), one ends inside a block (the
// next piece past it must zero the rest of that block, also exclusively).
TEST_CASE("sharing: a file written back out of order by several threads", "[sharing][threads]") {
  Rig rig(512 * kMiB, FsOptions{});
  FileSystem& fs = *rig.fs;
  const Ino f = create_empty(fs, kRootIno, "f");
  constexpr int kPieces = 48, kThreads = 4, kDuplicate = 7, kDuplicated = 3, kShort = 20;
  constexpr std::size_t kShortBy = 1234;
  std::vector<std::string> pieces(kPieces);
  for (int i = 0; i < kPieces; ++i) pieces[i] = pattern(kMiB, 900 + static_cast<std::uint64_t>(i));
  pieces[kDuplicate] = pieces[kDuplicated];
  pieces[kShort].resize(kMiB - kShortBy);
  std::string expect;
  for (int i = 0; i < kPieces; ++i) expect += pieces[i] + (i == kShort ? std::string(kShortBy, '\0') : "");
  // The original of the duplicate first, so that the duplicate finds it.
  REQUIRE(fs.open(f, O_RDWR) == 0);
  write_bytes(fs, f, kDuplicated * kMiB, pieces[kDuplicated]);
  std::vector<int> order;
  for (int i = 0; i < kPieces; ++i)
    if (i != kDuplicated) order.push_back(i);
  std::shuffle(order.begin(), order.end(), std::mt19937(77));

  std::atomic<int> next{0};
  std::atomic<bool> done{false};
  std::vector<std::string> errors(kThreads + 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int k; (k = next.fetch_add(1)) < static_cast<int>(order.size());) {
        const int i = order[k];
        const ssize_t n = fs.write(f, static_cast<std::uint64_t>(i) * kMiB, as_bytes(pieces[i]));
        if (n != static_cast<ssize_t>(pieces[i].size()) && errors[t].empty())
          errors[t] = fmt::format("piece {}: write returned {}", i, n);
      }
    });
  threads.emplace_back([&] {  // every piece a reader sees is all there or not at all
    AlignedBuffer scratch;
    std::mt19937 rng(5);
    while (!done.load()) {
      const int i = static_cast<int>(rng() % kPieces);
      std::span<const std::byte> got;
      if (fs.read(f, static_cast<std::uint64_t>(i) * kMiB, pieces[i].size(), scratch, &got) != 0) {
        errors[kThreads] = "read failed";
        return;
      }
      const std::string seen(reinterpret_cast<const char*>(got.data()), got.size());
      if (seen.size() == pieces[i].size() && seen != pieces[i] && seen != std::string(seen.size(), '\0') &&
          errors[kThreads].empty())
        errors[kThreads] = fmt::format("piece {} seen half written", i);
    }
  });
  for (int t = 0; t < kThreads; ++t) threads[t].join();
  done = true;
  threads.back().join();
  fs.release(f);
  for (const auto& e : errors) CHECK(e == "");
  CHECK(getattr_of(fs, f).size == expect.size());
  CHECK(test::read_file(fs, f) == expect);
  CHECK(synced(fs).shared_blocks == kMiB / kB);  // the blocks of the duplicate and its original

  rig.reopen();
  CHECK(test::read_file(*rig.fs, f) == expect);
}

}  // namespace
}  // namespace dhfs::sharing_test
