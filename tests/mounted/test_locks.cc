// flock(2) and fcntl(2) POSIX record locks between processes.
#include <fmt/format.h>
#include <sys/file.h>

#include <chrono>

#include "fixture.h"

using namespace dhfs_test;

namespace {

std::string lock_desc(const struct flock& fl) {
  return fmt::format("type={} start={} len={} pid={}",
                     fl.l_type == F_WRLCK ? "W" : fl.l_type == F_RDLCK ? "R" : fl.l_type == F_UNLCK ? "U" : "?",
                     fl.l_start, fl.l_len, fl.l_pid);
}

struct flock range(short type, off_t start, off_t len) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  return fl;
}

// In a child: open path and try a non-blocking POSIX lock.
std::string try_setlk(const std::string& path, short type, off_t start, off_t len) {
  int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0) return "open " + errname(errno);
  struct flock fl = range(type, start, len);
  int r = ::fcntl(fd, F_SETLK, &fl);
  std::string res = result_of(r);
  ::close(fd);
  return res;
}

std::string try_flock(const std::string& path, int op) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return "open " + errname(errno);
  std::string res = result_of(::flock(fd, op));
  ::close(fd);
  return res;
}

}  // namespace

TEST_CASE("flock between processes", "[locks][flock]") {
  MountedFs fs;
  const std::string p = fs.path("lockfile");
  write_file(p, "x");
  Fd fd = open_fd(p, O_RDONLY);
  SYS(::flock(fd, LOCK_EX));

  // Another process, its own open file description.
  CHECK(in_child([&] { return try_flock(p, LOCK_EX | LOCK_NB); }) == errname(EWOULDBLOCK));
  CHECK(in_child([&] { return try_flock(p, LOCK_SH | LOCK_NB); }) == errname(EWOULDBLOCK));
  // The same process through a second open file description conflicts too.
  Fd fd2 = open_fd(p, O_RDONLY);
  CHECK_ERRNO(::flock(fd2, LOCK_EX | LOCK_NB), EWOULDBLOCK);

  // Shared locks coexist, exclusive ones wait.
  SYS(::flock(fd, LOCK_SH));
  CHECK(in_child([&] { return try_flock(p, LOCK_SH | LOCK_NB); }) == "ok");
  CHECK(in_child([&] { return try_flock(p, LOCK_EX | LOCK_NB); }) == errname(EWOULDBLOCK));

  // A blocked LOCK_EX is granted when the holder unlocks.
  SYS(::flock(fd, LOCK_EX));
  Child waiter([&]() -> std::string {
    int f = ::open(p.c_str(), O_RDONLY);
    if (f < 0) return "open " + errname(errno);
    auto t0 = std::chrono::steady_clock::now();
    if (::flock(f, LOCK_EX) != 0) return "flock " + errname(errno);
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    return waited.count() >= 200 ? "ok" : fmt::format("granted after only {} ms", waited.count());
  });
  sleep_ms(400);
  CHECK(waiter.running());
  SYS(::flock(fd, LOCK_UN));
  CHECK(waiter.wait() == "ok");

  // Closing the last descriptor of the holder releases the lock.
  SYS(::flock(fd, LOCK_EX));
  CHECK(in_child([&] { return try_flock(p, LOCK_EX | LOCK_NB); }) == errname(EWOULDBLOCK));
  fd.close_checked();
  CHECK(in_child([&] { return try_flock(p, LOCK_EX | LOCK_NB); }) == "ok");
  SYS(::flock(fd2, LOCK_EX | LOCK_NB));
}

TEST_CASE("fcntl POSIX locks between processes", "[locks][posix]") {
  MountedFs fs;
  const std::string p = fs.path("records");
  write_file(p, std::string(1000, 'r'));
  Fd fd = open_fd(p, O_RDWR);
  struct flock wr = range(F_WRLCK, 0, 100);
  SYS(::fcntl(fd, F_SETLK, &wr));
  struct flock rd = range(F_RDLCK, 150, 10);
  SYS(::fcntl(fd, F_SETLK, &rd));
  const pid_t me = ::getpid();

  // Conflicts in another process.
  CHECK(in_child([&] { return try_setlk(p, F_WRLCK, 0, 100); }) == "EAGAIN");
  CHECK(in_child([&] { return try_setlk(p, F_RDLCK, 50, 10); }) == "EAGAIN");
  CHECK(in_child([&] { return try_setlk(p, F_WRLCK, 99, 1); }) == "EAGAIN");
  CHECK(in_child([&] { return try_setlk(p, F_WRLCK, 100, 50); }) == "ok");
  CHECK(in_child([&] { return try_setlk(p, F_RDLCK, 150, 10); }) == "ok");
  CHECK(in_child([&] { return try_setlk(p, F_WRLCK, 155, 1); }) == "EAGAIN");

  // F_GETLK in another process reports the holder.
  auto getlk = [&](short type, off_t start, off_t len) {
    return in_child([&]() -> std::string {
      int f = ::open(p.c_str(), O_RDWR);
      if (f < 0) return "open " + errname(errno);
      struct flock fl = range(type, start, len);
      if (::fcntl(f, F_GETLK, &fl) != 0) return "F_GETLK " + errname(errno);
      return lock_desc(fl);
    });
  };
  CHECK(getlk(F_RDLCK, 50, 10) == fmt::format("type=W start=0 len=100 pid={}", me));
  CHECK(getlk(F_WRLCK, 0, 0) == fmt::format("type=W start=0 len=100 pid={}", me));
  CHECK(getlk(F_WRLCK, 152, 1) == fmt::format("type=R start=150 len=10 pid={}", me));
  CHECK(getlk(F_WRLCK, 200, 100).rfind("type=U", 0) == 0);
  // A process never conflicts with itself.
  struct flock own = range(F_WRLCK, 0, 0);
  SYS(::fcntl(fd, F_GETLK, &own));
  CHECK(own.l_type == F_UNLCK);

  // A blocking F_SETLKW waits for the unlock.
  Child waiter([&]() -> std::string {
    int f = ::open(p.c_str(), O_RDWR);
    if (f < 0) return "open " + errname(errno);
    struct flock fl = range(F_WRLCK, 10, 10);
    auto t0 = std::chrono::steady_clock::now();
    if (::fcntl(f, F_SETLKW, &fl) != 0) return "F_SETLKW " + errname(errno);
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    return waited.count() >= 200 ? "ok" : fmt::format("granted after only {} ms", waited.count());
  });
  sleep_ms(400);
  CHECK(waiter.running());
  struct flock un = range(F_UNLCK, 0, 100);
  SYS(::fcntl(fd, F_SETLK, &un));
  CHECK(waiter.wait() == "ok");

  // Closing any descriptor of the file drops all of this process's locks on it.
  SYS(::fcntl(fd, F_SETLK, &wr));
  CHECK(in_child([&] { return try_setlk(p, F_WRLCK, 0, 100); }) == "EAGAIN");
  {
    Fd other = open_fd(p, O_RDONLY);
    other.close_checked();
  }
  CHECK(in_child([&] { return try_setlk(p, F_WRLCK, 0, 100); }) == "ok");
  CHECK(in_child([&] { return try_setlk(p, F_WRLCK, 150, 10); }) == "ok");
}
