// chmod, chown, truncate/ftruncate, utimensat, ctime, setgid directories.
#include <sys/xattr.h>

#include <ctime>

#include "fixture.h"

using namespace dhfs_test;

TEST_CASE("chmod and fchmod", "[attr]") {
  MountedFs fs;
  write_file(fs.path("f"), "data", 0644);
  SYS(::mkdir(fs.path("d").c_str(), 0755));
  SYS(::symlink("f", fs.path("l").c_str()));

  for (mode_t m : {0600, 0000, 04755, 02755, 06711, 01777, 0444}) {
    INFO("mode " << std::oct << m);
    const struct stat before = lstat_of(fs.path("f"));
    tick();
    SYS(::chmod(fs.path("f").c_str(), m));
    const struct stat after = lstat_of(fs.path("f"));
    CHECK((after.st_mode & 07777) == m);
    CHECK(S_ISREG(after.st_mode));
    CHECK(ns_of(after.st_ctim) > ns_of(before.st_ctim));
    CHECK(ns_of(after.st_mtim) == ns_of(before.st_mtim));
  }
  SYS(::chmod(fs.path("d").c_str(), 03750));
  CHECK((lstat_of(fs.path("d")).st_mode & 07777) == 03750);
  CHECK(S_ISDIR(lstat_of(fs.path("d")).st_mode));

  // chmod follows a symlink; the link keeps 0777.
  SYS(::chmod(fs.path("l").c_str(), 0640));
  CHECK((lstat_of(fs.path("f")).st_mode & 07777) == 0640);
  CHECK((lstat_of(fs.path("l")).st_mode & 0777) == 0777);

  Fd fd = open_fd(fs.path("f"), O_RDONLY);
  SYS(::fchmod(fd, 0604));
  CHECK((fstat_of(fd).st_mode & 07777) == 0604);
  CHECK((lstat_of(fs.path("f")).st_mode & 07777) == 0604);
  CHECK_ERRNO(::chmod(fs.path("missing").c_str(), 0644), ENOENT);
}

TEST_CASE("chown fchown and lchown", "[attr]") {
  MountedFs fs;
  write_file(fs.path("f"), "data", 0644);
  SYS(::symlink("f", fs.path("l").c_str()));
  SYS(::mkdir(fs.path("d").c_str(), 0775));
  SYS(::chmod(fs.path("d").c_str(), 06775));

  const struct stat before = lstat_of(fs.path("f"));
  tick();
  SYS(::chown(fs.path("f").c_str(), 1000, 2000));
  struct stat st = lstat_of(fs.path("f"));
  CHECK(st.st_uid == 1000);
  CHECK(st.st_gid == 2000);
  CHECK(ns_of(st.st_ctim) > ns_of(before.st_ctim));
  CHECK(ns_of(st.st_mtim) == ns_of(before.st_mtim));

  SYS(::chown(fs.path("f").c_str(), uid_t(-1), 3000));
  st = lstat_of(fs.path("f"));
  CHECK(st.st_uid == 1000);
  CHECK(st.st_gid == 3000);
  SYS(::chown(fs.path("f").c_str(), 4000, gid_t(-1)));
  st = lstat_of(fs.path("f"));
  CHECK(st.st_uid == 4000);
  CHECK(st.st_gid == 3000);

  // lchown changes the link, chown through the link changes the target.
  SYS(::lchown(fs.path("l").c_str(), 5000, 5001));
  CHECK(lstat_of(fs.path("l")).st_uid == 5000);
  CHECK(lstat_of(fs.path("l")).st_gid == 5001);
  CHECK(lstat_of(fs.path("f")).st_uid == 4000);
  SYS(::chown(fs.path("l").c_str(), 6000, 6001));
  CHECK(lstat_of(fs.path("f")).st_uid == 6000);
  CHECK(lstat_of(fs.path("l")).st_uid == 5000);

  Fd fd = open_fd(fs.path("f"), O_RDONLY);
  SYS(::fchown(fd, 0, 0));
  CHECK(fstat_of(fd).st_uid == 0);
  CHECK(fstat_of(fd).st_gid == 0);

  // Directories keep their setuid/setgid bits on chown.
  SYS(::chown(fs.path("d").c_str(), 7000, 7001));
  st = lstat_of(fs.path("d"));
  CHECK(st.st_uid == 7000);
  CHECK((st.st_mode & 07777) == 06775);
}

