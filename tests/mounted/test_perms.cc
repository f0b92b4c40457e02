// Permission checks for unprivileged users (children running as uid/gid 65534),
// setuid/setgid clearing, execution.
#include <fmt/format.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include "fixture.h"

using namespace dhfs_test;

namespace {

std::string open_result(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  std::string r = result_of(fd);
  if (fd >= 0) ::close(fd);
  return r;
}

std::string stat_result(const std::string& path) {
  struct stat st {};
  return result_of(::lstat(path.c_str(), &st));
}

std::string opendir_result(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  std::string r = d ? "ok" : errname(errno);
  if (d) ::closedir(d);
  return r;
}

// Writes to a file as the current (unprivileged) user.
std::string write_result(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return "open " + errname(errno);
  ssize_t n = ::write(fd, "w", 1);
  std::string r = n == 1 ? "ok" : "write " + errname(errno);
  ::close(fd);
  return r;
}

}  // namespace

TEST_CASE("a 0700 directory keeps other users out", "[perms]") {
  MountedFs fs;
  const std::string d = fs.path("private");
  SYS(::mkdir(d.c_str(), 0700));
  write_file(d + "/secret", "secret", 0644);
  CHECK(in_child([&] { return stat_result(d + "/secret"); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return open_result(d + "/secret", O_RDONLY); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return open_result(d + "/new", O_CREAT | O_WRONLY); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return opendir_result(d); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return stat_result(d); }, nobody()) == "ok");
  CHECK_FALSE(exists(d + "/new"));

  // Search but no read permission: known names work, listing does not.
  SYS(::chmod(d.c_str(), 0711));
  CHECK(in_child([&] { return stat_result(d + "/secret"); }, nobody()) == "ok");
  CHECK(in_child([&] { return open_result(d + "/secret", O_RDONLY); }, nobody()) == "ok");
  CHECK(in_child([&] { return opendir_result(d); }, nobody()) == "EACCES");
  // Read but no search permission: listing works, lookups do not.
  SYS(::chmod(d.c_str(), 0744));
  CHECK(in_child([&] { return opendir_result(d); }, nobody()) == "ok");
  CHECK(in_child([&] { return stat_result(d + "/secret"); }, nobody()) == "EACCES");
  // The owner passes.
  SYS(::chown(d.c_str(), 65534, 65534));
  SYS(::chmod(d.c_str(), 0700));
  CHECK(in_child([&] { return open_result(d + "/secret", O_RDONLY); }, nobody()) == "ok");
  CHECK(in_child([&] { return open_result(d + "/mine", O_CREAT | O_WRONLY); }, nobody()) == "ok");
  struct stat st = lstat_of(d + "/mine");
  CHECK(st.st_uid == 65534);
  CHECK(st.st_gid == 65534);
}

TEST_CASE("read-only files refuse writes to users but not to root", "[perms]") {
  MountedFs fs;
  SYS(::chmod(fs.root().c_str(), 0777));
  write_file(fs.path("ro-root"), "root's", 0444);
  write_file(fs.path("ro-own"), "nobody's", 0444);
  SYS(::chown(fs.path("ro-own").c_str(), 65534, 65534));

  CHECK(in_child([&] { return open_result(fs.path("ro-root"), O_WRONLY); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return open_result(fs.path("ro-root"), O_RDWR); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return open_result(fs.path("ro-root"), O_WRONLY | O_TRUNC); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return result_of(::truncate(fs.path("ro-root").c_str(), 0)); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return open_result(fs.path("ro-root"), O_RDONLY); }, nobody()) == "ok");
  // The owner is refused too, until they chmod.
  CHECK(in_child([&] { return open_result(fs.path("ro-own"), O_WRONLY); }, nobody()) == "EACCES");
  CHECK(in_child([&]() -> std::string {
    if (::chmod(fs.path("ro-own").c_str(), 0644) != 0) return "chmod " + errname(errno);
    return write_result(fs.path("ro-own"));
  }, nobody()) == "ok");
  CHECK_BYTES(read_file(fs.path("ro-root")), "root's");
  CHECK_BYTES(read_file(fs.path("ro-own")), "wobody's");

  // Root overrides the mode bits.
  {
    Fd fd = open_fd(fs.path("ro-root"), O_WRONLY);
    pwrite_all(fd, "R", 0);
  }
  CHECK_BYTES(read_file(fs.path("ro-root")), "Root's");

  // access(2) tells the same story.
  CHECK(in_child([&] { return result_of(::access(fs.path("ro-root").c_str(), W_OK)); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return result_of(::access(fs.path("ro-root").c_str(), R_OK)); }, nobody()) == "ok");
  CHECK(in_child([&] { return result_of(::access(fs.path("ro-root").c_str(), X_OK)); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return result_of(::access(fs.path("missing").c_str(), F_OK)); }, nobody()) == "ENOENT");
}

