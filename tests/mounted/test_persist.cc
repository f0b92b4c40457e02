// Persistence: everything written must survive unmount + fsck + mount, with the
// same inode numbers.  (In reference mode remount() is a no-op, which still
// exercises the tree building and the snapshot comparison.)
#include <fmt/format.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <memory>

#include "fixture.h"
#include "snapshot.h"

using namespace dhfs_test;

namespace {

constexpr off_t kMiB = 1 << 20;
constexpr off_t kGiB = off_t(1) << 30;

void mkdir_p(MountedFs& fs, const std::string& rel, mode_t mode = 0755) {
  SYS(::mkdir(fs.path(rel).c_str(), mode));
}

void set_times(const std::string& path, time_t sec, long nsec) {
  struct timespec ts[2] = {{sec - 1, nsec / 2}, {sec, nsec}};
  SYS(::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW));
}

// A tree with every kind of object and most ways of writing data.
void build_everything(MountedFs& fs) {
  mkdir_p(fs, "tree");
  mkdir_p(fs, "tree/a");
  mkdir_p(fs, "tree/a/b");
  mkdir_p(fs, "tree/a/b/c");
  mkdir_p(fs, "tree/owned", 0750);
  SYS(::chown(fs.path("tree/owned").c_str(), 1000, 1001));
  mkdir_p(fs, "tree/sticky", 0777);
  SYS(::chmod(fs.path("tree/sticky").c_str(), 01777));
  mkdir_p(fs, "tree/sgid", 0775);
  SYS(::chown(fs.path("tree/sgid").c_str(), 0, 2222));
  SYS(::chmod(fs.path("tree/sgid").c_str(), 02775));
  mkdir_p(fs, "tree/sgid/inherits");
  write_file(fs.path("tree/sgid/file"), "group 2222");

  // Regular files written in many ways.
  write_file(fs.path("tree/empty"), "");
  write_file(fs.path("tree/small"), "hello, world\n", 0600);
  write_file(fs.path("tree/a/one-mib"), random_bytes(size_t(kMiB), 201), 0640);
  {
    Fd fd = open_fd(fs.path("tree/a/b/odd-chunks"), O_WRONLY | O_CREAT, 0644);
    std::string data = random_bytes(size_t(3 * kMiB + 123), 202);
    for (size_t off = 0; off < data.size(); off += 65521)
      pwrite_all(fd, std::string_view(data).substr(off, 65521), off_t(off));
  }
  {
    Fd fd = open_fd(fs.path("tree/appended"), O_WRONLY | O_CREAT | O_APPEND, 0644);
    for (int i = 0; i < 100; ++i) pwrite_all(fd, fmt::format("line {}\n", i), 0);
  }
  write_file(fs.path("tree/rewritten"), random_bytes(100000, 203));
  write_file(fs.path("tree/rewritten"), "short now");
  write_file(fs.path("tree/suid"), "#!/bin/sh\n", 0755);
  SYS(::chown(fs.path("tree/suid").c_str(), 1000, 1000));
  SYS(::chmod(fs.path("tree/suid").c_str(), 06755));

  // Sparse, >4 GiB, fallocated, punched, truncated.
  {
    Fd fd = open_fd(fs.path("tree/sparse"), O_RDWR | O_CREAT, 0644);
    SYS(::ftruncate(fd, kGiB));
    pwrite_all(fd, random_bytes(4096, 204), 0);
    pwrite_all(fd, random_bytes(65536, 205), 500 * kMiB + 7);
    pwrite_all(fd, random_bytes(4096, 206), kGiB - 4096);
  }
  {
    Fd fd = open_fd(fs.path("tree/beyond-4g"), O_RDWR | O_CREAT, 0644);
    pwrite_all(fd, random_bytes(size_t(kMiB), 207), 5 * kGiB);
    pwrite_all(fd, random_bytes(8192, 208), 4 * kGiB - 4096);
  }
  {
    Fd fd = open_fd(fs.path("tree/fallocated"), O_RDWR | O_CREAT, 0644);
    SYS(::fallocate(fd, 0, 0, kMiB));
    SYS(::fallocate(fd, FALLOC_FL_KEEP_SIZE, kMiB, 2 * kMiB));
    pwrite_all(fd, "inside", 4096);
  }
  {
    Fd fd = open_fd(fs.path("tree/punched"), O_RDWR | O_CREAT, 0644);
    pwrite_all(fd, random_bytes(size_t(kMiB), 209), 0);
    SYS(::fsync(fd));
    SYS(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 256 * 1024, 512 * 1024));
    SYS(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, 4000));
  }
  {
    Fd fd = open_fd(fs.path("tree/truncated"), O_RDWR | O_CREAT, 0644);
    pwrite_all(fd, std::string(8192, 't'), 0);
    SYS(::ftruncate(fd, 100));
    SYS(::ftruncate(fd, 5000));
  }
  // mmap, O_DIRECT, copy_file_range.
  {
    write_file(fs.path("tree/mmapped"), random_bytes(3 * 4096 + 10, 210));
    Fd fd = open_fd(fs.path("tree/mmapped"), O_RDWR);
    void* m = ::mmap(nullptr, 3 * 4096 + 10, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REQUIRE(m != MAP_FAILED);
    std::memcpy(static_cast<char*>(m) + 4000, "written through mmap", 20);
    REQUIRE(::msync(m, 3 * 4096 + 10, MS_SYNC) == 0);
    REQUIRE(::munmap(m, 3 * 4096 + 10) == 0);
  }
  {
    int raw = ::open(fs.path("tree/direct").c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
    REQUIRE(raw >= 0);
    Fd fd(raw);
    void* p = nullptr;
    REQUIRE(::posix_memalign(&p, 4096, 65536) == 0);
    std::unique_ptr<void, decltype(&std::free)> buf(p, &std::free);
    std::string data = random_bytes(65536, 211);
    std::memcpy(p, data.data(), data.size());
    REQUIRE(::pwrite(fd, p, 65536, 65536) == 65536);
  }
  {
    write_file(fs.path("tree/clone-src"), random_bytes(size_t(2 * kMiB), 212));
    Fd in = open_fd(fs.path("tree/clone-src"), O_RDWR);
    Fd out = open_fd(fs.path("tree/clone-dst"), O_WRONLY | O_CREAT, 0644);
    loff_t i = 0, o = 0;
    size_t left = size_t(2 * kMiB);
    while (left > 0) {
      ssize_t n = SYS(::copy_file_range(in, &i, out, &o, left, 0));
      REQUIRE(n > 0);
      left -= size_t(n);
    }
    Fd part = open_fd(fs.path("tree/clone-part"), O_WRONLY | O_CREAT, 0644);
    i = 12345;
    o = 777;
    REQUIRE_SYS(::copy_file_range(in, &i, part, &o, 100000, 0), >, 0);
    pwrite_all(in, "source changed after the copy", 4096);  // must not reach the copies
  }

  // Hard links across directories.
  write_file(fs.path("tree/hl1"), "three names", 0604);
  SYS(::link(fs.path("tree/hl1").c_str(), fs.path("tree/a/hl2").c_str()));
  SYS(::link(fs.path("tree/hl1").c_str(), fs.path("tree/a/b/hl3").c_str()));

  // Symlinks.
  SYS(::symlink("small", fs.path("tree/link-short").c_str()));
  std::string long_target;
  while (long_target.size() < 4095) long_target += "long/target/";
  long_target.resize(4095);
  SYS(::symlink(long_target.c_str(), fs.path("tree/link-4095").c_str()));
  SYS(::symlink("does/not/exist", fs.path("tree/link-dangling").c_str()));
  SYS(::symlink("a/b", fs.path("tree/link-dir").c_str()));
  SYS(::lchown(fs.path("tree/link-short").c_str(), 1000, 1000));
  set_xattr(fs.path("tree/link-short"), "trusted.on-link", "t");

  // Special files.
  SYS(::mknod(fs.path("tree/null").c_str(), S_IFCHR | 0666, makedev(1, 3)));
  SYS(::mknod(fs.path("tree/bigchr").c_str(), S_IFCHR | 0600, makedev(259, 123456)));
  SYS(::mknod(fs.path("tree/loopblk").c_str(), S_IFBLK | 0660, makedev(7, 200)));
  SYS(::mknod(fs.path("tree/fifo").c_str(), S_IFIFO | 0644, 0));
  SYS(::mknod(fs.path("tree/sock").c_str(), S_IFSOCK | 0755, 0));

  // Renames of every flavour.
  write_file(fs.path("tree/wo-src"), "whiteout source");
  SYS(::renameat2(AT_FDCWD, fs.path("tree/wo-src").c_str(), AT_FDCWD, fs.path("tree/wo-dst").c_str(),
                  RENAME_WHITEOUT));
  mkdir_p(fs, "tree/moving");
  write_file(fs.path("tree/moving/inside"), "moved with its directory");
  SYS(::rename(fs.path("tree/moving").c_str(), fs.path("tree/a/b/c/moved").c_str()));
  write_file(fs.path("tree/x1"), "x1");
  mkdir_p(fs, "tree/x2");
  SYS(::renameat2(AT_FDCWD, fs.path("tree/x1").c_str(), AT_FDCWD, fs.path("tree/x2").c_str(),
                  RENAME_EXCHANGE));
  write_file(fs.path("tree/replaced"), "old");
  write_file(fs.path("tree/replacement"), "new");
  SYS(::rename(fs.path("tree/replacement").c_str(), fs.path("tree/replaced").c_str()));
  write_file(fs.path("tree/gone"), "deleted");
  SYS(::unlink(fs.path("tree/gone").c_str()));

  // xattrs.
  set_xattr(fs.path("tree/small"), "user.color", "blue");
  set_xattr(fs.path("tree/small"), "user.empty", "");
  set_xattr(fs.path("tree/small"), "security.label", "s0");
  set_xattr(fs.path("tree/a"), "user.dir", "on a dir");
  set_xattr(fs.path("tree/a"), "trusted.overlay.opaque", "y");
  set_xattr(fs.path("tree/a/one-mib"), "user.big", random_bytes(65536, 213));
  set_xattr(fs.path("tree/a/one-mib"), "trusted.big", random_bytes(65536, 214));
  write_file(fs.path("tree/many-xattrs"), "");
  for (int i = 0; i < 60; ++i)
    set_xattr(fs.path("tree/many-xattrs"), fmt::format("user.x{:03d}", i), fmt::format("value {}", i));
  for (int i = 0; i < 60; i += 3) SYS(::removexattr(fs.path("tree/many-xattrs").c_str(), fmt::format("user.x{:03d}", i).c_str()));

  // Long and odd names.
  write_file(fs.path("tree/" + std::string(255, 'n')), "255");
  mkdir_p(fs, "tree/" + std::string(254, 'd') + "D");
  write_file(fs.path("tree/new\nline and \xe2\x82\xac"), "odd");

  // A directory with many entries, half of them removed again.
  mkdir_p(fs, "tree/crowd");
  for (int i = 0; i < 3000; ++i)
    SYS(::mknod(fs.path(fmt::format("tree/crowd/entry-{:04d}", i)).c_str(), S_IFREG | 0644, 0));
  for (int i = 0; i < 3000; i += 2) SYS(::unlink(fs.path(fmt::format("tree/crowd/entry-{:04d}", i)).c_str()));

  // Explicit timestamps, last (the operations above change directory times).
  set_times(fs.path("tree/small"), 1000000000, 123456789);
  set_times(fs.path("tree/a"), 1200000000, 1);
  set_times(fs.path("tree/link-short"), 1300000000, 999999999);
  set_times(fs.path("tree/null"), 1400000000, 42);
  set_times(fs.path("tree/owned"), 4102444800, 500000000);
}

}  // namespace