TEST_CASE("chown clears setuid and setgid on regular files", "[attr][suid]") {
  MountedFs fs;
  write_file(fs.path("exe"), "#!/bin/sh\n", 0755);
  SYS(::chmod(fs.path("exe").c_str(), 06755));
  REQUIRE((lstat_of(fs.path("exe")).st_mode & 07777) == 06755);
  SYS(::chown(fs.path("exe").c_str(), 1000, 1000));
  struct stat st = lstat_of(fs.path("exe"));
  CHECK(st.st_uid == 1000);
  CHECK((st.st_mode & 07777) == 0755);

  // setgid without group execute is not a privilege bit and stays.
  write_file(fs.path("sgid-noexec"), "x", 0644);
  SYS(::chmod(fs.path("sgid-noexec").c_str(), 02644));
  SYS(::chown(fs.path("sgid-noexec").c_str(), 1000, 1000));
  CHECK((lstat_of(fs.path("sgid-noexec")).st_mode & 07777) == 02644);

  // setuid alone, group change only.
  write_file(fs.path("suid"), "x", 0755);
  SYS(::chmod(fs.path("suid").c_str(), 04755));
  SYS(::chown(fs.path("suid").c_str(), uid_t(-1), 1000));
  CHECK((lstat_of(fs.path("suid")).st_mode & 07777) == 0755);
}

TEST_CASE("truncate and ftruncate", "[attr][truncate]") {
  MountedFs fs;
  const std::string p = fs.path("t");
  std::string data = random_bytes(3 * 4096 + 100, 7);
  write_file(p, data);

  struct timespec old[2] = {{1000, 0}, {1000, 0}};
  SYS(::utimensat(AT_FDCWD, p.c_str(), old, 0));
  const struct stat before = lstat_of(p);
  tick();

  // Shrink to an unaligned size.
  SYS(::truncate(p.c_str(), 5000));
  struct stat st = lstat_of(p);
  CHECK(st.st_size == 5000);
  CHECK(st.st_mtim.tv_sec > 1000);
  CHECK(ns_of(st.st_ctim) > ns_of(before.st_ctim));
  CHECK_BYTES(read_file(p), data.substr(0, 5000));

  // Grow again: the cut-off bytes must come back as zeros, not as old data.
  SYS(::truncate(p.c_str(), 3 * 4096 + 100));
  CHECK_BYTES(read_file(p), data.substr(0, 5000) + std::string(3 * 4096 + 100 - 5000, '\0'));

  // Grow far (sparse) and read the new part.
  SYS(::truncate(p.c_str(), off_t(5) << 30));
  CHECK(lstat_of(p).st_size == off_t(5) << 30);
  {
    Fd fd = open_fd(p, O_RDONLY);
    CHECK_BYTES(pread_all(fd, 4096, (off_t(9) << 29)), std::string(4096, '\0'));
    CHECK_BYTES(pread_all(fd, 100, 0), data.substr(0, 100));
  }
  SYS(::truncate(p.c_str(), 0));
  CHECK(lstat_of(p).st_size == 0);
  CHECK(read_file(p).empty());

  // ftruncate on data that may still sit in the page cache.
  {
    Fd fd = open_fd(p, O_RDWR);
    pwrite_all(fd, std::string(8192, 'x'), 0);
    SYS(::ftruncate(fd, 100));
    SYS(::ftruncate(fd, 8192));
    CHECK_BYTES(pread_all(fd, 8192, 0), std::string(100, 'x') + std::string(8092, '\0'));
    SYS(::fsync(fd));
    SYS(::ftruncate(fd, 4097));
    SYS(::fsync(fd));
    SYS(::ftruncate(fd, 10000));
    CHECK(pread_all(fd, 10000, 0) ==
          std::string(100, 'x') + std::string(9900, '\0'));
    CHECK(fstat_of(fd).st_size == 10000);
  }
  CHECK_BYTES(read_file(p), std::string(100, 'x') + std::string(9900, '\0'));

  SYS(::mkdir(fs.path("d").c_str(), 0755));
  CHECK_ERRNO(::truncate(fs.path("d").c_str(), 0), EISDIR);
  CHECK_ERRNO(::truncate(p.c_str(), -1), EINVAL);
  CHECK_ERRNO(::truncate(fs.path("missing").c_str(), 0), ENOENT);
  Fd ro = open_fd(p, O_RDONLY);
  CHECK_ERRNO(::ftruncate(ro, 0), EINVAL);
}

