// Container regions in the filesystem core (no FUSE): which directories
// become region roots, where the files below them allocate, growth, the end
// of a region, soft reservations under pressure, persistence of regions and
// of the region settings, and where copy-on-write puts the writer's blocks.
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fmt/format.h>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fs/filesystem.h"
#include "fs/fsck.h"
#include "tests/unit/test_support.h"

namespace dhfs {
namespace {

using test::as_bytes;
using test::getattr_of;
using test::kRoot;
using test::lookup_ino;
using test::pattern;
using test::read_file;
using test::resolve;
using test::write_file;

constexpr std::uint64_t kB = kBlockSize;
constexpr std::uint64_t kMiB = 1ULL << 20;

// Creates every missing directory of `path`; returns the last one.
Ino mkdir_p(FileSystem& fs, std::string_view path) {
  Ino cur = kRootIno;
  while (!path.empty()) {
    const auto slash = path.find('/');
    const std::string part(path.substr(0, slash));
    int err = 0;
    Ino next = lookup_ino(fs, cur, part, &err);
    if (!next) {
      Attr a;
      INFO("mkdir " << part);
      REQUIRE(fs.mkdir(cur, part, 0755, kRoot, &a) == 0);
      fs.forget(a.ino, 1);
      next = a.ino;
    }
    cur = next;
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
  }
  return cur;
}

// Writes `content` into a new file `name` of `dir`, in 1 MiB writes.
Ino write_big(FileSystem& fs, Ino dir, std::string_view name, std::string_view content) {
  const Ino ino = write_file(fs, dir, name, "");
  for (std::uint64_t off = 0; off < content.size(); off += kMiB) {
    const std::string_view piece = content.substr(off, kMiB);
    REQUIRE(fs.write(ino, off, as_bytes(piece)) == static_cast<ssize_t>(piece.size()));
  }
  return ino;
}

// Where the file's data lies once everything written is on the device.
FragReport frag_of(FileSystem& fs, Ino ino) {
  REQUIRE(fs.syncfs() == 0);
  FragReport f;
  REQUIRE(fs.frag_report(ino, &f) == 0);
  return f;
}

// The region report whose root path is `path`, or nullopt.
std::optional<RegionReport> region_at(FileSystem& fs, std::string_view path) {
  REQUIRE(fs.syncfs() == 0);
  for (const RegionReport& r : fs.region_reports())
    if (r.root_path == path) return r;
  return std::nullopt;
}

std::vector<std::string> region_paths(FileSystem& fs) {
  std::vector<std::string> out;
  for (const RegionReport& r : fs.region_reports()) out.push_back(r.root_path);
  std::sort(out.begin(), out.end());
  return out;
}

// The file lies wholly inside region `id`.
void require_in_region(FileSystem& fs, Ino ino, std::uint32_t id) {
  const FragReport f = frag_of(fs, ino);
  INFO("inode " << ino << ": region " << f.region << ", " << f.in_region_blocks << " of " << f.mapped_blocks
                << " blocks in it");
  CHECK(f.region == id);
  CHECK(f.mapped_blocks > 0);
  CHECK(f.in_region_blocks == f.mapped_blocks);
}

void check_clean(const std::shared_ptr<MemDevice>& medium) {
  FsckReport r = Checker(*medium, FsckOptions{false}).run();
  std::string problems;
  for (const auto& p : r.problems) problems += p + "\n";
  INFO("fsck problems:\n" << problems << r.reason);
  REQUIRE(r.clean());
}

struct Rig {
  std::shared_ptr<MemDevice> medium;
  std::unique_ptr<FileSystem> fs;

