// Shared extents through the mount: cp (copy_file_range) clones a big file
// without copying it and the copies stay independent; a kernel overlayfs
// copy-up of a big lower file shares the lower file's extents instead of
// storing them again, and the upper file then lives on its own. Space is
// measured with `dhfsctl --json df`, placement with `dhfsctl --json frag`.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <random>
#include <set>

#include "dhfsctl_support.h"
#include "fixture.h"

namespace dhfs_test {
namespace {

constexpr std::uint64_t kMiB = 1ULL << 20;
constexpr std::uint64_t kBig = 256 * kMiB;

// Compares a file with `want` (read cold when caches were dropped).
#define CHECK_FILE(path, want) CHECK_BYTES(read_file(path), (want))

// How many of a file's pages the kernel holds in its page cache (mincore of
// a mapping, which faults nothing in).
std::size_t resident_pages(const std::string& path) {
  Fd fd = open_fd(path, O_RDONLY);
  const std::size_t size = static_cast<std::size_t>(fstat_of(fd).st_size);
  if (size == 0) return 0;
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  REQUIRE(map != MAP_FAILED);
  const long page = ::sysconf(_SC_PAGESIZE);
  std::vector<unsigned char> in_core((size + page - 1) / page);
  const int rc = ::mincore(map, size, in_core.data());
  ::munmap(map, size);
  REQUIRE(rc == 0);
  return static_cast<std::size_t>(std::count_if(in_core.begin(), in_core.end(), [](unsigned char c) { return c & 1; }));
}

}  // namespace

TEST_CASE("sharing: cp clones a 256 MiB file without copying and the copies are independent", "[sharing][dhfs]") {
  DHFS_ONLY_STRICT();
  MountedFs fs;
  mkdirs(fs, "overlay2/x/diff");
  const std::string dir = fs.path("overlay2/x/diff");
  const std::string base = random_bytes(kBig, 0xc10e);
  write_durable(dir + "/base", base);
  ctl_sync(fs);
  const Df d0 = df(fs);

  // No FICLONE on FUSE: a clone-only cp fails...
  RunResult always = run({"/usr/bin/cp", "--reflink=always", dir + "/base", dir + "/c0"});
  INFO("cp --reflink=always: " << always.output);
  CHECK(always.exit_code() != 0);
  if (exists(dir + "/c0")) SYS(::unlink((dir + "/c0").c_str()));
  // ...but cp --reflink=auto and plain cp use copy_file_range, which shares.
  RunResult r1 = run({"/usr/bin/cp", "--reflink=auto", dir + "/base", dir + "/c1"});
  INFO("cp --reflink=auto: " << r1.output);
  REQUIRE(r1.exit_code() == 0);
  const Df d1 = df(fs);
  CHECK(d1.physical - d0.physical < kMiB);
  CHECK(d1.saved - d0.saved == kBig);
  CHECK(d1.logical - d0.logical == kBig);
  RunResult r2 = run({"/usr/bin/cp", dir + "/base", dir + "/c2"});
  INFO("cp: " << r2.output);
  REQUIRE(r2.exit_code() == 0);
  const Df d2 = df(fs);
  CHECK(d2.physical - d0.physical < kMiB);
  CHECK(d2.saved - d0.saved == 2 * kBig);

  // 1000 random 4 KiB blocks of c1 overwritten.
  std::string model = base;
  {
    Fd fd = open_fd(dir + "/c1", O_RDWR);
    std::mt19937_64 rng(77);
    std::set<std::uint64_t> blocks;
    while (blocks.size() < 1000) blocks.insert(rng() % (kBig / 4096));
    std::vector<std::uint64_t> order(blocks.begin(), blocks.end());
    std::shuffle(order.begin(), order.end(), rng);
    std::uint64_t seed = 1;
    for (std::uint64_t b : order) {
      const std::string d = random_bytes(4096, 0xabc000 + seed++);
      pwrite_all(fd, d, static_cast<off_t>(b * 4096));
      model.replace(b * 4096, 4096, d);
    }
    SYS(::fsync(fd));
    fd.close_checked();
  }
  ctl_sync(fs);
  // Each overwritten block got a block of its own (more with a larger
  // cow_unit); the blocks the files reference stay the same.
  const Df d3 = df(fs);
  CHECK(d3.physical - d2.physical >= 1000 * 4096);
  CHECK(d3.physical + d3.saved == d2.physical + d2.saved);

  const std::string frag = ctl_json({"frag", dir + "/c1"});
  INFO("frag: " << frag);
  CHECK(json_u64(frag, "extents") > 1000);
  CHECK(json_u64(frag, "region") > 0);
  CHECK(json_u64(frag, "shared_bytes") <= kBig - 1000 * 4096);
  CHECK(json_u64(frag, "shared_bytes") > 0);
  CHECK(json_field(frag, "in_region_fraction") == "1.0000");
  const std::string frag_base = ctl_json({"frag", dir + "/base"});
  CHECK(json_u64(frag_base, "region") == json_u64(frag, "region"));

  // Read back from the device, not from the page cache.
  drop_caches();
  CHECK_FILE(dir + "/base", base);
  CHECK_FILE(dir + "/c1", model);
  CHECK_FILE(dir + "/c2", base);

  // The source changes too: nothing shows in the clones.
  std::string base2 = base;
  {
    Fd fd = open_fd(dir + "/base", O_RDWR);
    const std::string d = "source changed";
    for (std::uint64_t off : {std::uint64_t{0}, 100 * kMiB + 5, kBig - 10}) {  // the last one grows it
      pwrite_all(fd, d, static_cast<off_t>(off));
      if (base2.size() < off + d.size()) base2.resize(off + d.size(), '\0');
      base2.replace(off, d.size(), d);
    }
    SYS(::fsync(fd));
    fd.close_checked();
  }
  fs.remount();  // fsck.dhfs -n checks every reference count
  CHECK_FILE(dir + "/base", base2);
  CHECK_FILE(dir + "/c1", model);
  CHECK_FILE(dir + "/c2", base);
  const Df d4 = df(fs);
  CHECK(d4.saved <= d3.saved - 3 * 4096);  // base's 3 changed blocks left their sharing
  CHECK(d4.physical + d4.saved == d3.physical + d3.saved + 4096);  // and base grew by a block
}

TEST_CASE("sharing: overlay copy-up of a 256 MiB lower file shares its extents", "[sharing][dhfs]") {
  DHFS_ONLY_STRICT();
  enum Mode { kCached, kDropCaches, kAfterRemount };
  const Mode mode = GENERATE(kCached, kDropCaches, kAfterRemount);
  const char* names[] = {"page cache warm", "caches dropped before the copy-up", "daemon restarted before the copy-up"};
  INFO("mode: " << names[mode]);
  MountedFs fs;
  mkdirs(fs, "overlay2/lower/diff");
  mkdirs(fs, "overlay2/ctr/diff");
  mkdirs(fs, "overlay2/ctr/work");
  const std::string lower = fs.path("overlay2/lower/diff"), upper = fs.path("overlay2/ctr/diff"),
                    work = fs.path("overlay2/ctr/work"), merged = fs.scratch() + "/merged";
  SYS(::mkdir(merged.c_str(), 0755));
  const std::string base = random_bytes(kBig, 0xc0b1);
  write_durable(lower + "/big", base);
  if (mode == kAfterRemount) fs.remount();
  ctl_sync(fs);
  const Df d0 = df(fs);
  if (mode == kDropCaches) drop_caches();

  auto ovl = std::make_unique<MountGuard>("overlay", merged, "overlay", 0,
                                          fmt::format("lowerdir={},upperdir={},workdir={}", lower, upper, work));
  {
    Fd fd = open_fd(merged + "/big", O_WRONLY | O_APPEND);  // the copy-up
    SYS(::fsync(fd));
    fd.close_checked();
  }
  REQUIRE(exists(upper + "/big"));
  CHECK(stat_of(upper + "/big").st_size == static_cast<off_t>(kBig));
  // The copy went around the upper file's page cache (copy_up_target.h):
  // through it, all 65536 pages would be there now.
  CHECK(resident_pages(upper + "/big") == 0);
  ctl_sync(fs);
  const Df d1 = df(fs);
  INFO("physical bytes before the copy-up " << d0.physical << ", after " << d1.physical);
  CHECK(d1.physical - d0.physical <= kMiB);
  CHECK(d1.saved - d0.saved >= kBig - kMiB);
  drop_caches();
  CHECK_FILE(upper + "/big", base);

  // The upper file is independent of the lower one.
  std::string model = base;
  {
    Fd fd = open_fd(merged + "/big", O_RDWR);
    for (std::uint64_t off : {std::uint64_t{0}, std::uint64_t{4096 * 1000 + 17}, 200 * kMiB}) {
      const std::string d = random_bytes(8192, off + 1);
      pwrite_all(fd, d, static_cast<off_t>(off));
      model.replace(off, d.size(), d);
    }
    const std::string tail = "appended";
    pwrite_all(fd, tail, static_cast<off_t>(model.size()));
    model += tail;
    SYS(::fsync(fd));
    fd.close_checked();
  }
  ctl_sync(fs);
  drop_caches();
  CHECK_FILE(lower + "/big", base);
  CHECK_FILE(upper + "/big", model);
  CHECK_FILE(merged + "/big", model);
  ovl->unmount();
  ovl.reset();
  fs.remount();
  CHECK_FILE(lower + "/big", base);
  CHECK_FILE(upper + "/big", model);
}

}  // namespace dhfs_test