TEST_CASE("utimensat stores nanoseconds", "[attr][times]") {
  MountedFs fs;
  write_file(fs.path("f"), "x");
  SYS(::mkdir(fs.path("d").c_str(), 0755));
  SYS(::symlink("f", fs.path("l").c_str()));

  struct timespec ts[2] = {{1000, 123456789}, {2000, 987654321}};
  SYS(::utimensat(AT_FDCWD, fs.path("f").c_str(), ts, 0));
  struct stat st = lstat_of(fs.path("f"));
  CHECK(st.st_atim.tv_sec == 1000);
  CHECK(st.st_atim.tv_nsec == 123456789);
  CHECK(st.st_mtim.tv_sec == 2000);
  CHECK(st.st_mtim.tv_nsec == 987654321);

  // Beyond 2038, and the last nanosecond of a second.
  struct timespec far[2] = {{4102444800, 1}, {4102444800, 999999999}};
  SYS(::utimensat(AT_FDCWD, fs.path("d").c_str(), far, 0));
  st = lstat_of(fs.path("d"));
  CHECK(st.st_atim.tv_sec == 4102444800);
  CHECK(st.st_atim.tv_nsec == 1);
  CHECK(st.st_mtim.tv_sec == 4102444800);
  CHECK(st.st_mtim.tv_nsec == 999999999);

  // On the symlink itself.
  struct timespec lts[2] = {{3000, 5}, {3001, 6}};
  SYS(::utimensat(AT_FDCWD, fs.path("l").c_str(), lts, AT_SYMLINK_NOFOLLOW));
  st = lstat_of(fs.path("l"));
  CHECK(st.st_mtim.tv_sec == 3001);
  CHECK(st.st_mtim.tv_nsec == 6);
  CHECK(lstat_of(fs.path("f")).st_mtim.tv_sec == 2000);

  // futimens on an open file.
  Fd fd = open_fd(fs.path("f"), O_RDONLY);
  struct timespec fts[2] = {{5000, 500}, {6000, 600}};
  SYS(::futimens(fd, fts));
  st = fstat_of(fd);
  CHECK(st.st_mtim.tv_sec == 6000);
  CHECK(st.st_mtim.tv_nsec == 600);
  CHECK(st.st_atim.tv_nsec == 500);

  struct timespec bad[2] = {{0, 1000000000}, {0, 0}};
  CHECK_ERRNO(::utimensat(AT_FDCWD, fs.path("f").c_str(), bad, 0), EINVAL);
}