TEST_CASE("everything survives remount", "[persist][dhfs]") {
  DHFS_ONLY();
  MountedFs fs;
  build_everything(fs);
  const Snapshot a = take_snapshot(fs.root());
  REQUIRE(a.size() > 1500);
  fs.remount();
  check_same_snapshot(a, take_snapshot(fs.root()), "after the first remount");
  fs.remount();
  check_same_snapshot(a, take_snapshot(fs.root()), "after the second remount");
  // Spot checks that do not depend on the snapshot code.
  CHECK_BYTES(read_file(fs.path("tree/a/b/c/moved/inside")), "moved with its directory");
  CHECK(S_ISCHR(lstat_of(fs.path("tree/wo-src")).st_mode));
  CHECK(lstat_of(fs.path("tree/wo-src")).st_rdev == makedev(0, 0));
  CHECK(lstat_of(fs.path("tree/hl1")).st_nlink == 3);
  CHECK(lstat_of(fs.path("tree/bigchr")).st_rdev == makedev(259, 123456));
  CHECK(lstat_of(fs.path("tree/beyond-4g")).st_size == 5 * kGiB + kMiB);
  CHECK(lstat_of(fs.path("tree/small")).st_mtim.tv_nsec == 123456789);
  CHECK_BYTES(get_xattr(fs.path("tree/a/one-mib"), "user.big"), random_bytes(65536, 213));

  // Change things after a remount; those changes must persist as well.
  SYS(::unlink(fs.path("tree/a/hl2").c_str()));
  SYS(::rename(fs.path("tree/a/b").c_str(), fs.path("tree/b-moved").c_str()));
  SYS(::chmod(fs.path("tree/small").c_str(), 0641));
  SYS(::chown(fs.path("tree/empty").c_str(), 77, 88));
  SYS(::removexattr(fs.path("tree/a").c_str(), "trusted.overlay.opaque"));
  set_xattr(fs.path("tree/many-xattrs"), "user.x000", "back again");
  {
    Fd fd = open_fd(fs.path("tree/beyond-4g"), O_RDWR);
    pwrite_all(fd, "patched", 5 * kGiB + 100);
    SYS(::ftruncate(fd, 5 * kGiB + 4096));
  }
  for (int i = 1; i < 3000; i += 4) SYS(::unlink(fs.path(fmt::format("tree/crowd/entry-{:04d}", i)).c_str()));
  SYS(::rmdir(fs.path("tree/" + std::string(254, 'd') + "D").c_str()));
  write_file(fs.path("tree/after-remount"), random_bytes(300000, 215));
  const Snapshot b = take_snapshot(fs.root());
  fs.remount();
  check_same_snapshot(b, take_snapshot(fs.root()), "after changes and a third remount");
}

