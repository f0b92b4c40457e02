// Lookup/stat, create/open/read/write, mknod, mkdir/rmdir, unlink, symlinks,
// hard links.
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>

#include <set>

#include "fixture.h"

using namespace dhfs_test;

namespace {

std::string link_target(const std::string& path) {
  std::string buf(8192, '\0');
  errno = 0;
  ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
  int e = errno;
  INFO("readlink " << path << " -> " << errname(n < 0 ? e : 0));
  REQUIRE(n >= 0);
  buf.resize(size_t(n));
  return buf;
}

}  // namespace

TEST_CASE("lookup and stat of files directories and symlinks", "[stat]") {
  MountedFs fs;
  const struct stat root = stat_of(fs.root());
  write_file(fs.path("f"), "hello world", 0640);
  SYS(::mkdir(fs.path("d").c_str(), 0751));
  SYS(::symlink("f", fs.path("l").c_str()));
  SYS(::symlink("missing", fs.path("dangling").c_str()));

  const struct stat f = lstat_of(fs.path("f"));
  CHECK(S_ISREG(f.st_mode));
  CHECK((f.st_mode & 07777) == 0640);
  CHECK(f.st_size == 11);
  CHECK(f.st_nlink == 1);
  CHECK(f.st_uid == 0);
  CHECK(f.st_gid == 0);
  CHECK(f.st_dev == root.st_dev);
  CHECK(f.st_ino != root.st_ino);

  const struct stat d = lstat_of(fs.path("d"));
  CHECK(S_ISDIR(d.st_mode));
  CHECK((d.st_mode & 07777) == 0751);
  CHECK(d.st_nlink == 2);
  CHECK(stat_of(fs.root()).st_nlink == root.st_nlink + 1);
  CHECK(stat_of(fs.path("d/.")).st_ino == d.st_ino);
  CHECK(stat_of(fs.path("d/..")).st_ino == root.st_ino);

  const struct stat l = lstat_of(fs.path("l"));
  CHECK(S_ISLNK(l.st_mode));
  CHECK((l.st_mode & 0777) == 0777);
  CHECK(l.st_size == 1);
  CHECK(stat_of(fs.path("l")).st_ino == f.st_ino);

  const struct stat dl = lstat_of(fs.path("dangling"));
  CHECK(S_ISLNK(dl.st_mode));
  CHECK(dl.st_size == 7);
  struct stat st {};
  CHECK_ERRNO(::stat(fs.path("dangling").c_str(), &st), ENOENT);

  std::set<ino_t> inos{root.st_ino, f.st_ino, d.st_ino, l.st_ino, dl.st_ino};
  CHECK(inos.size() == 5);

  CHECK_ERRNO(::stat(fs.path("nope").c_str(), &st), ENOENT);
  CHECK_ERRNO(::lstat(fs.path("d/nope").c_str(), &st), ENOENT);
  CHECK_ERRNO(::stat(fs.path("f/x").c_str(), &st), ENOTDIR);
  CHECK_ERRNO(::stat(fs.path("nope/x").c_str(), &st), ENOENT);

  SYS(::symlink("loop2", fs.path("loop1").c_str()));
  SYS(::symlink("loop1", fs.path("loop2").c_str()));
  CHECK_ERRNO(::stat(fs.path("loop1").c_str(), &st), ELOOP);

  // fstatat relative to a directory fd, with and without following.
  Fd dir = open_fd(fs.root(), O_RDONLY | O_DIRECTORY);
  SYS(::fstatat(dir, "l", &st, AT_SYMLINK_NOFOLLOW));
  CHECK(S_ISLNK(st.st_mode));
  SYS(::fstatat(dir, "l", &st, 0));
  CHECK(st.st_ino == f.st_ino);
  CHECK_ERRNO(::fstatat(dir, "nope", &st, 0), ENOENT);

  // A negative lookup must not stick once the name exists.
  write_file(fs.path("nope"), "now here");
  CHECK(stat_of(fs.path("nope")).st_size == 8);
}