TEST_CASE("group and other permission classes", "[perms]") {
  MountedFs fs;
  write_file(fs.path("group-read"), "g", 0640);
  SYS(::chown(fs.path("group-read").c_str(), 0, 65534));
  write_file(fs.path("supp"), "s", 0060);
  SYS(::chown(fs.path("supp").c_str(), 0, 4242));
  write_file(fs.path("owner-none"), "o", 0077);
  SYS(::chown(fs.path("owner-none").c_str(), 65534, 65534));

  CHECK(in_child([&] { return open_result(fs.path("group-read"), O_RDONLY); }, nobody()) == "ok");
  CHECK(in_child([&] { return open_result(fs.path("group-read"), O_WRONLY); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return open_result(fs.path("supp"), O_RDWR); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return open_result(fs.path("supp"), O_RDWR); }, Creds{65534, 65534, {4242}}) == "ok");
  // The owner class is used for the owner even if group/other would allow more.
  CHECK(in_child([&] { return open_result(fs.path("owner-none"), O_RDONLY); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return open_result(fs.path("owner-none"), O_RDONLY); }, Creds{1000, 65534, {}}) == "ok");
}

TEST_CASE("a sticky directory protects other users' files", "[perms][sticky]") {
  MountedFs fs;
  const std::string t = fs.path("tmp");
  SYS(::mkdir(t.c_str(), 0777));
  SYS(::chmod(t.c_str(), 01777));
  write_file(t + "/roots", "r", 0666);
  write_file(t + "/other-user", "o", 0666);
  SYS(::chown((t + "/other-user").c_str(), 65533, 65533));
  SYS(::mkdir((t + "/other-dir").c_str(), 0777));
  SYS(::chown((t + "/other-dir").c_str(), 65533, 65533));

  CHECK(in_child([&] { return result_of(::unlink((t + "/roots").c_str())); }, nobody()) == "EPERM");
  CHECK(in_child([&] { return result_of(::unlink((t + "/other-user").c_str())); }, nobody()) == "EPERM");
  CHECK(in_child([&] { return result_of(::rmdir((t + "/other-dir").c_str())); }, nobody()) == "EPERM");
  CHECK(in_child([&] { return result_of(::rename((t + "/roots").c_str(), (t + "/stolen").c_str())); }, nobody()) == "EPERM");
  // Writing is still governed by the mode bits.
  CHECK(in_child([&] { return write_result(t + "/other-user"); }, nobody()) == "ok");
  // Own files can be removed and renamed.
  CHECK(in_child([&]() -> std::string {
    int fd = ::open((t + "/mine").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0) return "create " + errname(errno);
    ::close(fd);
    if (::rename((t + "/mine").c_str(), (t + "/mine2").c_str()) != 0) return "rename " + errname(errno);
    return result_of(::unlink((t + "/mine2").c_str()));
  }, nobody()) == "ok");
  CHECK(exists(t + "/roots"));
  CHECK(exists(t + "/other-user"));
  CHECK(exists(t + "/other-dir"));

  // Without the sticky bit the same user may remove them.
  SYS(::chmod(t.c_str(), 0777));
  CHECK(in_child([&] { return result_of(::unlink((t + "/other-user").c_str())); }, nobody()) == "ok");
}