TEST_CASE("inode numbers are stable across remount", "[persist][dhfs]") {
  DHFS_ONLY();
  MountedFs fs;
  std::map<std::string, ino_t> inos;
  mkdir_p(fs, "d");
  write_file(fs.path("d/f"), "f");
  SYS(::symlink("f", fs.path("d/l").c_str()));
  SYS(::mknod(fs.path("fifo").c_str(), S_IFIFO | 0644, 0));
  SYS(::link(fs.path("d/f").c_str(), fs.path("hard").c_str()));
  for (int i = 0; i < 100; ++i) write_file(fs.path(fmt::format("d/n{}", i)), "");
  for (int i = 0; i < 100; i += 2) SYS(::unlink(fs.path(fmt::format("d/n{}", i)).c_str()));
  SYS(::rename(fs.path("d/n1").c_str(), fs.path("renamed").c_str()));
  for (const char* rel : {"", "d", "d/f", "d/l", "fifo", "hard", "renamed", "d/n99"})
    inos[rel] = lstat_of(fs.path(rel)).st_ino;
  CHECK(inos["hard"] == inos["d/f"]);
  std::map<std::string, ino_t> readdir_inos;
  for (auto& e : list_dir(fs.path("d"))) readdir_inos[e.name] = e.ino;

  fs.remount();
  for (auto& [rel, ino] : inos) {
    INFO("'" << rel << "'");
    CHECK(lstat_of(fs.path(rel)).st_ino == ino);
  }
  for (auto& e : list_dir(fs.path("d"))) {
    INFO(e.name);
    CHECK(e.ino == readdir_inos[e.name]);
  }
  // New objects get numbers no live object has.
  write_file(fs.path("new"), "");
  const ino_t fresh = lstat_of(fs.path("new")).st_ino;
  for (auto& [rel, ino] : inos) CHECK(fresh != ino);
  fs.remount();
  CHECK(lstat_of(fs.path("new")).st_ino == fresh);
  CHECK(lstat_of(fs.path("d/f")).st_ino == inos["d/f"]);
}

