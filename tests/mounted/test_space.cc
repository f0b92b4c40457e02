// statfs, name lengths, and running out of space (in dhfs and under its image).
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "dhfsctl_support.h"
#include "fixture.h"

using namespace dhfs_test;

namespace {

struct statvfs statvfs_of(const std::string& path) {
  struct statvfs sv {};
  SYS(::statvfs(path.c_str(), &sv));
  return sv;
}

// Free bytes as seen by statvfs.
uint64_t free_bytes(const std::string& path) {
  struct statvfs sv = statvfs_of(path);
  return uint64_t(sv.f_bfree) * sv.f_frsize;
}

constexpr uint64_t kMiB = 1 << 20;

}  // namespace

TEST_CASE("statfs is sane", "[statfs]") {
  MountedFs fs;
  struct statvfs sv = statvfs_of(fs.root());
  CHECK(sv.f_bsize == 4096);
  CHECK(sv.f_frsize == 4096);
  CHECK(sv.f_namemax == 255);
  CHECK(sv.f_blocks > 0);
  CHECK(sv.f_bfree <= sv.f_blocks);
  CHECK(sv.f_bavail <= sv.f_bfree);
  CHECK(sv.f_ffree <= sv.f_files);
  CHECK((sv.f_flag & ST_RDONLY) == 0);

  // statfs(2) and fstatfs(2) agree with statvfs.
  struct statfs sf {};
  SYS(::statfs(fs.root().c_str(), &sf));
  CHECK(uint64_t(sf.f_bsize) == sv.f_bsize);
  CHECK(uint64_t(sf.f_blocks) == sv.f_blocks);
  CHECK(sf.f_namelen == 255);
  write_file(fs.path("f"), "x");
  Fd fd = open_fd(fs.path("f"), O_RDONLY);
  struct statfs sf2 {};
  SYS(::fstatfs(fd, &sf2));
  CHECK(sf2.f_type == sf.f_type);
  CHECK(sf2.f_blocks == sf.f_blocks);
}

TEST_CASE("statfs numbers describe the image", "[statfs][dhfs]") {
  DHFS_ONLY_STRICT();
  MountedFs fs;
  struct statfs sf {};
  SYS(::statfs(fs.root().c_str(), &sf));
  CHECK(sf.f_type == FUSE_SUPER_MAGIC);
  struct statvfs sv = statvfs_of(fs.root());
  const uint64_t total = uint64_t(sv.f_blocks) * sv.f_frsize;
  CHECK(total <= (uint64_t(2) << 30));
  CHECK(total >= (uint64_t(3) << 29));  // at most a quarter goes to metadata
  CHECK(sv.f_bfree >= sv.f_blocks * 9 / 10);  // a fresh filesystem is nearly empty
  CHECK(sv.f_files > 0);
}