TEST_CASE("only the owner changes mode and owner and times", "[perms]") {
  MountedFs fs;
  write_file(fs.path("f"), "x", 0666);
  write_file(fs.path("own"), "x", 0644);
  SYS(::chown(fs.path("own").c_str(), 65534, 65534));

  CHECK(in_child([&] { return result_of(::chmod(fs.path("f").c_str(), 0777)); }, nobody()) == "EPERM");
  CHECK(in_child([&] { return result_of(::chown(fs.path("f").c_str(), 65534, 65534)); }, nobody()) == "EPERM");
  CHECK(in_child([&] { return result_of(::chown(fs.path("own").c_str(), 0, uid_t(-1))); }, nobody()) == "EPERM");
  // The owner may change the group only to a group they are in.
  CHECK(in_child([&] { return result_of(::chown(fs.path("own").c_str(), uid_t(-1), 0)); }, nobody()) == "EPERM");
  CHECK(in_child([&] { return result_of(::chown(fs.path("own").c_str(), uid_t(-1), 4242)); },
                 Creds{65534, 65534, {4242}}) == "ok");
  CHECK(lstat_of(fs.path("own")).st_gid == 4242);
  CHECK(in_child([&] { return result_of(::chmod(fs.path("own").c_str(), 0600)); }, nobody()) == "ok");
  CHECK((lstat_of(fs.path("own")).st_mode & 07777) == 0600);

  // Explicit times need ownership, "now" only needs write access.
  struct timespec ts[2] = {{1000, 0}, {1000, 0}};
  CHECK(in_child([&] { return result_of(::utimensat(AT_FDCWD, fs.path("f").c_str(), ts, 0)); }, nobody()) == "EPERM");
  CHECK(in_child([&] { return result_of(::utimensat(AT_FDCWD, fs.path("f").c_str(), nullptr, 0)); }, nobody()) == "ok");
  SYS(::chmod(fs.path("f").c_str(), 0644));
  CHECK(in_child([&] { return result_of(::utimensat(AT_FDCWD, fs.path("f").c_str(), nullptr, 0)); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return result_of(::utimensat(AT_FDCWD, fs.path("own").c_str(), ts, 0)); }, nobody()) == "ok");
  CHECK(lstat_of(fs.path("own")).st_mtim.tv_sec == 1000);
  CHECK((lstat_of(fs.path("f")).st_mode & 07777) == 0644);
  CHECK(lstat_of(fs.path("f")).st_uid == 0);

  // xattrs: trusted.* is for root only; user.* follows write permission.
  CHECK(in_child([&] { return result_of(::setxattr(fs.path("own").c_str(), "trusted.x", "1", 1, 0)); }, nobody()) == "EPERM");
  CHECK(in_child([&] { return result_of(::setxattr(fs.path("own").c_str(), "user.x", "1", 1, 0)); }, nobody()) == "ok");
  CHECK(in_child([&] { return result_of(::setxattr(fs.path("f").c_str(), "user.x", "1", 1, 0)); }, nobody()) == "EACCES");
}

TEST_CASE("directory write permission governs create and unlink and rename", "[perms]") {
  MountedFs fs;
  const std::string d = fs.path("ro-dir");
  SYS(::mkdir(d.c_str(), 0755));
  write_file(d + "/f", "x", 0666);
  SYS(::mkdir(fs.path("open").c_str(), 0777));
  CHECK(in_child([&] { return open_result(d + "/new", O_CREAT | O_WRONLY); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return result_of(::mkdir((d + "/sub").c_str(), 0755)); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return result_of(::unlink((d + "/f").c_str())); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return result_of(::rename((d + "/f").c_str(), fs.path("open/f").c_str())); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return result_of(::symlink("x", (d + "/sl").c_str())); }, nobody()) == "EACCES");
  CHECK(in_child([&] { return result_of(::link((d + "/f").c_str(), fs.path("open/hl").c_str())); }, nobody()) == "ok");
  CHECK(in_child([&] { return write_result(d + "/f"); }, nobody()) == "ok");
  CHECK(list_names(d) == std::vector<std::string>{"f"});
}