TEST_CASE("1000 xattrs survive remount", "[persist][dhfs][xattr]") {
  DHFS_ONLY();
  MountedFs fs;
  write_file(fs.path("f"), "x");
  for (int i = 0; i < 1000; ++i) set_xattr(fs.path("f"), fmt::format("user.attr-{:04d}", i), fmt::format("v{}", i));
  for (int i = 0; i < 1000; i += 10) SYS(::removexattr(fs.path("f").c_str(), fmt::format("user.attr-{:04d}", i).c_str()));
  const auto names = list_xattrs(fs.path("f"));
  REQUIRE(names.size() == 900);
  fs.remount();
  CHECK(list_xattrs(fs.path("f")) == names);
  int bad = 0;
  for (int i = 1; i < 1000; ++i)
    if (i % 10 && get_xattr(fs.path("f"), fmt::format("user.attr-{:04d}", i)) != fmt::format("v{}", i)) ++bad;
  CHECK(bad == 0);
}

TEST_CASE("an unlinked file open at unlink time is gone after remount", "[persist][dhfs][unlinked]") {
  DHFS_ONLY();
  MountedFs fs;
  {
    Fd fd = open_fd(fs.path("orphan"), O_RDWR | O_CREAT, 0644);
    pwrite_all(fd, random_bytes(size_t(8 * kMiB), 221), 0);
    SYS(::fsync(fd));
    SYS(::unlink(fs.path("orphan").c_str()));
    CHECK(fstat_of(fd).st_nlink == 0);
  }
  write_file(fs.path("survivor"), "still here");
  fs.remount();  // includes fsck.dhfs -n: no leaked orphan blocks
  CHECK(list_names(fs.root()) == std::vector<std::string>{"survivor"});
  CHECK_BYTES(read_file(fs.path("survivor")), "still here");
}

TEST_CASE("a 10000-entry directory survives remount", "[persist][dhfs][readdir]") {
  DHFS_ONLY();
  MountedFs fs;
  mkdir_p(fs, "big");
  Fd dfd = open_fd(fs.path("big"), O_RDONLY | O_DIRECTORY);
  for (int i = 0; i < 10000; ++i)
    SYS(::mknodat(dfd, fmt::format("file-with-a-longer-name-{:05d}", i).c_str(), S_IFREG | 0644, 0));
  dfd.reset();
  const auto before = list_dir(fs.path("big"));
  REQUIRE(before.size() == 10000);
  std::map<std::string, ino_t> ino;
  for (auto& e : before) ino[e.name] = e.ino;
  fs.remount();
  const auto after = list_dir(fs.path("big"));
  CHECK(after.size() == 10000);
  int mismatch = 0;
  for (auto& e : after)
    if (!ino.count(e.name) || ino[e.name] != e.ino || e.type != DT_REG) ++mismatch;
  CHECK(mismatch == 0);
}