TEST_CASE("create then write and read back", "[io]") {
  MountedFs fs;
  const std::string p = fs.path("file");
  Fd fd(SYS(::open(p.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600)));
  struct stat st = fstat_of(fd);
  CHECK(st.st_size == 0);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(S_ISREG(st.st_mode));

  std::string data = random_bytes(3 * 1024 * 1024 + 12345, 1);
  // Sequential write(2) calls of an odd size.
  for (size_t off = 0; off < data.size();) {
    size_t n = std::min<size_t>(100003, data.size() - off);
    ssize_t w = SYS(::write(fd, data.data() + off, n));
    REQUIRE(size_t(w) == n);
    off += n;
  }
  CHECK(fstat_of(fd).st_size == off_t(data.size()));
  CHECK_SYS(::lseek(fd, 0, SEEK_CUR), ==, off_t(data.size()));
  CHECK_BYTES(pread_all(fd, data.size(), 0), data);
  CHECK_BYTES(pread_all(fd, 777, 1048575), data.substr(1048575, 777));
  CHECK(pread_all(fd, 100, off_t(data.size())).empty());
  CHECK_BYTES(pread_all(fd, 100, off_t(data.size()) - 10), data.substr(data.size() - 10));

  // read(2) through the file offset.
  SYS(::lseek(fd, 4000, SEEK_SET));
  std::string buf(10000, '\0');
  CHECK_SYS(::read(fd, buf.data(), buf.size()), ==, 10000);
  CHECK(buf == data.substr(4000, 10000));

  // A second open file description sees the data.
  {
    Fd ro = open_fd(p, O_RDONLY);
    CHECK_BYTES(pread_all(ro, data.size(), 0), data);
  }

  // Overwrite in the middle, across a block boundary.
  std::string patch = random_bytes(5000, 2);
  pwrite_all(fd, patch, 4090);
  data.replace(4090, patch.size(), patch);
  // Write beyond EOF: the gap reads as zeros.
  std::string tail = "tail";
  const off_t gap_start = off_t(data.size());
  pwrite_all(fd, tail, gap_start + 10000);
  data += std::string(10000, '\0') + tail;
  CHECK(fstat_of(fd).st_size == off_t(data.size()));
  fd.close_checked();
  CHECK_BYTES(read_file(p), data);
}

TEST_CASE("O_APPEND writes always go to the end", "[io]") {
  MountedFs fs;
  const std::string p = fs.path("log");
  write_file(p, "base:");
  Fd a = open_fd(p, O_WRONLY | O_APPEND);
  Fd b = open_fd(p, O_WRONLY | O_APPEND);
  SYS(::lseek(a, 0, SEEK_SET));
  CHECK_SYS(::write(a, "one,", 4), ==, 4);
  CHECK_SYS(::lseek(a, 0, SEEK_CUR), ==, 9);
  CHECK_SYS(::write(b, "two,", 4), ==, 4);
  CHECK_SYS(::write(a, "three", 5), ==, 5);
  CHECK(fstat_of(a).st_size == 18);
  a.close_checked();
  b.close_checked();
  CHECK_BYTES(read_file(p), "base:one,two,three");
}

TEST_CASE("O_TRUNC empties a file and updates mtime", "[io]") {
  MountedFs fs;
  const std::string p = fs.path("t");
  write_file(p, random_bytes(100000, 3));
  struct timespec old[2] = {{1000, 0}, {1000, 0}};
  SYS(::utimensat(AT_FDCWD, p.c_str(), old, 0));
  Fd fd = open_fd(p, O_RDWR | O_TRUNC);
  struct stat st = fstat_of(fd);
  CHECK(st.st_size == 0);
  CHECK(st.st_mtim.tv_sec > 1000);
  CHECK(pread_all(fd, 10, 0).empty());
  pwrite_all(fd, "0123456789", 0);
  fd.close_checked();
  // No stale data from the old contents.
  CHECK_BYTES(read_file(p), "0123456789");
  CHECK(stat_of(p).st_size == 10);
}

