// Mounted integration tests: fixture and helpers.
//
// Every TEST_CASE builds its own MountedFs: a fresh sparse image formatted with
// mkfs.dhfs and mounted by the dhfs daemon in the foreground.  All tests talk to
// the mount through real system calls.
//
// Environment:
//   DHFS_TEST_TMP            parent of the per-test temporary directory (default /tmp)
//   DHFS_TEST_REFERENCE_DIR  reference mode: mount nothing, run every test in a fresh
//                            subdirectory of this directory (ext4, tmpfs, xfs ...) to
//                            prove that the expectations are those of a local
//                            filesystem.  remount() is a no-op there (mount options
//                            are emulated with a bind mount), and tests tagged [dhfs]
//                            (remount persistence, inode stability, statfs numbers of
//                            the image) are skipped.
//   DHFS_TEST_REFERENCE_ALL=1  in reference mode, run the [dhfs] persistence tests too
//                            (with remount() a no-op), to check their own code.
//
// The umask is 0 while tests run: modes given to open/mkdir/mknod are exact.
// At the end of every test that did not fail, the fixture also unmounts, insists
// on a clean daemon exit and runs fsck.dhfs -n (CHECKs, reported for that test).
//
// Nothing leaks: the destructor unmounts, waits for (or kills) the daemon and
// removes the temporary directory, also when an assertion failed; a fatal signal
// detaches every mount the suite made and kills the daemons it started.
#pragma once

#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dhfs_test {

// ---------------------------------------------------------------------------
// errno helpers and assertion macros
// ---------------------------------------------------------------------------

// "ENOENT" for ENOENT, "ok" for 0.
std::string errname(int err);

// "ok" if r != -1, otherwise the name of errno.  Meant for results computed in a
// child process and compared in the parent: CHECK(child_result == "EACCES").
std::string result_of(long r);

}  // namespace dhfs_test