TEST_CASE("setuid and setgid are cleared when an unprivileged user writes", "[perms][suid]") {
  MountedFs fs;
  SYS(::chmod(fs.root().c_str(), 0777));
  // Owned by the writer: the writer has no CAP_FSETID, so the bits go.
  write_file(fs.path("own"), "#!/bin/sh\n", 0755);
  SYS(::chown(fs.path("own").c_str(), 65534, 65534));
  SYS(::chmod(fs.path("own").c_str(), 06755));
  REQUIRE((lstat_of(fs.path("own")).st_mode & 07777) == 06755);
  CHECK(in_child([&] { return write_result(fs.path("own")); }, nobody()) == "ok");
  CHECK((lstat_of(fs.path("own")).st_mode & 07777) == 0755);

  // Written by a non-owner through world write permission.
  write_file(fs.path("world"), "#!/bin/sh\n", 0777);
  SYS(::chmod(fs.path("world").c_str(), 06777));
  CHECK(in_child([&] { return write_result(fs.path("world")); }, nobody()) == "ok");
  CHECK((lstat_of(fs.path("world")).st_mode & 07777) == 0777);

  // Truncation by an unprivileged user clears them as well.
  write_file(fs.path("trunc"), "#!/bin/sh\n", 0777);
  SYS(::chmod(fs.path("trunc").c_str(), 04777));
  CHECK(in_child([&] { return result_of(::truncate(fs.path("trunc").c_str(), 1)); }, nobody()) == "ok");
  CHECK((lstat_of(fs.path("trunc")).st_mode & 07777) == 0777);

  // So does an O_TRUNC open by an unprivileged user.
  write_file(fs.path("otrunc"), "#!/bin/sh\n", 0777);
  SYS(::chmod(fs.path("otrunc").c_str(), 06777));
  CHECK(in_child([&] { return open_result(fs.path("otrunc"), O_WRONLY | O_TRUNC); }, nobody()) == "ok");
  CHECK((lstat_of(fs.path("otrunc")).st_mode & 07777) == 0777);
  CHECK(lstat_of(fs.path("otrunc")).st_size == 0);

  // Setgid without group execute stays for writers in the file's group and
  // goes for writers outside it.
  for (gid_t group : {65534u, 0u}) {
    const std::string f = fs.path(fmt::format("nogx-{}", group));
    write_file(f, "data\n", 0666);
    SYS(::chown(f.c_str(), 0, group));
    SYS(::chmod(f.c_str(), 02666));
    CHECK(in_child([&] { return write_result(f); }, nobody()) == "ok");
    CHECK((lstat_of(f).st_mode & 07777) == (group == 65534 ? 02666u : 0666u));
  }

  // Root (CAP_FSETID) keeps them.
  write_file(fs.path("roots"), "#!/bin/sh\n", 0755);
  SYS(::chmod(fs.path("roots").c_str(), 06755));
  {
    Fd fd = open_fd(fs.path("roots"), O_WRONLY | O_APPEND);
    pwrite_all(fd, "exit 0\n", 0);
  }
  CHECK((lstat_of(fs.path("roots")).st_mode & 07777) == 06755);
  SYS(::truncate(fs.path("roots").c_str(), 3));
  CHECK((lstat_of(fs.path("roots")).st_mode & 07777) == 06755);

  // But a change of owner clears them, also for root (what tar and docker
  // rely on: they chown first and restore the mode afterwards).
  SYS(::chown(fs.path("roots").c_str(), 1000, 1000));
  CHECK((lstat_of(fs.path("roots")).st_mode & 07777) == 0755);
  SYS(::chmod(fs.path("roots").c_str(), 04755));
  CHECK((lstat_of(fs.path("roots")).st_mode & 07777) == 04755);
}

