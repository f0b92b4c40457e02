// Helpers of the unit tests of shared extents (test_sharing.cc) and dedup
// (test_dedup.cc): whole-file checks against expected bytes, chunked
// writes, an in-memory model of file contents, and a filesystem rig that
// shuts down, runs fsck and reopens with exact space accounting.
#pragma once

#include <fcntl.h>
#include <linux/falloc.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <fmt/format.h>
#include <memory>
#include <string>
#include <string_view>

#include "fs/filesystem.h"
#include "fs/fsck.h"
#include "tests/unit/test_support.h"

namespace dhfs::sharing_test {

using test::as_bytes;
using test::write_file;

constexpr std::uint64_t kB = kBlockSize;
constexpr std::uint64_t kMiB = 1ULL << 20;

// ------------------------------------------------------------------ helpers

// "" if the file holds exactly `want`, else where it first differs.
inline std::string content_diff(FileSystem& fs, Ino ino, std::string_view want) {
  Attr a;
  if (int rc = fs.getattr(ino, &a); rc) return fmt::format("getattr: {}", std::strerror(-rc));
  if (a.size != want.size()) return fmt::format("size {} (want {})", a.size, want.size());
  static thread_local AlignedBuffer scratch;
  std::uint64_t off = 0;
  while (off < want.size()) {
    const std::size_t n = std::min<std::uint64_t>(want.size() - off, 4 * kMiB);
    std::span<const std::byte> got;
    if (int rc = fs.read(ino, off, n, scratch, &got); rc) return fmt::format("read at {}: {}", off, std::strerror(-rc));
    if (got.size() != n) return fmt::format("short read at {}: {} of {}", off, got.size(), n);
    if (std::memcmp(got.data(), want.data() + off, n) != 0) {
      std::size_t i = 0;
      while (static_cast<char>(got[i]) == want[off + i]) ++i;
      return fmt::format("byte {} is {:#04x}, want {:#04x}", off + i, static_cast<unsigned>(got[i]),
                         static_cast<unsigned>(static_cast<unsigned char>(want[off + i])));
    }
    off += n;
  }
  return "";
}

#define CHECK_CONTENT(fs, ino, want) CHECK(content_diff((fs), (ino), (want)) == "")
#define REQUIRE_CONTENT(fs, ino, want) REQUIRE(content_diff((fs), (ino), (want)) == "")

inline ssize_t cfr(FileSystem& fs, Ino in, std::uint64_t off_in, Ino out, std::uint64_t off_out, std::size_t len) {
  return fs.copy_file_range(in, off_in, out, off_out, len);
}

inline void write_bytes(FileSystem& fs, Ino ino, std::uint64_t off, std::string_view data) {
  INFO("write " << data.size() << " bytes at " << off << " into inode " << ino);
  REQUIRE(fs.write(ino, off, as_bytes(data)) == static_cast<ssize_t>(data.size()));
}

// Writes `data` in 1 MiB writes, as the kernel delivers a large write.
inline void write_chunked(FileSystem& fs, Ino ino, std::uint64_t off, std::string_view data) {
  for (std::uint64_t done = 0; done < data.size(); done += kMiB)
    write_bytes(fs, ino, off + done, data.substr(done, kMiB));
}

inline void truncate_to(FileSystem& fs, Ino ino, std::uint64_t size) {
  SetAttr sa;
  sa.valid = SetAttr::kSize;
  sa.size = size;
  Attr out;
  INFO("truncate inode " << ino << " to " << size);
  REQUIRE(fs.setattr(ino, sa, &out) == 0);
}

inline void punch(FileSystem& fs, Ino ino, std::uint64_t off, std::uint64_t len) {
  INFO("punch inode " << ino << " at " << off << " +" << len);
  REQUIRE(fs.fallocate(ino, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0);
}

inline Ino create_empty(FileSystem& fs, Ino parent, std::string_view name) { return write_file(fs, parent, name, ""); }

// A new file `name` in the root that shares the first `size` bytes of `src`
// (copy_file_range of the whole file, a clone).
inline Ino clone_whole(FileSystem& fs, Ino src, std::size_t size, std::string_view name = "b") {
  const Ino out = create_empty(fs, kRootIno, name);
  REQUIRE(cfr(fs, src, 0, out, 0, size) == static_cast<ssize_t>(size));
  return out;
}

// Where the file's data lies once everything written is on the device.
inline FragReport frag_of(FileSystem& fs, Ino ino) {
  REQUIRE(fs.syncfs() == 0);
  FragReport f;
  REQUIRE(fs.frag_report(ino, &f) == 0);
  return f;
}

// Stats once everything written so far is durable (and every block freed
// by it reusable).
inline FsStats synced(FileSystem& fs) {
  REQUIRE(fs.syncfs() == 0);
  return fs.stats();
}

// Blocks the device holds for file data, once everything is durable.
inline std::uint64_t physical_blocks(FileSystem& fs) {
  const FsStats s = synced(fs);
  return s.allocated_blocks - s.saved_blocks;
}

// Model helpers.
inline void model_write(std::string& c, std::uint64_t off, std::string_view data) {
  if (c.size() < off + data.size()) c.resize(off + data.size(), '\0');
  std::copy(data.begin(), data.end(), c.begin() + static_cast<std::ptrdiff_t>(off));
}
inline void model_punch(std::string& c, std::uint64_t off, std::uint64_t len) {
  if (off >= c.size()) return;
  std::fill(c.begin() + static_cast<std::ptrdiff_t>(off),
            c.begin() + static_cast<std::ptrdiff_t>(std::min<std::uint64_t>(c.size(), off + len)), '\0');
}
// What copy_file_range of `len` bytes does; returns the bytes copied.
inline std::size_t model_copy(const std::string& in, std::uint64_t off_in, std::string& out, std::uint64_t off_out,
                       std::size_t len) {
  if (off_in >= in.size()) return 0;
  const std::size_t n = std::min<std::uint64_t>(len, in.size() - off_in);
  const std::string piece = in.substr(off_in, n);  // `in` may be `out`
  model_write(out, off_out, piece);
  return n;
}

// Checks a closed medium: fsck clean (reference counts equal what the block
// maps say) and the space accounts exactly.
inline FsckReport check_image(const std::shared_ptr<MemDevice>& medium) {
  FsckReport r = Checker(*medium, FsckOptions{false}).run();
  std::string problems;
  for (const auto& p : r.problems) problems += p + "\n";
  INFO("fsck problems:\n" << problems << r.reason);
  REQUIRE(r.clean());
  REQUIRE(r.problems.empty());
  REQUIRE(r.blocks_used == r.file_blocks + r.checkpoint_blocks);
  REQUIRE(r.free_blocks == r.data_blocks - r.file_blocks - r.checkpoint_blocks);
  return r;
}

// A filesystem on a medium the test keeps, with shutdown + fsck + reopen.
struct Rig {
  std::shared_ptr<MemDevice> medium;
  std::unique_ptr<FileSystem> fs;
  FsOptions opts;

  // Copy-on-write copies exactly the blocks written (cow_unit 4 KiB), so
  // that the tests can count blocks, whatever the default unit is.
  static FsOptions exact_cow() {
    FsOptions o;
    o.cow_unit_bytes = kB;
    return o;
  }
  explicit Rig(std::uint64_t bytes = 256 * kMiB, FsOptions o = exact_cow()) : opts(std::move(o)) {
    fs = test::make_fs(&medium, bytes, opts);
  }

  // Shuts down, runs the Checker, reopens; then the allocator's free space
  // must be exactly what fsck derived from the block maps, and the sharing
  // numbers must be what they were before.
  FsckReport reopen() {
    const FsStats before = synced(*fs);
    REQUIRE(fs->shutdown() == 0);
    fs.reset();
    FsckReport r = check_image(medium);
    fs = test::open_fs(medium, opts);
    const FsStats after = synced(*fs);
    CHECK(after.total_blocks == r.data_blocks);
    CHECK(fs->allocator().free_blocks() + fs->allocator().pending_blocks() == r.free_blocks);
    CHECK(after.allocated_blocks - after.saved_blocks == r.file_blocks);
    CHECK(after.allocated_blocks == before.allocated_blocks);
    CHECK(after.saved_blocks == before.saved_blocks);
    CHECK(after.shared_blocks == before.shared_blocks);
    CHECK(after.logical_bytes == before.logical_bytes);
    CHECK(fs->allocator().consistent());
    return r;
  }
};

}  // namespace dhfs::sharing_test