TEST_CASE("UTIME_NOW and UTIME_OMIT", "[attr][times]") {
  MountedFs fs;
  const std::string p = fs.path("f");
  write_file(p, "x");
  struct timespec ts[2] = {{1000, 111}, {2000, 222}};
  SYS(::utimensat(AT_FDCWD, p.c_str(), ts, 0));
  const struct stat base = lstat_of(p);
  tick();

  // atime omitted, mtime now.
  struct timespec t1[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
  const time_t now = ::time(nullptr);
  SYS(::utimensat(AT_FDCWD, p.c_str(), t1, 0));
  struct stat st = lstat_of(p);
  CHECK(st.st_atim.tv_sec == 1000);
  CHECK(st.st_atim.tv_nsec == 111);
  CHECK(st.st_mtim.tv_sec >= now - 2);
  CHECK(st.st_mtim.tv_sec <= now + 2);
  CHECK(ns_of(st.st_ctim) > ns_of(base.st_ctim));

  // atime now, mtime omitted.
  struct timespec t2[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
  const struct stat mid = st;
  SYS(::utimensat(AT_FDCWD, p.c_str(), t2, 0));
  st = lstat_of(p);
  CHECK(st.st_atim.tv_sec >= now - 2);
  CHECK(ns_of(st.st_mtim) == ns_of(mid.st_mtim));

  // Both omitted: nothing changes, not even ctime.
  const struct stat before = lstat_of(p);
  tick();
  struct timespec t3[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
  SYS(::utimensat(AT_FDCWD, p.c_str(), t3, 0));
  st = lstat_of(p);
  CHECK(ns_of(st.st_atim) == ns_of(before.st_atim));
  CHECK(ns_of(st.st_mtim) == ns_of(before.st_mtim));
  CHECK(ns_of(st.st_ctim) == ns_of(before.st_ctim));

  // NULL times: both now.
  SYS(::utimensat(AT_FDCWD, p.c_str(), ts, 0));
  SYS(::utimensat(AT_FDCWD, p.c_str(), nullptr, 0));
  st = lstat_of(p);
  CHECK(st.st_atim.tv_sec >= now - 2);
  CHECK(st.st_mtim.tv_sec >= now - 2);
}

TEST_CASE("ctime follows every change", "[attr][times][ctime]") {
  MountedFs fs;
  const std::string p = fs.path("f");
  write_file(p, "0123456789");
  SYS(::mkdir(fs.path("d").c_str(), 0755));

  auto changes_ctime = [&](const std::string& what, const std::string& obj,
                           const std::function<void()>& op, bool changes_mtime) {
    INFO(what);
    const struct stat before = lstat_of(obj);
    tick();
    op();
    const struct stat after = lstat_of(obj);
    CHECK(ns_of(after.st_ctim) > ns_of(before.st_ctim));
    if (changes_mtime)
      CHECK(ns_of(after.st_mtim) > ns_of(before.st_mtim));
    else
      CHECK(ns_of(after.st_mtim) == ns_of(before.st_mtim));
  };
  changes_ctime("write", p, [&] {
    Fd fd = open_fd(p, O_WRONLY);
    pwrite_all(fd, "abc", 3);
  }, true);
  changes_ctime("truncate", p, [&] { SYS(::truncate(p.c_str(), 4)); }, true);
  changes_ctime("chmod", p, [&] { SYS(::chmod(p.c_str(), 0600)); }, false);
  changes_ctime("chown", p, [&] { SYS(::chown(p.c_str(), 12, 34)); }, false);
  changes_ctime("link", p, [&] { SYS(::link(p.c_str(), fs.path("g").c_str())); }, false);
  changes_ctime("unlink of another name", p, [&] { SYS(::unlink(fs.path("g").c_str())); }, false);
  changes_ctime("rename", p, [&] { SYS(::rename(p.c_str(), fs.path("f2").c_str())); SYS(::rename(fs.path("f2").c_str(), p.c_str())); }, false);
  changes_ctime("setxattr", p, [&] { set_xattr(p, "user.k", "v"); }, false);
  changes_ctime("removexattr", p, [&] { SYS(::removexattr(p.c_str(), "user.k")); }, false);
  changes_ctime("utimensat", p, [&] {
    struct timespec ts[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
    SYS(::utimensat(AT_FDCWD, p.c_str(), ts, 0));
  }, true);

  // Directories: entries added and removed change mtime and ctime.
  const std::string d = fs.path("d");
  changes_ctime("create in dir", d, [&] { write_file(d + "/x", ""); }, true);
  changes_ctime("mkdir in dir", d, [&] { SYS(::mkdir((d + "/sub").c_str(), 0755)); }, true);
  changes_ctime("symlink in dir", d, [&] { SYS(::symlink("x", (d + "/sl").c_str())); }, true);
  changes_ctime("mknod in dir", d, [&] { SYS(::mknod((d + "/fifo").c_str(), S_IFIFO | 0644, 0)); }, true);
  changes_ctime("link in dir", d, [&] { SYS(::link(p.c_str(), (d + "/hl").c_str())); }, true);
  changes_ctime("rename in dir", d, [&] { SYS(::rename((d + "/x").c_str(), (d + "/y").c_str())); }, true);
  changes_ctime("rename out of dir", d, [&] { SYS(::rename((d + "/y").c_str(), fs.path("y").c_str())); }, true);
  changes_ctime("unlink in dir", d, [&] { SYS(::unlink((d + "/sl").c_str())); }, true);
  changes_ctime("rmdir in dir", d, [&] { SYS(::rmdir((d + "/sub").c_str())); }, true);

  // Reading and stat do not change ctime or mtime.
  const struct stat before = lstat_of(p);
  tick();
  CHECK(read_file(p).size() == 4);
  list_dir(d);
  const struct stat after = lstat_of(p);
  CHECK(ns_of(after.st_ctim) == ns_of(before.st_ctim));
  CHECK(ns_of(after.st_mtim) == ns_of(before.st_mtim));
}

TEST_CASE("setgid directories pass their group on", "[attr][sgid]") {
  MountedFs fs;
  const std::string d = fs.path("shared");
  SYS(::mkdir(d.c_str(), 0775));
  SYS(::chown(d.c_str(), 0, 1234));
  SYS(::chmod(d.c_str(), 02775));

  SYS(::mkdir((d + "/sub").c_str(), 0755));
  struct stat st = lstat_of(d + "/sub");
  CHECK(st.st_gid == 1234);
  CHECK((st.st_mode & S_ISGID) != 0);
  write_file(d + "/file", "x", 0644);
  st = lstat_of(d + "/file");
  CHECK(st.st_gid == 1234);
  CHECK((st.st_mode & 07777) == 0644);
  SYS(::symlink("file", (d + "/sl").c_str()));
  CHECK(lstat_of(d + "/sl").st_gid == 1234);
  SYS(::mknod((d + "/fifo").c_str(), S_IFIFO | 0600, 0));
  CHECK(lstat_of(d + "/fifo").st_gid == 1234);
  // Without the bit, new entries get the creator's group.
  SYS(::chmod(d.c_str(), 0775));
  write_file(d + "/plain", "x");
  CHECK(lstat_of(d + "/plain").st_gid == 0);
}