// Evaluate a system call, REQUIRE that it did not return -1 and yield its value.
#define SYS(expr)                                                                     \
  [&]() {                                                                             \
    errno = 0;                                                                        \
    auto sys_r_ = (expr);                                                             \
    int sys_e_ = errno;                                                               \
    INFO(#expr << " -> " << sys_r_ << " (" << ::dhfs_test::errname(sys_e_) << ")");   \
    REQUIRE(sys_r_ != -1);                                                            \
    return sys_r_;                                                                    \
  }()

// Evaluate a system call, REQUIRE success, then CHECK/REQUIRE "result OP value".
#define CHECK_SYS(expr, op, value)                                                    \
  do {                                                                                \
    auto sys_value_ = SYS(expr);                                                      \
    INFO(#expr);                                                                      \
    CHECK(sys_value_ op (value));                                                     \
  } while (0)
#define REQUIRE_SYS(expr, op, value)                                                  \
  do {                                                                                \
    auto sys_value_ = SYS(expr);                                                      \
    INFO(#expr);                                                                      \
    REQUIRE(sys_value_ op (value));                                                   \
  } while (0)

// REQUIRE that a system call fails (-1) with errno ERR.
#define REQUIRE_ERRNO(expr, err)                                                      \
  do {                                                                                \
    errno = 0;                                                                        \
    auto sys_r_ = (expr);                                                             \
    int sys_e_ = errno;                                                               \
    INFO(#expr << " -> " << sys_r_ << " (" << ::dhfs_test::errname(sys_e_)            \
               << "), expected -1 (" << ::dhfs_test::errname(err) << ")");            \
    const std::string errno_got = ::dhfs_test::errname(sys_r_ == -1 ? sys_e_ : 0);    \
    const std::string errno_want = ::dhfs_test::errname(err);                         \
    REQUIRE(errno_got == errno_want);                                                 \
  } while (0)

// Same, but only CHECK (the test goes on).
#define CHECK_ERRNO(expr, err)                                                        \
  do {                                                                                \
    errno = 0;                                                                        \
    auto sys_r_ = (expr);                                                             \
    int sys_e_ = errno;                                                               \
    INFO(#expr << " -> " << sys_r_ << " (" << ::dhfs_test::errname(sys_e_)            \
               << "), expected -1 (" << ::dhfs_test::errname(err) << ")");            \
    const std::string errno_got = ::dhfs_test::errname(sys_r_ == -1 ? sys_e_ : 0);    \
    const std::string errno_want = ::dhfs_test::errname(err);                         \
    CHECK(errno_got == errno_want);                                                   \
  } while (0)

// REQUIRE that a system call fails with one of several errno values.
#define REQUIRE_ERRNO_IN(expr, ...)                                                   \
  do {                                                                                \
    errno = 0;                                                                        \
    auto sys_r_ = (expr);                                                             \
    int sys_e_ = errno;                                                               \
    INFO(#expr << " -> " << sys_r_ << " (" << ::dhfs_test::errname(sys_e_)            \
               << "), expected one of " #__VA_ARGS__);                                \
    REQUIRE(sys_r_ == -1);                                                            \
    bool sys_found_ = false;                                                          \
    for (int sys_x_ : {__VA_ARGS__}) sys_found_ = sys_found_ || sys_x_ == sys_e_;     \
    REQUIRE(sys_found_);                                                              \
  } while (0)

// Tests tagged [dhfs] check what only makes sense on dhfs (remount persistence,
// inode stability, fsck, statfs numbers of the image).  In reference mode they
// are skipped: DHFS_ONLY() skips unless DHFS_TEST_REFERENCE_ALL=1 (then they run
// with remount() as a no-op, which still checks the test's own code);
// DHFS_ONLY_STRICT() always skips.
#define DHFS_ONLY()                                                                   \
  do {                                                                                \
    if (::dhfs_test::reference_mode() && !::dhfs_test::reference_all()) {             \
      WARN("dhfs-specific test: skipped in reference mode");                          \
      return;                                                                         \
    }                                                                                 \
  } while (0)
#define DHFS_ONLY_STRICT()                                                            \
  do {                                                                                \
    if (::dhfs_test::reference_mode()) {                                              \
      WARN("dhfs-specific test: skipped in reference mode");                          \
      return;                                                                         \
    }                                                                                 \
  } while (0)

namespace dhfs_test {

bool reference_mode();   // DHFS_TEST_REFERENCE_DIR is set
bool reference_all();    // DHFS_TEST_REFERENCE_ALL=1

// ---------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------

struct FsOptions {
  std::string mount_opts;       // appended to "allow_other", e.g. "ro" or "noatime,nodev"
  std::string image_size = "2G";
  std::string image_dir = "";   // where the image file goes (default: the fixture's own directory)
};

class MountedFs {
 public:
  MountedFs() : MountedFs(FsOptions{}) {}
  explicit MountedFs(FsOptions options);
  ~MountedFs();
  MountedFs(const MountedFs&) = delete;
  MountedFs& operator=(const MountedFs&) = delete;

  // Root of the filesystem under test (the mount point, or the reference subdir).
  const std::string& root() const { return root_; }
  // root() + "/" + rel.
  std::string path(std::string_view rel) const;
  // A scratch directory outside the filesystem under test (same lifetime).
  const std::string& scratch() const { return scratch_; }
  const std::string& image() const { return image_; }
  bool reference() const { return reference_; }
  pid_t daemon_pid() const { return pid_; }
  std::string daemon_log() const;

  // Unmount (REQUIRE a clean daemon exit), REQUIRE fsck.dhfs -n to pass and mount
  // again with the same options.  Close every fd into the filesystem first.
  void remount();
  // Same, mounting again with other options (replacing FsOptions::mount_opts).
  void remount(const std::string& mount_opts);
  // Simulates a crash of the daemon: SIGKILL, run `after_kill` (e.g. stop
  // the workload), detach the dead mount, REQUIRE fsck.dhfs -n to pass on
  // what the daemon left behind, mount again.
  void kill_and_remount(const std::function<void()>& after_kill = {});

 private:
  void mount_daemon();
  void unmount_checked();
  void cleanup() noexcept;
  void apply_reference_opts();

  FsOptions options_;
  bool reference_ = false;
  std::string tmpdir_, root_, scratch_, image_, log_;
  pid_t pid_ = -1;
  bool mounted_ = false;        // dhfs mode: daemon mount is up
  bool bind_mounted_ = false;   // reference mode: bind mount emulating options
};

// ---------------------------------------------------------------------------
// Emergency cleanup registry (async-signal-safe, used by the fixture and by the
// RAII guards of extra mounts such as overlays and tmpfs).
// ---------------------------------------------------------------------------
void register_mount(const std::string& path);
void unregister_mount(const std::string& path);

// A mount made by a test (overlay, tmpfs, ...), detached in the destructor.
class MountGuard {
 public:
  MountGuard() = default;
  // mount(2); REQUIREs success.
  MountGuard(const std::string& source, const std::string& target, const std::string& fstype,
             unsigned long flags, const std::string& data);
  ~MountGuard();
  MountGuard(const MountGuard&) = delete;
  MountGuard& operator=(const MountGuard&) = delete;
  // umount2(target, 0); REQUIREs success.
  void unmount();
  bool mounted() const { return mounted_; }
  const std::string& target() const { return target_; }

 private:
  std::string target_;
  bool mounted_ = false;
};

// Per-mount flags of the mount at `target` from /proc/self/mountinfo (field 6,
// e.g. "rw,nosuid,nodev,relatime") and its fstype; nullopt if not mounted.
struct MountInfo {
  std::string mount_opts;
  std::string fstype;
  std::string super_opts;
};
std::optional<MountInfo> find_mount(const std::string& target);

// ---------------------------------------------------------------------------
// File descriptors and I/O
// ---------------------------------------------------------------------------

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  operator int() const { return fd_; }  // NOLINT: pass straight to syscalls
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // close(2) with its result checked.
  void close_checked();

 private:
  int fd_ = -1;
};

// open(2) that REQUIREs success.
Fd open_fd(const std::string& path, int flags, mode_t mode = 0644);

// Whole-file helpers (REQUIRE success).
void write_file(const std::string& path, std::string_view data, mode_t mode = 0644);
std::string read_file(const std::string& path);
// pwrite/pread loops (REQUIRE success; pread_all stops at EOF).
void pwrite_all(int fd, std::string_view data, off_t offset);
std::string pread_all(int fd, size_t len, off_t offset);

// Deterministic pseudo-random bytes (no two 4 KiB blocks alike, so nothing dedups).
std::string random_bytes(size_t n, uint64_t seed);

// lstat()/stat() that REQUIRE success.
struct stat lstat_of(const std::string& path);
struct stat stat_of(const std::string& path);
struct stat fstat_of(int fd);
bool exists(const std::string& path);  // lstat succeeds

int64_t ns_of(const struct timespec& ts);
void sleep_ms(int ms);
// A pause long enough for every filesystem clock (coarse kernel ticks) to move.
void tick();

// Directory listing without "." and "..".
struct DirEntry {
  std::string name;
  unsigned char type;
  ino_t ino;
};
std::vector<DirEntry> list_dir(const std::string& path, bool with_dots = false);
std::vector<std::string> list_names(const std::string& path);  // sorted

// xattrs (l* variants: never follow symlinks).  get returns nullopt on ENODATA.
std::optional<std::string> get_xattr(const std::string& path, const std::string& name);
std::vector<std::string> list_xattrs(const std::string& path);  // sorted
void set_xattr(const std::string& path, const std::string& name, std::string_view value,
               int flags = 0);

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

struct RunResult {
  int status = -1;       // waitpid status
  std::string output;    // stdout and stderr interleaved
  int exit_code() const;  // -1 unless exited normally
};
// The path of one of the dhfs tools under test (mkfs.dhfs, dhfs, fsck.dhfs, dhfsctl).
std::string tool_path(const char* name);
// fork/exec argv (argv[0] is a path), capture output; killed after timeout_s.
RunResult run(const std::vector<std::string>& argv, int timeout_s = 120);

// Credentials for code run in a child process.
struct Creds {
  uid_t uid;
  gid_t gid;
  std::vector<gid_t> groups;
};
inline Creds nobody() { return Creds{65534, 65534, {}}; }

// Run fn in a forked child (optionally after dropping to creds) and return the
// string it produced; "child died: ..." if it did not finish cleanly within
// timeout_s.  Never use Catch assertions inside fn.
std::string in_child(const std::function<std::string()>& fn,
                     std::optional<Creds> creds = std::nullopt, int timeout_s = 30);

// A child running concurrently with the test.  The destructor kills it if it is
// still running.
class Child {
 public:
  explicit Child(std::function<std::string()> fn, std::optional<Creds> creds = std::nullopt);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  // Wait for the result (see in_child).
  std::string wait(int timeout_s = 30);
  // True if the child has not exited yet.
  bool running();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int pipe_ = -1;
  std::optional<int> status_;
};

// Content fingerprint that ignores how zeros are stored (holes vs. written zeros):
// hashes every non-zero 4 KiB block with its offset, found through
// SEEK_DATA/SEEK_HOLE so that huge sparse files are cheap.
std::string content_digest(const std::string& path);

}  // namespace dhfs_test

namespace dhfs_test {
// Compares byte strings without dumping them: "" if equal, otherwise a short
// description of the first difference (CHECK_BYTES prints only that).
std::string bytes_diff(std::string_view got, std::string_view want);
inline std::string bytes_diff(const std::string& got, std::string_view want) {
  return bytes_diff(std::string_view(got), want);
}
std::string bytes_diff(const std::optional<std::string>& got, std::string_view want);
}  // namespace dhfs_test

#define CHECK_BYTES(got, want) CHECK(::dhfs_test::bytes_diff((got), (want)) == "")
#define REQUIRE_BYTES(got, want) REQUIRE(::dhfs_test::bytes_diff((got), (want)) == "")