  explicit Rig(std::uint64_t bytes = 512 * kMiB, const FsOptions& opts = {}) { fs = test::make_fs(&medium, bytes, opts); }
  void reopen(const FsOptions& opts = {}) {
    REQUIRE(fs->shutdown() == 0);
    fs.reset();
    check_clean(medium);
    fs = test::open_fs(medium, opts);
  }
};

// ------------------------------------------------------- automatic roots

TEST_CASE("regions_fs: docker, containerd and vfs layer directories become region roots", "[regions_fs]") {
  Rig rig;
  FileSystem& fs = *rig.fs;
  const Ino layer = mkdir_p(fs, "docker/overlay2/3f1c9a");
  const Ino bin = mkdir_p(fs, "docker/overlay2/3f1c9a/diff/usr/local/bin");
  const Ino work = mkdir_p(fs, "docker/overlay2/3f1c9a/work/work");
  const Ino l = mkdir_p(fs, "docker/overlay2/l");
  // docker's image metadata lives in image/overlay2/*: no regions.
  const Ino layerdb = mkdir_p(fs, "docker/image/overlay2/layerdb/sha256/5e6f");
  mkdir_p(fs, "docker/image/overlay2/imagedb/content/sha256");
  mkdir_p(fs, "docker/image/overlay2/distribution");
  mkdir_p(fs, "docker/vfs/dir/77aa");
  mkdir_p(fs, "containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/12/fs");

  CHECK(region_paths(fs) == std::vector<std::string>{
                                "/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/12",
                                "/docker/overlay2/3f1c9a", "/docker/vfs/dir/77aa"});
  CHECK(fs.stats().regions == 3);
  const auto r = region_at(fs, "/docker/overlay2/3f1c9a");
  REQUIRE(r);
  CHECK(r->root == layer);
  CHECK(r->reserved_blocks == kDefaultRegionBytes / kB);
  CHECK(r->used_blocks == 0);

  // Files anywhere below the root allocate from its region.
  const Ino tool = write_big(fs, bin, "tool", pattern(3 * kMiB + 100, 1));
  const Ino tmp = write_big(fs, work, "tmp", pattern(kMiB, 2));
  const Ino top = write_file(fs, layer, "link", "L3F1C9A");
  require_in_region(fs, tool, r->id);
  require_in_region(fs, tmp, r->id);
  require_in_region(fs, top, r->id);
  RegionReport shown;
  REQUIRE(fs.syncfs() == 0);
  REQUIRE(fs.region_report(tool, &shown) == 0);
  CHECK(shown.id == r->id);
  CHECK(shown.root_path == "/docker/overlay2/3f1c9a");
  CHECK(shown.used_blocks == (3 * kMiB + 100 + kB - 1) / kB + kMiB / kB + 1);

  // overlay2/l holds docker's short links: no region.
  const Ino lnk = write_file(fs, l, "ABCDEF", "x");
  CHECK(frag_of(fs, lnk).region == 0);
  CHECK(frag_of(fs, lnk).in_region_blocks == 0);
  CHECK(fs.region_report(l, &shown) == -ENODATA);
  const Ino diff_id = write_file(fs, layerdb, "diff", "sha256:5e6f");
  CHECK(frag_of(fs, diff_id).region == 0);
  CHECK(fs.region_report(layerdb, &shown) == -ENODATA);
  CHECK(fs.region_report(kRootIno, &shown) == -ENODATA);

  const Ino vfs_file = write_big(fs, resolve(fs, "docker/vfs/dir/77aa"), "f", pattern(kMiB, 3));
  require_in_region(fs, vfs_file, region_at(fs, "/docker/vfs/dir/77aa")->id);
  const Ino snap_file = write_big(fs, resolve(fs, "containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/12/fs"),
                                  "f", pattern(kMiB, 4));
  require_in_region(fs, snap_file,
                    region_at(fs, "/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/12")->id);
  // Regions do not overlap.
  std::vector<Extent> all;
  for (const RegionInfo& info : fs.allocator().regions())
    all.insert(all.end(), info.reserved.begin(), info.reserved.end());
  std::sort(all.begin(), all.end(), [](const Extent& a, const Extent& b) { return a.start < b.start; });
  for (std::size_t i = 1; i < all.size(); ++i) CHECK(all[i - 1].end() <= all[i].start);
  rig.reopen();
}

TEST_CASE("regions_fs: create_region moves everything below the directory into the new region", "[regions_fs]") {
  Rig rig;
  FileSystem& fs = *rig.fs;
  const Ino data = mkdir_p(fs, "data");
  const Ino deeper = mkdir_p(fs, "data/sub/deeper");
  const Ino f1 = write_big(fs, data, "f1", pattern(kMiB, 5));
  const Ino f2 = write_big(fs, deeper, "f2", pattern(kMiB, 6));
  const Ino nested = mkdir_p(fs, "data/overlay2/inner");  // a root of its own already
  const Ino f3 = write_big(fs, nested, "f3", pattern(kMiB, 7));
  const std::uint32_t inner = frag_of(fs, f3).region;
  REQUIRE(inner != 0);
  CHECK(frag_of(fs, f1).region == 0);

  REQUIRE(fs.create_region(data, 32 * kMiB) == 0);
  const auto r = region_at(fs, "/data");
  REQUIRE(r);
  CHECK(r->reserved_blocks == 32 * kMiB / kB);
  CHECK(frag_of(fs, f1).region == r->id);
  CHECK(frag_of(fs, f2).region == r->id);
  CHECK(frag_of(fs, f3).region == inner);  // the nested root keeps its region
  RegionReport shown;
  REQUIRE(fs.region_report(deeper, &shown) == 0);
  CHECK(shown.id == r->id);

  // New data of old files and new files land in the region.
  const Ino f4 = write_big(fs, deeper, "f4", pattern(2 * kMiB, 8));
  require_in_region(fs, f4, r->id);
  REQUIRE(fs.write(f1, kMiB, as_bytes(pattern(kMiB, 9))) == static_cast<ssize_t>(kMiB));
  CHECK(frag_of(fs, f1).in_region_blocks == kMiB / kB);
  const Ino sub2 = mkdir_p(fs, "data/sub/new");
  require_in_region(fs, write_big(fs, sub2, "f5", pattern(kMiB, 10)), r->id);

  CHECK(fs.create_region(data, 0) == -EEXIST);
  CHECK(fs.create_region(f1, 0) == -ENOTDIR);
  CHECK(fs.create_region(999999, 0) == -ENOENT);
  // Size 0: the default size.
  const Ino other = mkdir_p(fs, "other");
  REQUIRE(fs.create_region(other, 0) == 0);
  CHECK(region_at(fs, "/other")->reserved_blocks == kDefaultRegionBytes / kB);
  rig.reopen();
  CHECK(frag_of(*rig.fs, f1).region == r->id);
  CHECK(frag_of(*rig.fs, f2).region == r->id);
}

TEST_CASE("regions_fs: a full region grows and its files stay inside", "[regions_fs]") {
  SECTION("explicit small region") {
    Rig rig;
    FileSystem& fs = *rig.fs;
    const Ino dir = mkdir_p(fs, "small");
    REQUIRE(fs.create_region(dir, kMiB) == 0);
    const auto r0 = region_at(fs, "/small");
    REQUIRE(r0);
    CHECK(r0->reserved_blocks == kMiB / kB);
    const std::string content = pattern(6 * kMiB, 11);
    const Ino f = write_big(fs, dir, "f", content);
    const auto r1 = region_at(fs, "/small");
    CHECK(r1->reserved_blocks >= 6 * kMiB / kB);
    CHECK(r1->used_blocks == 6 * kMiB / kB);
    require_in_region(fs, f, r0->id);
    CHECK(frag_of(fs, f).extents <= 2);
    CHECK(test::read_file(fs, f) == content);
  }
  SECTION("small automatic regions (region_size option) grow adjacent first") {
    FsOptions o;
    o.region_bytes = kMiB;
    Rig rig(512 * kMiB, o);
    FileSystem& fs = *rig.fs;
    const Ino a = mkdir_p(fs, "overlay2/a/diff");
    const Ino b = mkdir_p(fs, "overlay2/b/diff");
    CHECK(region_at(fs, "/overlay2/a")->reserved_blocks == kMiB / kB);
    const Ino fa = write_big(fs, a, "f", pattern(5 * kMiB, 12));
    const Ino fb = write_big(fs, b, "f", pattern(3 * kMiB, 13));
    const auto ra = region_at(fs, "/overlay2/a");
    const auto rb = region_at(fs, "/overlay2/b");
    CHECK(ra->reserved_blocks >= 5 * kMiB / kB);
    CHECK(rb->reserved_blocks >= 3 * kMiB / kB);
    require_in_region(fs, fa, ra->id);
    require_in_region(fs, fb, rb->id);
    CHECK(frag_of(fs, fa).extents <= 3);
    CHECK(fs.allocator().consistent());
    rig.reopen();
    require_in_region(*rig.fs, fa, ra->id);
  }
}

// ------------------------------------------------------- end of a region

TEST_CASE("regions_fs: removing the root ends the region and returns its space", "[regions_fs]") {
  Rig rig;
  FileSystem& fs = *rig.fs;
  mkdir_p(fs, "overlay2");
  REQUIRE(fs.syncfs() == 0);
  const FsStats s0 = fs.stats();
  const Ino diff = mkdir_p(fs, "overlay2/c1/diff");
  const auto r = region_at(fs, "/overlay2/c1");
  REQUIRE(r);
  const std::uint32_t id = r->id;
  REQUIRE(fs.allocator().region(id));
  CHECK(fs.stats().regions == 1);
  const std::string content = pattern(4 * kMiB, 14);
  const Ino f = write_big(fs, diff, "f", content);
  const Ino g = write_big(fs, diff, "kept", pattern(kMiB, 15));
  REQUIRE(fs.syncfs() == 0);
  CHECK(fs.stats().available_blocks == s0.available_blocks - 5 * kMiB / kB);

  SECTION("rm -rf") {
    REQUIRE(fs.unlink(diff, "f") == 0);
    REQUIRE(fs.unlink(diff, "kept") == 0);
    REQUIRE(fs.rmdir(resolve(fs, "overlay2/c1"), "diff") == 0);
    CHECK(fs.rmdir(resolve(fs, "overlay2"), "c1") == 0);
  }
  SECTION("a file moved out survives the region; its blocks come back when it goes") {
    const Ino top = mkdir_p(fs, "saved");
    REQUIRE(fs.rename(diff, "f", top, "f", 0, kRoot) == 0);
    REQUIRE(fs.unlink(diff, "kept") == 0);
    REQUIRE(fs.rmdir(resolve(fs, "overlay2/c1"), "diff") == 0);
    REQUIRE(fs.rmdir(resolve(fs, "overlay2"), "c1") == 0);
    CHECK(!fs.allocator().region(id));
    CHECK(read_file(fs, f) == content);
    // It writes on, from global space now.
    REQUIRE(fs.write(f, content.size(), as_bytes(pattern(kMiB, 16))) == static_cast<ssize_t>(kMiB));
    rig.reopen();
    CHECK(read_file(*rig.fs, f).substr(0, content.size()) == content);
    REQUIRE(rig.fs->unlink(resolve(*rig.fs, "saved"), "f") == 0);
  }
  FileSystem& now = *rig.fs;
  (void)g;
  REQUIRE(now.syncfs() == 0);
  CHECK(!now.allocator().region(id));
  CHECK(now.region_reports().empty());
  CHECK(now.stats().regions == 0);
  CHECK(now.stats().available_blocks == s0.available_blocks);
  CHECK(now.stats().free_blocks == s0.free_blocks);
  CHECK(now.allocator().consistent());
  rig.reopen();
  CHECK(rig.fs->region_reports().empty());
  CHECK(rig.fs->allocator().regions().empty());
}

// ---------------------------------------------------- soft reservations

TEST_CASE("regions_fs: reservations are soft: no ENOSPC while any region has free space", "[regions_fs]") {
  Rig rig(128 * kMiB);
  FileSystem& fs = *rig.fs;
  const Ino a = mkdir_p(fs, "overlay2/a/diff");
  mkdir_p(fs, "overlay2/b/diff");
  mkdir_p(fs, "overlay2/c/diff");
  const std::string in_a = pattern(8 * kMiB, 17);
  const Ino fa = write_big(fs, a, "f", in_a);
  REQUIRE(fs.syncfs() == 0);
  std::uint64_t reserved = 0;
  for (const RegionReport& r : fs.region_reports()) reserved += r.reserved_blocks - r.used_blocks;
  const FsStats s0 = fs.stats();
  INFO("total " << s0.total_blocks << ", available " << s0.available_blocks << ", unused reservations " << reserved);
  REQUIRE(reserved > s0.available_blocks / 2);  // most free space is reserved

  // Outside every region, 1 MiB writes and then 4 KiB writes until ENOSPC.
  const Ino big = write_file(fs, kRootIno, "big", "");
  std::uint64_t off = 0;
  int rc = 0;
  for (;;) {
    ssize_t n = fs.write(big, off, as_bytes(pattern(kMiB, off)));
    if (n < 0) {
      rc = static_cast<int>(n);
      break;
    }
    REQUIRE(n == static_cast<ssize_t>(kMiB));
    off += kMiB;
  }
  CHECK(rc == -ENOSPC);
  std::uint64_t small_writes = 0;
  for (;;) {
    ssize_t n = fs.write(big, off, as_bytes(pattern(kB, off)));
    if (n < 0) {
      rc = static_cast<int>(n);
      break;
    }
    off += kB;
    ++small_writes;
  }
  CHECK(rc == -ENOSPC);
  REQUIRE(fs.syncfs() == 0);
  const FsStats s1 = fs.stats();
  INFO("wrote " << off << " bytes outside regions (" << small_writes << " 4 KiB writes at the end); available now "
                << s1.available_blocks << ", free " << s1.free_blocks);
  CHECK(s1.available_blocks == 0);
  CHECK(off / kB + 4 >= s0.available_blocks);
  std::uint64_t reclaimed = 0;
  for (const RegionReport& r : fs.region_reports()) reclaimed += r.reclaimed_blocks;
  CHECK(reclaimed > 0);
  CHECK(read_file(fs, fa) == in_a);
  CHECK(fs.allocator().consistent());

  // A region wants space too now: none left.
  const Ino b = resolve(fs, "overlay2/b/diff");
  const Ino fb = write_file(fs, b, "f", "");
  CHECK(fs.write(fb, 0, as_bytes(pattern(kMiB, 18))) == -ENOSPC);
  // Space freed anywhere serves the regions again.
  REQUIRE(fs.unlink(kRootIno, "big") == 0);
  REQUIRE(fs.syncfs() == 0);
  const std::string in_b = pattern(16 * kMiB, 19);
  for (std::uint64_t o = 0; o < in_b.size(); o += kMiB)
    REQUIRE(fs.write(fb, o, as_bytes(std::string_view(in_b).substr(o, kMiB))) == static_cast<ssize_t>(kMiB));
  require_in_region(fs, fb, region_at(fs, "/overlay2/b")->id);
  CHECK(read_file(fs, fb) == in_b);
  rig.reopen();
  CHECK(read_file(*rig.fs, fa) == in_a);
  CHECK(read_file(*rig.fs, fb) == in_b);
}

// ------------------------------------------------------------ persistence

TEST_CASE("regions_fs: regions survive a remount unchanged", "[regions_fs]") {
  Rig rig;
  const Ino a = mkdir_p(*rig.fs, "overlay2/a/diff");
  const Ino b = mkdir_p(*rig.fs, "overlay2/b/diff");
  const Ino custom = mkdir_p(*rig.fs, "custom/place");
  REQUIRE(rig.fs->create_region(custom, 16 * kMiB) == 0);
  const Ino fa = write_big(*rig.fs, a, "f", pattern(70 * kMiB, 20));  // makes a grow
  const Ino fb = write_big(*rig.fs, b, "f", pattern(kMiB, 21));
  const Ino fc = write_big(*rig.fs, custom, "f", pattern(kMiB, 22));

  auto slices = [](FileSystem& fs) {
    std::map<RegionId, std::vector<Extent>> out;
    for (const RegionInfo& i : fs.allocator().regions()) out[i.id] = i.reserved;
    return out;
  };
  auto reports = [](FileSystem& fs) {
    std::map<std::uint32_t, std::string> out;
    for (const RegionReport& r : fs.region_reports())
      out[r.id] = fmt::format("{} root {} reserved {} used {} slices {}", r.root_path, r.root, r.reserved_blocks,
                              r.used_blocks, r.slices);
    return out;
  };
  const auto slices0 = slices(*rig.fs);
  const auto reports0 = reports(*rig.fs);
  REQUIRE(reports0.size() == 3);
  const FragReport frag_a = frag_of(*rig.fs, fa);
  CHECK(frag_a.in_region_blocks == frag_a.mapped_blocks);

  rig.reopen();
  CHECK(slices(*rig.fs) == slices0);
  CHECK(reports(*rig.fs) == reports0);
  const FragReport frag_a2 = frag_of(*rig.fs, fa);
  CHECK(frag_a2.region == frag_a.region);
  CHECK(frag_a2.in_region_blocks == frag_a.in_region_blocks);
  require_in_region(*rig.fs, fb, frag_of(*rig.fs, fb).region);
  require_in_region(*rig.fs, fc, region_at(*rig.fs, "/custom/place")->id);
  // Writes after the remount still go to the regions.
  const Ino fb2 = write_big(*rig.fs, b, "g", pattern(2 * kMiB, 23));
  require_in_region(*rig.fs, fb2, region_at(*rig.fs, "/overlay2/b")->id);

  // And after a crash (journal replay, no checkpoint since).
  const Ino d = mkdir_p(*rig.fs, "overlay2/d/diff");
  const Ino fd = write_big(*rig.fs, d, "f", pattern(kMiB, 24));
  REQUIRE(rig.fs->syncfs() == 0);
  const auto slices1 = slices(*rig.fs);
  const auto reports1 = reports(*rig.fs);
  auto copy = test::crash_copy(rig.medium);
  check_clean(copy);
  auto again = test::open_fs(copy);
  CHECK(slices(*again) == slices1);
  CHECK(reports(*again) == reports1);
  require_in_region(*again, fd, region_at(*again, "/overlay2/d")->id);
}

TEST_CASE("regions_fs: region_patterns and region_size persist across a remount without them", "[regions_fs]") {
  FsOptions o;
  o.region_patterns = "layers/*:!layers/tmp";
  o.region_bytes = 8 * kMiB;
  Rig rig(512 * kMiB, o);
  mkdir_p(*rig.fs, "layers/x");
  mkdir_p(*rig.fs, "layers/tmp");
  mkdir_p(*rig.fs, "overlay2/y");
  CHECK(region_paths(*rig.fs) == std::vector<std::string>{"/layers/x"});
  CHECK(region_at(*rig.fs, "/layers/x")->reserved_blocks == 8 * kMiB / kB);

  rig.reopen(FsOptions{});
  mkdir_p(*rig.fs, "layers/z");
  mkdir_p(*rig.fs, "overlay2/w");
  CHECK(region_paths(*rig.fs) == std::vector<std::string>{"/layers/x", "/layers/z"});
  CHECK(region_at(*rig.fs, "/layers/z")->reserved_blocks == 8 * kMiB / kB);

  // A later mount's options replace them (and persist in turn); an empty
  // list turns automatic regions off.
  FsOptions off;
  off.region_patterns = "";
  rig.reopen(off);
  mkdir_p(*rig.fs, "layers/q");
  rig.reopen(FsOptions{});
  mkdir_p(*rig.fs, "layers/r");
  CHECK(region_paths(*rig.fs) == std::vector<std::string>{"/layers/x", "/layers/z"});
}

// ------------------------------------------------- copy-on-write placement

TEST_CASE("regions_fs: a write to a shared block lands in the writer's region", "[regions_fs]") {
  FsOptions o;
  o.cow_unit_bytes = kB;  // exactly the blocks written are copied
  Rig rig(512 * kMiB, o);
  FileSystem& fs = *rig.fs;
  const Ino src_dir = mkdir_p(fs, "overlay2/image/diff");
  const Ino dst_dir = mkdir_p(fs, "overlay2/container/diff");
  const std::string content = pattern(4 * kMiB, 25);
  const Ino src = write_big(fs, src_dir, "f", content);
  const Ino dst = write_file(fs, dst_dir, "f", "");
  REQUIRE(fs.copy_file_range(src, 0, dst, 0, content.size()) == static_cast<ssize_t>(content.size()));
  const std::uint32_t image = region_at(fs, "/overlay2/image")->id;
  const std::uint32_t container = region_at(fs, "/overlay2/container")->id;
  require_in_region(fs, src, image);
  CHECK(frag_of(fs, dst).region == container);
  CHECK(frag_of(fs, dst).in_region_blocks == 0);  // all its blocks are the image's

  std::string want = content;
  auto overwrite = [&](std::uint64_t lblk, std::uint64_t seed) {
    const std::string d = pattern(kB, seed);
    REQUIRE(fs.write(dst, lblk * kB, as_bytes(d)) == static_cast<ssize_t>(kB));
    std::copy(d.begin(), d.end(), want.begin() + static_cast<std::ptrdiff_t>(lblk * kB));
  };
  for (std::uint64_t l = 10; l < 20; ++l) overwrite(l, 100 + l);
  FragReport f = frag_of(fs, dst);
  CHECK(f.in_region_blocks == 10);
  CHECK(f.shared_blocks == content.size() / kB - 10);
  CHECK(region_at(fs, "/overlay2/container")->used_blocks == 10);
  CHECK(region_at(fs, "/overlay2/image")->used_blocks == content.size() / kB);
  require_in_region(fs, src, image);
  CHECK(read_file(fs, src) == content);
  CHECK(read_file(fs, dst) == want);

  // Modified parts stay in file order: a later part keeps room for the
  // blocks between, which then fill it exactly.
  for (std::uint64_t l = 100; l < 200; ++l) overwrite(l, 1000 + l);
  CHECK(frag_of(fs, dst).extents == 5);  // shared, own, shared, own, shared
  for (std::uint64_t l = 20; l < 100; ++l) overwrite(l, 2000 + l);
  f = frag_of(fs, dst);
  CHECK(f.extents == 3);  // shared, own [10, 200) in one piece, shared
  CHECK(f.in_region_blocks == 190);
  CHECK(read_file(fs, dst) == want);
  CHECK(read_file(fs, src) == content);
  rig.reopen(o);
  CHECK(read_file(*rig.fs, dst) == want);
  CHECK(read_file(*rig.fs, src) == content);
  CHECK(frag_of(*rig.fs, dst).in_region_blocks == 190);
}

}  // namespace
}  // namespace dhfs