TEST_CASE("open flags and their errors", "[io]") {
  MountedFs fs;
  write_file(fs.path("f"), "content", 0640);
  SYS(::mkdir(fs.path("d").c_str(), 0755));
  SYS(::symlink("target-missing", fs.path("dangling").c_str()));
  SYS(::symlink("f", fs.path("lf").c_str()));
  auto open_ = [&](const char* rel, int flags) {
    int fd = ::open(fs.path(rel).c_str(), flags | O_CLOEXEC, 0600);
    int e = errno;
    if (fd >= 0) ::close(fd);
    errno = e;
    return fd < 0 ? -1 : 0;
  };
  CHECK_ERRNO(open_("f", O_CREAT | O_EXCL | O_WRONLY), EEXIST);
  CHECK_ERRNO(open_("d", O_CREAT | O_EXCL | O_WRONLY), EEXIST);
  CHECK_ERRNO(open_("dangling", O_CREAT | O_EXCL | O_WRONLY), EEXIST);
  CHECK_FALSE(exists(fs.path("target-missing")));
  CHECK_ERRNO(open_("missing", O_RDONLY), ENOENT);
  CHECK_ERRNO(open_("nodir/x", O_CREAT | O_WRONLY), ENOENT);
  CHECK_ERRNO(open_("f/x", O_CREAT | O_WRONLY), ENOTDIR);
  CHECK_ERRNO(open_("d", O_WRONLY), EISDIR);
  CHECK_ERRNO(open_("d", O_RDWR), EISDIR);
  CHECK_ERRNO(open_("d", O_CREAT | O_WRONLY), EISDIR);
  CHECK_ERRNO(open_("f", O_RDONLY | O_DIRECTORY), ENOTDIR);
  CHECK_ERRNO(open_("lf", O_RDONLY | O_NOFOLLOW), ELOOP);
  CHECK_BYTES(read_file(fs.path("lf")), "content");

  // O_CREAT without O_EXCL on an existing file: no truncation, mode kept.
  {
    Fd fd = open_fd(fs.path("f"), O_CREAT | O_RDWR, 0600);
    CHECK(fstat_of(fd).st_size == 7);
    CHECK((fstat_of(fd).st_mode & 07777) == 0640);
  }
  // O_CREAT through a dangling symlink creates the target.
  {
    Fd fd = open_fd(fs.path("dangling"), O_CREAT | O_WRONLY, 0604);
    CHECK(exists(fs.path("target-missing")));
    CHECK((lstat_of(fs.path("target-missing")).st_mode & 07777) == 0604);
  }

  char c;
  Fd wr = open_fd(fs.path("f"), O_WRONLY);
  CHECK_ERRNO(::read(wr, &c, 1), EBADF);
  Fd rd = open_fd(fs.path("f"), O_RDONLY);
  CHECK_ERRNO(::write(rd, "x", 1), EBADF);
  Fd dir = open_fd(fs.path("d"), O_RDONLY | O_DIRECTORY);
  CHECK_ERRNO(::read(dir, &c, 1), EISDIR);
}