TEST_CASE("file capabilities are dropped when the file is written", "[perms][xattr]") {
  MountedFs fs;
  // struct vfs_cap_data, revision 2, effective, permitted CAP_NET_RAW.
  const std::uint32_t cap[5] = {0x02000001u, 1u << 13, 0, 0, 0};
  for (const char* how : {"write", "truncate"}) {
    const std::string f = fs.path(fmt::format("capped-{}", how));
    write_file(f, "#!/bin/sh\n", 0755);
    SYS(::setxattr(f.c_str(), "security.capability", cap, sizeof cap, 0));
    char back[32];
    REQUIRE(::getxattr(f.c_str(), "security.capability", back, sizeof back) == sizeof cap);
    if (std::string_view(how) == "write") {
      Fd fd = open_fd(f, O_WRONLY | O_APPEND);
      pwrite_all(fd, "exit 0\n", 0);
    } else {
      SYS(::truncate(f.c_str(), 2));
    }
    CHECK(result_of(static_cast<int>(::getxattr(f.c_str(), "security.capability", back, sizeof back))) ==
          "ENODATA");
  }
}

TEST_CASE("files are created with the caller's uid and gid", "[perms]") {
  MountedFs fs;
  SYS(::chmod(fs.root().c_str(), 0777));
  CHECK(in_child([&]() -> std::string {
    int fd = ::open(fs.path("file").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0640);
    if (fd < 0) return "open " + errname(errno);
    ::close(fd);
    if (::mkdir(fs.path("dir").c_str(), 0750) != 0) return "mkdir " + errname(errno);
    if (::symlink("file", fs.path("link").c_str()) != 0) return "symlink " + errname(errno);
    if (::mknod(fs.path("fifo").c_str(), S_IFIFO | 0600, 0) != 0) return "mknod " + errname(errno);
    return "ok";
  }, Creds{4321, 8765, {}}) == "ok");
  for (const char* n : {"file", "dir", "link", "fifo"}) {
    INFO(n);
    struct stat st = lstat_of(fs.path(n));
    CHECK(st.st_uid == 4321);
    CHECK(st.st_gid == 8765);
  }
  CHECK((lstat_of(fs.path("file")).st_mode & 07777) == 0640);
  CHECK((lstat_of(fs.path("dir")).st_mode & 07777) == 0750);
  // An unprivileged user cannot make device nodes.
  CHECK(in_child([&] { return result_of(::mknod(fs.path("dev").c_str(), S_IFCHR | 0600, makedev(1, 3))); },
                 nobody()) == "EPERM");
}

TEST_CASE("executables run from the filesystem", "[perms][exec]") {
  MountedFs fs;
  write_file(fs.path("script"), "#!/bin/sh\nexit 42\n", 0755);
  write_file(fs.path("noexec"), "#!/bin/sh\nexit 0\n", 0644);
  auto exec_status = [&](const std::string& path, std::optional<Creds> creds) {
    return in_child([&]() -> std::string {
      pid_t pid = ::fork();
      if (pid == 0) {
        char* argv[] = {const_cast<char*>(path.c_str()), nullptr};
        ::execv(path.c_str(), argv);
        ::_exit(errno == EACCES ? 126 : 127);
      }
      int st = 0;
      ::waitpid(pid, &st, 0);
      return WIFEXITED(st) ? std::to_string(WEXITSTATUS(st)) : "signal";
    }, creds);
  };
  CHECK(exec_status(fs.path("script"), std::nullopt) == "42");
  CHECK(exec_status(fs.path("script"), nobody()) == "42");
  CHECK(exec_status(fs.path("noexec"), nobody()) == "126");
  CHECK(exec_status(fs.path("noexec"), std::nullopt) == "126");  // even root needs an x bit
  // A copy of a real binary works too.
  const std::string bin = read_file("/bin/true");
  write_file(fs.path("true"), bin, 0755);
  CHECK(exec_status(fs.path("true"), nobody()) == "0");
}