TEST_CASE("f_bfree follows 100 MiB of data", "[statfs]") {
  MountedFs fs;
  const std::string p = fs.path("big");
  Fd root = open_fd(fs.root(), O_RDONLY | O_DIRECTORY);
  SYS(::syncfs(root));
  const uint64_t before = free_bytes(fs.root());
  {
    Fd fd = open_fd(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
    for (int i = 0; i < 100; ++i) pwrite_all(fd, random_bytes(kMiB, 1000 + uint64_t(i)), off_t(i) * off_t(kMiB));
    SYS(::fsync(fd));
    struct stat st = fstat_of(fd);
    CHECK(st.st_size == off_t(100 * kMiB));
    CHECK(uint64_t(st.st_blocks) * 512 >= 100 * kMiB);
  }
  const uint64_t during = free_bytes(fs.root());
  INFO("free before " << before / kMiB << " MiB, after writing " << during / kMiB << " MiB");
  CHECK(during + 99 * kMiB <= before);   // the data is accounted
  CHECK(during + 110 * kMiB >= before);  // and not much more than the data

  SYS(::unlink(p.c_str()));
  SYS(::syncfs(root));
  // Space may come back only once the freeing is durable: allow a few seconds.
  uint64_t after = free_bytes(fs.root());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (after + 2 * kMiB < before && std::chrono::steady_clock::now() < deadline) {
    sleep_ms(100);
    SYS(::syncfs(root));
    after = free_bytes(fs.root());
  }
  INFO("free after unlink " << after / kMiB << " MiB");
  CHECK(after + 2 * kMiB >= before);
}

TEST_CASE("names of 255 bytes work and 256 bytes give ENAMETOOLONG everywhere", "[names]") {
  MountedFs fs;
  const std::string n255(255, 'a');
  const std::string m255(255, 'b');
  const std::string d255 = std::string(254, 'd').append(1, 'D');
  const std::string n256(256, 'c');
  write_file(fs.path("plain"), "plain");
  SYS(::mkdir(fs.path("dir").c_str(), 0755));

  // 255 works for every operation.
  write_file(fs.path(n255), "long name");
  CHECK_BYTES(read_file(fs.path(n255)), "long name");
  CHECK(S_ISREG(lstat_of(fs.path(n255)).st_mode));
  SYS(::mkdir(fs.path(d255).c_str(), 0755));
  write_file(fs.path(d255 + "/" + n255), "nested");
  CHECK_BYTES(read_file(fs.path(d255 + "/" + n255)), "nested");
  SYS(::rename(fs.path(n255).c_str(), fs.path(m255).c_str()));
  CHECK_BYTES(read_file(fs.path(m255)), "long name");
  SYS(::link(fs.path(m255).c_str(), fs.path("dir/" + n255).c_str()));
  CHECK(lstat_of(fs.path(m255)).st_nlink == 2);
  SYS(::symlink(m255.c_str(), fs.path("dir/" + m255).c_str()));
  CHECK(lstat_of(fs.path("dir/" + m255)).st_size == 255);
  SYS(::mknod(fs.path("dir/" + d255).c_str(), S_IFIFO | 0644, 0));
  auto names = list_names(fs.root());
  CHECK(std::count(names.begin(), names.end(), m255) == 1);
  CHECK(std::count(names.begin(), names.end(), d255) == 1);
  auto dnames = list_names(fs.path("dir"));
  std::vector<std::string> expect{d255, n255, m255};
  std::sort(expect.begin(), expect.end());
  CHECK(dnames == expect);
  SYS(::unlink(fs.path("dir/" + n255).c_str()));
  SYS(::unlink(fs.path("dir/" + m255).c_str()));

  // 256 fails for every operation, whether the name exists or not.
  const std::string bad = fs.path(n256);
  const std::string bad_in_dir = fs.path("dir/" + n256);
  struct stat st {};
  CHECK_ERRNO(::open(bad.c_str(), O_CREAT | O_WRONLY, 0644), ENAMETOOLONG);
  CHECK_ERRNO(::open(bad.c_str(), O_RDONLY), ENAMETOOLONG);
  CHECK_ERRNO(::stat(bad.c_str(), &st), ENAMETOOLONG);
  CHECK_ERRNO(::lstat(bad_in_dir.c_str(), &st), ENAMETOOLONG);
  CHECK_ERRNO(::stat((bad + "/x").c_str(), &st), ENAMETOOLONG);
  CHECK_ERRNO(::access(bad.c_str(), F_OK), ENAMETOOLONG);
  CHECK_ERRNO(::mkdir(bad.c_str(), 0755), ENAMETOOLONG);
  CHECK_ERRNO(::mknod(bad.c_str(), S_IFIFO | 0644, 0), ENAMETOOLONG);
  CHECK_ERRNO(::rename(fs.path("plain").c_str(), bad.c_str()), ENAMETOOLONG);
  CHECK_ERRNO(::rename(fs.path("plain").c_str(), bad_in_dir.c_str()), ENAMETOOLONG);
  CHECK_ERRNO(::rename(bad.c_str(), fs.path("x").c_str()), ENAMETOOLONG);
  CHECK_ERRNO(::link(fs.path("plain").c_str(), bad.c_str()), ENAMETOOLONG);
  CHECK_ERRNO(::symlink("plain", bad.c_str()), ENAMETOOLONG);
  CHECK_ERRNO(::unlink(bad.c_str()), ENAMETOOLONG);
  CHECK_ERRNO(::rmdir(bad.c_str()), ENAMETOOLONG);
  CHECK_ERRNO(::chmod(bad.c_str(), 0644), ENAMETOOLONG);
  CHECK_ERRNO(::truncate(bad.c_str(), 0), ENAMETOOLONG);
  CHECK_ERRNO(::setxattr(bad.c_str(), "user.x", "1", 1, 0), ENAMETOOLONG);
  char buf[16];
  CHECK_ERRNO(::readlink(bad.c_str(), buf, sizeof buf), ENAMETOOLONG);
  Fd dir = open_fd(fs.path("dir"), O_RDONLY | O_DIRECTORY);
  CHECK_ERRNO(::openat(dir, n256.c_str(), O_CREAT | O_WRONLY, 0644), ENAMETOOLONG);
  CHECK_ERRNO(::fstatat(dir, n256.c_str(), &st, AT_SYMLINK_NOFOLLOW), ENAMETOOLONG);
  CHECK_ERRNO(::mkdirat(dir, n256.c_str(), 0755), ENAMETOOLONG);

  // A symlink may point at a long name: it is only a string.
  SYS(::symlink(n256.c_str(), fs.path("to-long").c_str()));
  CHECK_ERRNO(::stat(fs.path("to-long").c_str(), &st), ENAMETOOLONG);

  // Nothing was created by the failed calls.
  names = list_names(fs.root());
  CHECK(std::count(names.begin(), names.end(), n256) == 0);
  CHECK_BYTES(read_file(fs.path("plain")), "plain");
}

TEST_CASE("names with unusual bytes", "[names]") {
  MountedFs fs;
  std::vector<std::string> names;
  std::string low, high;
  for (int c = 1; c < 128; ++c)
    if (c != '/') low.push_back(char(c));
  for (int c = 128; c < 256; ++c) high.push_back(char(c));
  names.push_back(low);
  names.push_back(high);
  names.push_back("...");
  names.push_back(" leading and trailing spaces ");
  names.push_back("new\nline");
  names.push_back("-");
  std::string euro;
  for (int i = 0; i < 85; ++i) euro += "\xe2\x82\xac";  // 85 x U+20AC = 255 bytes
  names.push_back(euro);
  names.push_back("Case");
  names.push_back("case");
  names.push_back("CASE");

  for (size_t i = 0; i < names.size(); ++i) write_file(fs.path(names[i]), std::to_string(i));
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  CHECK(list_names(fs.root()) == sorted);
  for (size_t i = 0; i < names.size(); ++i) {
    INFO("name #" << i);
    CHECK_BYTES(read_file(fs.path(names[i])), std::to_string(i));
  }
  for (auto& n : names) SYS(::unlink(fs.path(n).c_str()));
  CHECK(list_names(fs.root()).empty());
}

// A host that deletes images to make room pulls the next one at once: the
// space of the deleted files must be there for it without waiting for a
// periodic commit (dhfs commits when a write is short of space).
TEST_CASE("space of deleted files is writable at once on a full filesystem", "[statfs][enospc]") {
  DHFS_ONLY();  // a reference directory is not a filesystem of its own to fill
  FsOptions opts;
  opts.image_size = "256M";
  opts.mount_opts = "commit=3600";  // no periodic commit frees anything here
  MountedFs fs(opts);
  const std::string full = fs.path("full");
  {
    Fd fd = open_fd(full, O_WRONLY | O_CREAT | O_EXCL, 0644);
    int err = 0;
    for (uint64_t i = 0; err == 0 && i < 512; ++i) {
      const std::string mib = random_bytes(kMiB, 7000 + i);
      if (::pwrite(fd, mib.data(), mib.size(), off_t(i * kMiB)) < 0) err = errno;
      else if (::fdatasync(fd) < 0) err = errno;
    }
    CHECK(err == ENOSPC);
  }
  struct statvfs filled = statvfs_of(fs.root());
  REQUIRE(uint64_t(filled.f_bavail) * filled.f_frsize < 8 * kMiB);
  const uint64_t stored = uint64_t(fstat_of(open_fd(full, O_RDONLY)).st_blocks) * 512;
  REQUIRE(stored > 150 * kMiB);

  SYS(::unlink(full.c_str()));
  // No syncfs: df shows the space as soon as the daemon has heard that the
  // kernel forgot the file (FUSE sends that apart, a moment later).
  uint64_t avail = 0;
  for (int i = 0; i < 100 && avail + 8 * kMiB < stored; ++i) {
    if (i) sleep_ms(10);
    struct statvfs freed = statvfs_of(fs.root());
    avail = uint64_t(freed.f_bavail) * freed.f_frsize;
  }
  CHECK(avail + 8 * kMiB >= stored);
  // And a write of most of it holds.
  const std::string again = fs.path("again");
  const uint64_t want = stored - 16 * kMiB;
  {
    Fd fd = open_fd(again, O_WRONLY | O_CREAT | O_EXCL, 0644);
    for (uint64_t at = 0; at < want; at += kMiB) pwrite_all(fd, random_bytes(kMiB, 9000 + at / kMiB), off_t(at));
    SYS(::fsync(fd));
  }
  Fd fd = open_fd(again, O_RDONLY);
  CHECK(pread_all(fd, kMiB, off_t(want - kMiB)) == random_bytes(kMiB, 9000 + want / kMiB - 1));
}

// The image file lives on a host filesystem that fills up long before the
// image does (a sparse image bigger than its host's free space). Data writes
// then fail with ENOSPC; the journal, which mkfs gave its space, keeps
// working, so the filesystem still takes (and persists) every change that
// needs no new data, the operator finds the cause in the daemon's log, and
// the unmount is clean.
TEST_CASE("a full host filesystem under the image fails data writes, never the journal", "[enospc][dhfs]") {
  DHFS_ONLY_STRICT();  // about dhfs's own image file
  struct HostDir {
    std::string path = "/tmp/dhfs-host-XXXXXX";
    HostDir() { REQUIRE(::mkdtemp(path.data()) != nullptr); }
    ~HostDir() { ::rmdir(path.c_str()); }
  } host;
  MountGuard host_fs("tmpfs", host.path, "tmpfs", 0, "size=96m,mode=0700");
  FsOptions opts;
  opts.image_size = "1G";
  opts.image_dir = host.path;
  MountedFs fs(opts);

  const std::string big = fs.path("big");
  int err = 0;
  {
    Fd fd = open_fd(big, O_WRONLY | O_CREAT | O_EXCL, 0644);
    for (uint64_t i = 0; err == 0 && i < 256; ++i) {
      const std::string mib = random_bytes(kMiB, 500 + i);
      if (::pwrite(fd, mib.data(), mib.size(), off_t(i * kMiB)) < 0) err = errno;
      else if (i % 8 == 0 && ::fdatasync(fd) < 0) err = errno;
    }
    if (err == 0 && ::fsync(fd) < 0) err = errno;
  }
  REQUIRE(err == ENOSPC);
  CHECK(fs.daemon_log().find("failed: " + std::string(std::strerror(ENOSPC))) != std::string::npos);

  // Changes that need no new data blocks, made durable.
  SYS(::mkdir(fs.path("kept").c_str(), 0755));
  SYS(::rename(big.c_str(), fs.path("kept/big").c_str()));
  SYS(::truncate(fs.path("kept/big").c_str(), off_t(kMiB)));
  SYS(::symlink("big", fs.path("kept/link").c_str()));
  set_xattr(fs.path("kept/big"), "user.note", "written on a full host");
  RunResult sync = run({tool_path("dhfsctl"), "sync", fs.root()});
  INFO("dhfsctl sync: exit " << sync.exit_code() << "\n" << sync.output << "\n" << fs.daemon_log());
  REQUIRE(sync.exit_code() == 0);

  fs.remount();  // a clean unmount and a clean fsck, with the host still full
  CHECK(list_names(fs.root()) == std::vector<std::string>{"kept"});
  CHECK(stat_of(fs.path("kept/big")).st_size == off_t(kMiB));
  CHECK(read_file(fs.path("kept/big")) == random_bytes(kMiB, 500));
  CHECK(get_xattr(fs.path("kept/big"), "user.note") == "written on a full host");
  char target[16] = {};
  CHECK(::readlink(fs.path("kept/link").c_str(), target, sizeof target) == 3);
}

namespace {

// Bytes of its host the image file takes.
uint64_t image_bytes(const MountedFs& fs) { return uint64_t(stat_of(fs.image()).st_blocks) * 512; }

// Writes `mib` MiB of random bytes (seeds from `seed` on) to "big", fsyncs
// it and deletes it; returns image_bytes() from before the delete.
uint64_t write_and_delete(const MountedFs& fs, uint64_t mib, uint64_t seed) {
  {
    Fd fd = open_fd(fs.path("big"), O_WRONLY | O_CREAT | O_EXCL, 0644);
    for (uint64_t i = 0; i < mib; ++i) pwrite_all(fd, random_bytes(kMiB, seed + i), off_t(i * kMiB));
    SYS(::fsync(fd));
  }
  const uint64_t full = image_bytes(fs);
  REQUIRE(full > mib * kMiB);
  SYS(::unlink(fs.path("big").c_str()));
  return full;
}

}  // namespace

// fstrim(8) on the mount (FITRIM): what deletes freed goes back to the
// filesystem that holds the image file, as with ext4 on a loop device; the
// files that remain are untouched, and only root may trim.
TEST_CASE("fstrim gives the space of deleted files back to the image's host", "[trim][dhfs]") {
  DHFS_ONLY_STRICT();  // about dhfs's own image file
  FsOptions opts;
  opts.image_size = "1G";
  MountedFs fs(opts);
  const std::string keep = random_bytes(4 * kMiB, 31);
  write_file(fs.path("keep"), keep);
  const uint64_t full = write_and_delete(fs, 200, 600);

  const std::string denied = in_child(
      [&]() -> std::string {
        Fd dir(::open(fs.root().c_str(), O_RDONLY | O_DIRECTORY));
        fstrim_range range{0, UINT64_MAX, 0};
        if (dir < 0) return "open: " + errname(errno);
        return ::ioctl(dir, FITRIM, &range) == 0 ? "trimmed" : errname(errno);
      },
      nobody());
  CHECK(denied == "EPERM");

  RunResult trim = run({"/sbin/fstrim", "-v", fs.root()});  // util-linux
  INFO("fstrim -v: exit " << trim.exit_code() << ": " << trim.output);
  REQUIRE(trim.exit_code() == 0);
  CHECK(trim.output.find("trimmed") != std::string::npos);
  const uint64_t trimmed = image_bytes(fs);
  INFO("image: " << full / kMiB << " MiB allocated before, " << trimmed / kMiB << " MiB after");
  CHECK(trimmed + 195 * kMiB <= full);

  {
    Fd drop = open_fd("/proc/sys/vm/drop_caches", O_WRONLY);
    pwrite_all(drop, "3", 0);
  }
  CHECK(read_file(fs.path("keep")) == keep);
  // The discarded space is written again as any other.
  write_file(fs.path("again"), random_bytes(8 * kMiB, 32));
  fs.remount();
  CHECK(read_file(fs.path("keep")) == keep);
  CHECK(read_file(fs.path("again")) == random_bytes(8 * kMiB, 32));
}

// -o discard: what deletes free goes back to the image's host by itself,
// about a second after the delete is durable, as with ext4's discard.
TEST_CASE("online discard (-o discard) gives the space of deleted files back to the image's host without fstrim", "[trim][dhfs]") {
  DHFS_ONLY_STRICT();  // about dhfs's own image file
  FsOptions opts;
  opts.image_size = "1G";
  opts.mount_opts = "discard";
  MountedFs fs(opts);
  const std::string keep = random_bytes(4 * kMiB, 41);
  write_file(fs.path("keep"), keep);
  const uint64_t full = write_and_delete(fs, 100, 700);
  ctl_sync(fs);
  uint64_t now = full;
  for (int i = 0; i < 100 && now + 95 * kMiB > full; ++i) {
    sleep_ms(100);
    now = image_bytes(fs);
  }
  INFO("image: " << full / kMiB << " MiB allocated before the delete, " << now / kMiB << " MiB after");
  CHECK(now + 95 * kMiB <= full);
  fs.remount();
  CHECK(read_file(fs.path("keep")) == keep);
}