TEST_CASE("mknod creates every file type", "[mknod]") {
  MountedFs fs;
  SYS(::mknod(fs.path("reg").c_str(), S_IFREG | 0640, 0));
  SYS(::mknod(fs.path("fifo").c_str(), S_IFIFO | 0600, 0));
  SYS(::mknod(fs.path("sock").c_str(), S_IFSOCK | 0755, 0));
  SYS(::mknod(fs.path("null").c_str(), S_IFCHR | 0666, makedev(1, 3)));
  SYS(::mknod(fs.path("bigchr").c_str(), S_IFCHR | 0600, makedev(259, 123456)));
  SYS(::mknod(fs.path("blk").c_str(), S_IFBLK | 0660, makedev(7, 200)));

  struct stat st = lstat_of(fs.path("reg"));
  CHECK(S_ISREG(st.st_mode));
  CHECK((st.st_mode & 07777) == 0640);
  CHECK(st.st_size == 0);
  st = lstat_of(fs.path("fifo"));
  CHECK(S_ISFIFO(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);
  st = lstat_of(fs.path("sock"));
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0755);
  st = lstat_of(fs.path("null"));
  CHECK(S_ISCHR(st.st_mode));
  CHECK((st.st_mode & 07777) == 0666);
  CHECK(major(st.st_rdev) == 1);
  CHECK(minor(st.st_rdev) == 3);
  st = lstat_of(fs.path("bigchr"));
  CHECK(S_ISCHR(st.st_mode));
  CHECK(major(st.st_rdev) == 259);
  CHECK(minor(st.st_rdev) == 123456);
  st = lstat_of(fs.path("blk"));
  CHECK(S_ISBLK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0660);
  CHECK(major(st.st_rdev) == 7);
  CHECK(minor(st.st_rdev) == 200);

  CHECK_ERRNO(::mknod(fs.path("fifo").c_str(), S_IFIFO | 0600, 0), EEXIST);
  CHECK_ERRNO(::mknod(fs.path("nodir/x").c_str(), S_IFIFO | 0600, 0), ENOENT);
  CHECK(list_names(fs.root()) ==
        std::vector<std::string>{"bigchr", "blk", "fifo", "null", "reg", "sock"});

  // The fifo works as a fifo.
  {
    Fd f = open_fd(fs.path("fifo"), O_RDWR | O_NONBLOCK);
    CHECK_SYS(::write(f, "ping", 4), ==, 4);
    char buf[8] = {};
    CHECK_SYS(::read(f, buf, sizeof buf), ==, 4);
    CHECK(std::string(buf, 4) == "ping");
  }

  // bind() makes a socket node through the filesystem, and it can be connected to.
  SYS(::mkdir(fs.path("s").c_str(), 0755));
  const std::string sdir = fs.path("s");
  std::string r = in_child([&]() -> std::string {
    if (::chdir(sdir.c_str()) != 0) return "chdir " + errname(errno);
    int srv = ::socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, "listener");
    if (::bind(srv, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return "bind " + errname(errno);
    if (::listen(srv, 1) != 0) return "listen " + errname(errno);
    int cli = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (::connect(cli, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
      return "connect " + errname(errno);
    int acc = ::accept(srv, nullptr, nullptr);
    if (acc < 0) return "accept " + errname(errno);
    if (::write(cli, "hello", 5) != 5) return "write " + errname(errno);
    char buf[8] = {};
    if (::read(acc, buf, sizeof buf) != 5) return "read " + errname(errno);
    return std::string(buf, 5);
  });
  CHECK(r == "hello");
  CHECK(S_ISSOCK(lstat_of(fs.path("s/listener")).st_mode));
}

TEST_CASE("mkdir and rmdir", "[dir]") {
  MountedFs fs;
  SYS(::mkdir(fs.path("p").c_str(), 0755));
  const std::string p = fs.path("p");
  SYS(::mkdir((p + "/d").c_str(), 0750));
  struct stat d = lstat_of(p + "/d");
  CHECK(S_ISDIR(d.st_mode));
  CHECK((d.st_mode & 07777) == 0750);
  CHECK(d.st_nlink == 2);
  CHECK(lstat_of(p).st_nlink == 3);

  // An empty directory lists exactly "." and "..".
  auto entries = list_dir(p + "/d", true);
  std::vector<std::string> names;
  for (auto& e : entries) names.push_back(e.name);
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{".", ".."});

  SYS(::mkdir((p + "/sticky").c_str(), 01777));
  CHECK((lstat_of(p + "/sticky").st_mode & 07777) == 01777);

  write_file(p + "/file", "x");
  SYS(::symlink("nowhere", (p + "/link").c_str()));
  SYS(::symlink("d", (p + "/dirlink").c_str()));
  CHECK_ERRNO(::mkdir((p + "/d").c_str(), 0755), EEXIST);
  CHECK_ERRNO(::mkdir((p + "/file").c_str(), 0755), EEXIST);
  CHECK_ERRNO(::mkdir((p + "/link").c_str(), 0755), EEXIST);
  CHECK_ERRNO(::mkdir((p + "/missing/x").c_str(), 0755), ENOENT);
  CHECK_ERRNO(::mkdir((p + "/file/x").c_str(), 0755), ENOTDIR);

  SYS(::mkdir((p + "/d/sub").c_str(), 0755));
  CHECK(lstat_of(p + "/d").st_nlink == 3);
  CHECK_ERRNO(::rmdir((p + "/d").c_str()), ENOTEMPTY);
  SYS(::rmdir((p + "/d/sub").c_str()));
  CHECK(lstat_of(p + "/d").st_nlink == 2);
  write_file(p + "/d/only-a-file", "");
  CHECK_ERRNO(::rmdir((p + "/d").c_str()), ENOTEMPTY);
  SYS(::unlink((p + "/d/only-a-file").c_str()));

  CHECK_ERRNO(::rmdir((p + "/file").c_str()), ENOTDIR);
  CHECK_ERRNO(::rmdir((p + "/dirlink").c_str()), ENOTDIR);
  CHECK_ERRNO(::rmdir((p + "/missing").c_str()), ENOENT);
  CHECK_ERRNO(::rmdir((p + "/d/.").c_str()), EINVAL);
  CHECK_ERRNO(::unlink((p + "/d").c_str()), EISDIR);

  SYS(::rmdir((p + "/d").c_str()));
  struct stat st {};
  CHECK_ERRNO(::lstat((p + "/d").c_str(), &st), ENOENT);
  CHECK(lstat_of(p).st_nlink == 3);  // only "sticky" is left
  SYS(::rmdir((p + "/sticky").c_str()));
  CHECK(lstat_of(p).st_nlink == 2);
  // The name can be used again, for anything.
  write_file(p + "/d", "now a file");
  CHECK(S_ISREG(lstat_of(p + "/d").st_mode));
}

TEST_CASE("unlink", "[unlink]") {
  MountedFs fs;
  write_file(fs.path("f"), "data");
  SYS(::symlink("f", fs.path("l").c_str()));
  SYS(::mknod(fs.path("fifo").c_str(), S_IFIFO | 0644, 0));
  SYS(::mknod(fs.path("chr").c_str(), S_IFCHR | 0644, makedev(1, 5)));
  struct stat st {};

  struct timespec old[2] = {{1000, 0}, {1000, 0}};
  SYS(::utimensat(AT_FDCWD, fs.root().c_str(), old, 0));
  const struct stat before = lstat_of(fs.root());
  tick();
  SYS(::unlink(fs.path("l").c_str()));
  CHECK_ERRNO(::lstat(fs.path("l").c_str(), &st), ENOENT);
  CHECK_BYTES(read_file(fs.path("f")), "data");  // the target stays
  const struct stat after = lstat_of(fs.root());
  CHECK(after.st_mtim.tv_sec > 1000);
  CHECK(ns_of(after.st_ctim) > ns_of(before.st_ctim));

  SYS(::unlink(fs.path("fifo").c_str()));
  SYS(::unlink(fs.path("chr").c_str()));
  SYS(::unlink(fs.path("f").c_str()));
  CHECK_ERRNO(::lstat(fs.path("f").c_str(), &st), ENOENT);
  CHECK_ERRNO(::unlink(fs.path("f").c_str()), ENOENT);
  CHECK_ERRNO(::unlink(fs.path("nodir/f").c_str()), ENOENT);
  write_file(fs.path("g"), "g");
  CHECK_ERRNO(::unlink(fs.path("g/x").c_str()), ENOTDIR);
  CHECK(list_names(fs.root()) == std::vector<std::string>{"g"});

  // A new file under a removed name is a new, empty file.
  Fd fd = open_fd(fs.path("f"), O_CREAT | O_EXCL | O_RDWR, 0644);
  CHECK(fstat_of(fd).st_size == 0);
}

TEST_CASE("symlink and readlink", "[symlink]") {
  MountedFs fs;
  write_file(fs.path("f"), "target content");
  SYS(::mkdir(fs.path("d").c_str(), 0755));
  write_file(fs.path("d/inner"), "inner");

  // Targets of many sizes, up to PATH_MAX - 1 bytes.
  for (size_t len : {size_t(1), size_t(60), size_t(61), size_t(100), size_t(1000), size_t(4095)}) {
    std::string target;
    while (target.size() < len) target += "../some-dir.name/";
    target.resize(len);
    if (target.back() == '/') target.back() = 'x';
    const std::string name = fs.path("link-" + std::to_string(len));
    SYS(::symlink(target.c_str(), name.c_str()));
    INFO("target length " << len);
    struct stat st = lstat_of(name);
    CHECK(S_ISLNK(st.st_mode));
    CHECK(st.st_size == off_t(len));
    CHECK(link_target(name) == target);
  }
  // readlink into a short buffer truncates silently.
  char small[10];
  CHECK_SYS(::readlink(fs.path("link-100").c_str(), small, sizeof small), ==, 10);
  CHECK(std::string(small, 10) == "../some-di");

  std::string too_long(4096, 'a');
  CHECK_ERRNO(::symlink(too_long.c_str(), fs.path("toolong").c_str()), ENAMETOOLONG);
  CHECK_ERRNO(::symlink("", fs.path("empty").c_str()), ENOENT);
  CHECK_ERRNO(::symlink("x", fs.path("f").c_str()), EEXIST);
  CHECK_ERRNO(::symlink("x", fs.path("d").c_str()), EEXIST);
  char buf[64];
  CHECK_ERRNO(::readlink(fs.path("f").c_str(), buf, sizeof buf), EINVAL);
  CHECK_ERRNO(::readlink(fs.path("missing").c_str(), buf, sizeof buf), ENOENT);

  // Relative, absolute and directory symlinks resolve.
  SYS(::symlink("../f", fs.path("d/up").c_str()));
  SYS(::symlink(fs.path("f").c_str(), fs.path("abs").c_str()));
  SYS(::symlink("d", fs.path("dl").c_str()));
  CHECK_BYTES(read_file(fs.path("d/up")), "target content");
  CHECK_BYTES(read_file(fs.path("abs")), "target content");
  CHECK_BYTES(read_file(fs.path("dl/inner")), "inner");
  CHECK(link_target(fs.path("abs")) == fs.path("f"));
  struct stat st = lstat_of(fs.path("d/up"));
  CHECK(st.st_uid == 0);
  CHECK(st.st_gid == 0);
}

TEST_CASE("hard links share one inode", "[link]") {
  MountedFs fs;
  SYS(::mkdir(fs.path("d").c_str(), 0755));
  write_file(fs.path("f"), "shared", 0640);
  const struct stat orig = lstat_of(fs.path("f"));
  tick();
  SYS(::link(fs.path("f").c_str(), fs.path("g").c_str()));
  SYS(::link(fs.path("g").c_str(), fs.path("d/h").c_str()));

  auto same_everywhere = [&](nlink_t nlink) {
    const struct stat f = lstat_of(fs.path("f"));
    for (const char* rel : {"g", "d/h"}) {
      INFO("name " << rel);
      const struct stat o = lstat_of(fs.path(rel));
      CHECK(o.st_ino == f.st_ino);
      CHECK(o.st_nlink == nlink);
      CHECK(o.st_mode == f.st_mode);
      CHECK(o.st_uid == f.st_uid);
      CHECK(o.st_gid == f.st_gid);
      CHECK(o.st_size == f.st_size);
      CHECK(ns_of(o.st_ctim) == ns_of(f.st_ctim));
      CHECK(ns_of(o.st_mtim) == ns_of(f.st_mtim));
    }
    CHECK(f.st_nlink == nlink);
    return f;
  };
  struct stat s = same_everywhere(3);
  CHECK(s.st_ino == orig.st_ino);
  CHECK(ns_of(s.st_ctim) > ns_of(orig.st_ctim));  // link changes ctime

  tick();
  SYS(::chmod(fs.path("g").c_str(), 0604));
  struct stat s2 = same_everywhere(3);
  CHECK((s2.st_mode & 07777) == 0604);
  CHECK(ns_of(s2.st_ctim) > ns_of(s.st_ctim));

  SYS(::chown(fs.path("d/h").c_str(), 1000, 2000));
  s2 = same_everywhere(3);
  CHECK(s2.st_uid == 1000);
  CHECK(s2.st_gid == 2000);

  // Data written through one name is read through the others.
  {
    Fd fd = open_fd(fs.path("d/h"), O_WRONLY | O_APPEND);
    pwrite_all(fd, "+more", 0);
  }
  CHECK_BYTES(read_file(fs.path("f")), "shared+more");
  CHECK_BYTES(read_file(fs.path("g")), "shared+more");
  same_everywhere(3);

  tick();
  const struct stat before_unlink = lstat_of(fs.path("g"));
  SYS(::unlink(fs.path("f").c_str()));
  const struct stat g = lstat_of(fs.path("g"));
  CHECK(g.st_nlink == 2);
  CHECK(lstat_of(fs.path("d/h")).st_nlink == 2);
  CHECK(ns_of(g.st_ctim) > ns_of(before_unlink.st_ctim));  // unlink changes ctime too
  CHECK_BYTES(read_file(fs.path("d/h")), "shared+more");

  // readdir reports the same inode number for every name.
  for (auto& e : list_dir(fs.path("d")))
    if (e.name == "h") CHECK(e.ino == g.st_ino);

  CHECK_ERRNO(::link(fs.path("g").c_str(), fs.path("d/h").c_str()), EEXIST);
  CHECK_ERRNO(::link(fs.path("d").c_str(), fs.path("d2").c_str()), EPERM);
  CHECK_ERRNO(::link(fs.path("missing").c_str(), fs.path("x").c_str()), ENOENT);
  CHECK_ERRNO(::link(fs.path("g").c_str(), fs.path("nodir/x").c_str()), ENOENT);

  // linkat without AT_SYMLINK_FOLLOW links the symlink itself.
  SYS(::symlink("g", fs.path("sl").c_str()));
  SYS(::linkat(AT_FDCWD, fs.path("sl").c_str(), AT_FDCWD, fs.path("sl2").c_str(), 0));
  struct stat sl = lstat_of(fs.path("sl2"));
  CHECK(S_ISLNK(sl.st_mode));
  CHECK(sl.st_ino == lstat_of(fs.path("sl")).st_ino);
  CHECK(sl.st_nlink == 2);
  SYS(::linkat(AT_FDCWD, fs.path("sl").c_str(), AT_FDCWD, fs.path("g3").c_str(), AT_SYMLINK_FOLLOW));
  CHECK(lstat_of(fs.path("g3")).st_ino == g.st_ino);
  CHECK(lstat_of(fs.path("g")).st_nlink == 3);

  // The last name keeps the data alive.
  SYS(::unlink(fs.path("g").c_str()));
  SYS(::unlink(fs.path("g3").c_str()));
  CHECK(lstat_of(fs.path("d/h")).st_nlink == 1);
  CHECK_BYTES(read_file(fs.path("d/h")), "shared+more");
}