TEST_CASE("xattr namespaces: trusted needs privilege, user follows the file's permissions", "[perms][xattr]") {
  MountedFs fs;
  SYS(::chmod(fs.root().c_str(), 0777));
  write_file(fs.path("theirs"), "data", 0644);
  SYS(::chown(fs.path("theirs").c_str(), 65534, 65534));
  write_file(fs.path("roots"), "data", 0644);
  SYS(::setxattr(fs.path("roots").c_str(), "trusted.secret", "t", 1, 0));
  SYS(::setxattr(fs.path("roots").c_str(), "user.note", "u", 1, 0));
  const std::string theirs = fs.path("theirs"), roots = fs.path("roots");
  // An unprivileged user: trusted.* is neither settable nor visible, even on
  // its own file; user.* needs write permission to set, read to get.
  CHECK(in_child([&] { return result_of(::setxattr(theirs.c_str(), "trusted.x", "v", 1, 0)); }, nobody()) == "EPERM");
  CHECK(in_child([&] { return result_of(::setxattr(theirs.c_str(), "user.x", "v", 1, 0)); }, nobody()) == "ok");
  CHECK(in_child([&] {
          char buf[8];
          return result_of(::getxattr(roots.c_str(), "trusted.secret", buf, sizeof buf));
        }, nobody()) == "ENODATA");
  CHECK(in_child([&] {
          char buf[256];
          const ssize_t n = ::listxattr(roots.c_str(), buf, sizeof buf);
          if (n < 0) return result_of(n);
          return std::string(buf, static_cast<std::size_t>(n)).find("trusted.") == std::string::npos ? std::string("hidden")
                                                                                                 : std::string("shown");
        }, nobody()) == "hidden");
  CHECK(in_child([&] { return result_of(::setxattr(roots.c_str(), "user.y", "v", 1, 0)); }, nobody()) == "EACCES");
  CHECK(in_child([&] {
          char buf[8];
          return result_of(::getxattr(roots.c_str(), "user.note", buf, sizeof buf));
        }, nobody()) == "ok");
  CHECK(in_child([&] { return result_of(::removexattr(roots.c_str(), "user.note")); }, nobody()) == "EACCES");
  // Root sets and reads trusted.* (overlayfs keeps its metadata there).
  SYS(::setxattr(theirs.c_str(), "trusted.overlay.opaque", "y", 1, 0));
  char buf[8];
  CHECK(::getxattr(theirs.c_str(), "trusted.overlay.opaque", buf, sizeof buf) == 1);
}

// Dedup shares the blocks of equal files between users; it must not let one
// of them read or change the other's file through them.
TEST_CASE("dedup between users: the other's copy stays private and unchanged", "[perms][dedup]") {
  MountedFs fs;
  SYS(::chmod(fs.root().c_str(), 0777));
  const std::string secret(300000, 's');
  write_file(fs.path("private"), secret, 0600);
  const std::string mine = fs.path("mine"), priv = fs.path("private");
  // Another user writes the same bytes (dedup shares them), then changes its
  // copy and truncates it.
  CHECK(in_child([&] {
          const int fd = ::open(mine.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
          if (fd < 0) return result_of(fd);
          if (::write(fd, secret.data(), secret.size()) != static_cast<ssize_t>(secret.size())) return std::string("short");
          ::close(fd);
          const int fd2 = ::open(mine.c_str(), O_WRONLY);
          if (::pwrite(fd2, "changed", 7, 1000) != 7) return std::string("short");
          ::close(fd2);
          return result_of(::truncate(mine.c_str(), 5000));
        }, nobody()) == "ok");
  // The owner's file is untouched, and still closed to the other user.
  CHECK(read_file(priv) == secret);
  CHECK(in_child([&] { return result_of(::open(priv.c_str(), O_RDONLY)); }, nobody()) == "EACCES");
  std::string want = secret.substr(0, 5000);
  want.replace(1000, 7, "changed");
  CHECK(read_file(mine) == want);
}
