#include "fixture.h"

#include <fmt/format.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <thread>

#ifndef DHFS_BIN_DIR
#error "DHFS_BIN_DIR must name the directory of mkfs.dhfs, dhfs and fsck.dhfs"
#endif

namespace dhfs_test {

namespace {

using Clock = std::chrono::steady_clock;

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {} ({})", WTERMSIG(status),
                                              strsignal(WTERMSIG(status)));
  return fmt::format("wait status {:#x}", status);
}

// --- emergency registry: plain arrays, read from a signal handler -------------
constexpr int kSlots = 32;
struct MountSlot {
  volatile sig_atomic_t used;
  char path[PATH_MAX];
};
MountSlot g_mounts[kSlots];
volatile pid_t g_pids[kSlots];

void emergency_handler(int sig) {
  for (int i = kSlots - 1; i >= 0; --i)
    if (g_mounts[i].used) ::umount2(g_mounts[i].path, MNT_DETACH);
  for (int i = 0; i < kSlots; ++i)
    if (g_pids[i] > 0) ::kill(g_pids[i], SIGKILL);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

struct HandlerInstaller {
  HandlerInstaller() {
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE}) {
      struct sigaction sa {};
      sa.sa_handler = emergency_handler;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = 0;
      ::sigaction(sig, &sa, nullptr);
    }
  }
} g_installer;

void register_pid(pid_t pid) {
  for (auto& p : g_pids)
    if (p <= 0) {
      p = pid;
      return;
    }
}

void unregister_pid(pid_t pid) {
  for (auto& p : g_pids)
    if (p == pid) p = 0;
}

// Unescape the octal escapes of /proc/self/mountinfo (\040 etc.).
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' &&
        s[i + 2] >= '0' && s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out.push_back(char((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
      continue;
    }
    out.push_back(s[i]);
  }
  return out;
}

// Waits for pid for up to timeout; returns the status or nullopt.
std::optional<int> wait_for(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return std::nullopt;  // not our child any more
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

int remove_entry(const char* path, const struct stat*, int type, struct FTW*) {
  if (type == FTW_DP)
    ::rmdir(path);
  else
    ::unlink(path);
  return 0;
}

void remove_tree(const std::string& dir) {
  if (dir.empty()) return;
  ::nftw(dir.c_str(), remove_entry, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

std::string make_tmpdir(const std::string& parent) {
  std::string templ = parent + "/dhfs-test-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) {
    int e = errno;
    FAIL("mkdtemp in " << parent << ": " << errname(e));
  }
  char real[PATH_MAX];
  if (!::realpath(buf.data(), real)) {
    int e = errno;
    ::rmdir(buf.data());
    FAIL("realpath " << buf.data() << ": " << errname(e));
  }
  std::string dir = real;
  // Tests drop to uid 65534 and must be able to reach the filesystem.
  ::chmod(dir.c_str(), 0755);
  return dir;
}

unsigned long flags_of(const std::string& opts, bool* any) {
  unsigned long flags = 0;
  *any = false;
  std::stringstream ss(opts);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    if (tok == "ro") flags |= MS_RDONLY;
    else if (tok == "nodev") flags |= MS_NODEV;
    else if (tok == "nosuid") flags |= MS_NOSUID;
    else if (tok == "noexec") flags |= MS_NOEXEC;
    else if (tok == "noatime") flags |= MS_NOATIME;
    else if (tok == "relatime") flags |= MS_RELATIME;
    else if (tok == "strictatime") flags |= MS_STRICTATIME;
    else if (tok != "rw") continue;
    *any = true;
  }
  return flags;
}

std::string dmesg_tail(size_t lines) {
  try {
    RunResult r = run({"/bin/dmesg"}, 10);
    std::vector<std::string> all;
    std::istringstream in(r.output);
    std::string line;
    while (std::getline(in, line)) all.push_back(line);
    std::string out;
    for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i)
      out += all[i] + "\n";
    return out;
  } catch (...) {
    return "(dmesg unavailable)";
  }
}

}  // namespace

// ---------------------------------------------------------------------------

std::string errname(int err) {
  if (err == 0) return "ok";
  const char* n = ::strerrorname_np(err);
  return n ? std::string(n) : fmt::format("errno {}", err);
}

std::string result_of(long r) { return r == -1 ? errname(errno) : "ok"; }

bool reference_mode() {
  const char* r = std::getenv("DHFS_TEST_REFERENCE_DIR");
  return r && *r;
}

bool reference_all() {
  const char* r = std::getenv("DHFS_TEST_REFERENCE_ALL");
  return r && std::string(r) == "1";
}

void register_mount(const std::string& path) {
  for (auto& s : g_mounts)
    if (!s.used) {
      std::snprintf(s.path, sizeof s.path, "%s", path.c_str());
      s.used = 1;
      return;
    }
}

void unregister_mount(const std::string& path) {
  for (int i = kSlots - 1; i >= 0; --i)
    if (g_mounts[i].used && path == g_mounts[i].path) {
      g_mounts[i].used = 0;
      return;
    }
}

std::optional<MountInfo> find_mount(const std::string& target) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::optional<MountInfo> found;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<std::string> f;
    std::string tok;
    while (ls >> tok) f.push_back(tok);
    if (f.size() < 10) continue;
    if (unescape(f[4]) != target) continue;
    size_t sep = 6;
    while (sep < f.size() && f[sep] != "-") ++sep;
    if (sep + 1 >= f.size()) continue;
    MountInfo mi;
    mi.mount_opts = f[5];
    mi.fstype = f[sep + 1];
    mi.super_opts = sep + 3 < f.size() ? f[sep + 3] : "";
    found = mi;  // the last one is the topmost
  }
  return found;
}

// ---------------------------------------------------------------------------
// MountedFs

MountedFs::MountedFs(FsOptions options) : options_(std::move(options)) {
  ::umask(0);  // tests state modes explicitly
  reference_ = reference_mode();
  try {
    if (reference_) {
      tmpdir_ = make_tmpdir(std::getenv("DHFS_TEST_REFERENCE_DIR"));
      root_ = tmpdir_ + "/fs";
      scratch_ = tmpdir_ + "/scratch";
      REQUIRE(::mkdir(root_.c_str(), 0755) == 0);
      REQUIRE(::mkdir(scratch_.c_str(), 0755) == 0);
      apply_reference_opts();
    } else {
      const char* t = std::getenv("DHFS_TEST_TMP");
      tmpdir_ = make_tmpdir(t && *t ? t : "/tmp");
      root_ = tmpdir_ + "/mnt";
      scratch_ = tmpdir_ + "/scratch";
      image_ = (options_.image_dir.empty() ? tmpdir_ : options_.image_dir) + "/image";
      log_ = tmpdir_ + "/dhfs.log";
      REQUIRE(::mkdir(root_.c_str(), 0755) == 0);
      REQUIRE(::mkdir(scratch_.c_str(), 0755) == 0);
      RunResult mk = run({tool_path("mkfs.dhfs"), "-s", options_.image_size, image_});
      INFO("mkfs.dhfs -s " << options_.image_size << " " << image_ << ": "
                           << describe_status(mk.status) << "\n" << mk.output);
      REQUIRE(mk.exit_code() == 0);
      mount_daemon();
    }
    // Whatever mode mkfs gave the root, the tests want a traversable 0755 root.
    bool any = false;
    if (!(flags_of(options_.mount_opts, &any) & MS_RDONLY)) {
      errno = 0;
      int r = ::chmod(root_.c_str(), 0755);
      int e = errno;
      INFO("chmod 0755 " << root_ << " -> " << errname(r ? e : 0));
      REQUIRE(r == 0);
    }
  } catch (...) {
    cleanup();
    throw;
  }
}

MountedFs::~MountedFs() {
  // When the test body finished without an exception, also insist that the
  // daemon shuts down cleanly and leaves a filesystem that fsck.dhfs accepts.
  if (!reference_ && mounted_ && std::uncaught_exceptions() == 0) {
    try {
      bool ok = true;
      int tries = 0;
      while (::umount2(root_.c_str(), 0) != 0) {
        if (errno == EBUSY && ++tries < 100) {
          sleep_ms(20);
          continue;
        }
        int e = errno;
        ok = false;
        FAIL_CHECK("end of test: umount " << root_ << ": " << errname(e)
                                          << " (an fd into the filesystem left open?)");
        break;
      }
      if (ok) {
        mounted_ = false;
        unregister_mount(root_);
        auto st = wait_for(pid_, std::chrono::seconds(30));
        if (!st) {
          FAIL_CHECK("end of test: dhfs did not exit within 30 s of the unmount\n" << daemon_log());
        } else {
          unregister_pid(pid_);
          pid_ = -1;
          INFO("end of test: dhfs " << describe_status(*st) << "\n" << daemon_log());
          CHECK((WIFEXITED(*st) && WEXITSTATUS(*st) == 0));
          RunResult fsck = run({tool_path("fsck.dhfs"), "-n", image_});
          INFO("end of test: fsck.dhfs -n: " << describe_status(fsck.status) << "\n"
                                            << fsck.output);
          CHECK(fsck.exit_code() == 0);
        }
      }
    } catch (...) {
      // Never throw out of the destructor; cleanup below does the rest.
    }
  }
  cleanup();
}

std::string MountedFs::path(std::string_view rel) const {
  if (rel.empty()) return root_;
  return root_ + "/" + std::string(rel);
}

std::string MountedFs::daemon_log() const {
  if (log_.empty()) return {};
  std::ifstream in(log_);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() > 16384) s = "...\n" + s.substr(s.size() - 16384);
  return "--- dhfs log ---\n" + s + "--- end of dhfs log ---";
}

void MountedFs::mount_daemon() {
  std::string opts = "allow_other";
  // Options for every mount of the run (e.g. fuse_uring=on, to run the suite
  // over another transport); a test's own options come after and win.
  if (const char* extra = std::getenv("DHFS_TEST_MOUNT_OPTS"); extra && *extra) opts += std::string(",") + extra;
  if (!options_.mount_opts.empty()) opts += "," + options_.mount_opts;
  std::vector<std::string> args = {tool_path("dhfs"), image_, root_, "-f", "-o", opts};
  {
    std::ofstream log(log_, std::ios::app);
    log << "=== dhfs " << image_ << " " << root_ << " -f -o " << opts << "\n";
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    int log = ::open(log_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log < 0 || null < 0) ::_exit(127);
    ::dup2(null, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    ::execv(argv[0], argv.data());
    dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
    ::_exit(127);
  }
  pid_ = pid;
  register_pid(pid);
  auto deadline = Clock::now() + std::chrono::seconds(10);
  for (;;) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      unregister_pid(pid_);
      pid_ = -1;
      FAIL("dhfs exited (" << describe_status(status) << ") before " << root_
                           << " was mounted\n" << daemon_log());
    }
    if (auto m = find_mount(root_)) {
      mounted_ = true;
      register_mount(root_);
      INFO("mountinfo for " << root_ << ": fstype " << m->fstype << ", " << m->mount_opts);
      REQUIRE(m->fstype == "fuse.dhfs");
      return;
    }
    if (Clock::now() >= deadline)
      FAIL("dhfs did not mount " << root_ << " within 10 s\n" << daemon_log());
    sleep_ms(2);
  }
}

void MountedFs::unmount_checked() {
  REQUIRE(mounted_);
  int tries = 0;
  while (::umount2(root_.c_str(), 0) != 0) {
    int e = errno;
    if (e == EBUSY && ++tries < 100) {
      sleep_ms(20);
      continue;
    }
    FAIL("umount " << root_ << ": " << errname(e) << " (an fd into the filesystem left open?)");
  }
  mounted_ = false;
  unregister_mount(root_);
  auto st = wait_for(pid_, std::chrono::seconds(30));
  if (!st) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    unregister_pid(pid_);
    pid_ = -1;
    FAIL("dhfs did not exit within 30 s of the unmount\n" << daemon_log());
  }
  unregister_pid(pid_);
  pid_ = -1;
  INFO("dhfs after unmount: " << describe_status(*st) << "\n" << daemon_log());
  REQUIRE((WIFEXITED(*st) && WEXITSTATUS(*st) == 0));
}

void MountedFs::remount() { remount(options_.mount_opts); }

void MountedFs::remount(const std::string& mount_opts) {
  options_.mount_opts = mount_opts;
  if (reference_) {
    apply_reference_opts();
    return;
  }
  unmount_checked();
  RunResult fsck = run({tool_path("fsck.dhfs"), "-n", image_});
  INFO("fsck.dhfs -n " << image_ << ": " << describe_status(fsck.status) << "\n" << fsck.output);
  REQUIRE(fsck.exit_code() == 0);
  mount_daemon();
}

void MountedFs::kill_and_remount(const std::function<void()>& after_kill) {
  REQUIRE(mounted_);
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  unregister_pid(pid_);
  pid_ = -1;
  if (after_kill) after_kill();
  REQUIRE(::umount2(root_.c_str(), MNT_DETACH) == 0);
  mounted_ = false;
  unregister_mount(root_);
  RunResult fsck = run({tool_path("fsck.dhfs"), "-n", image_});
  INFO("fsck.dhfs -n " << image_ << " after SIGKILL: " << describe_status(fsck.status) << "\n" << fsck.output);
  REQUIRE(fsck.exit_code() == 0);
  mount_daemon();
}

void MountedFs::apply_reference_opts() {
  bool any = false;
  unsigned long flags = flags_of(options_.mount_opts, &any);
  if (!any && !bind_mounted_) return;
  if (!bind_mounted_) {
    if (::mount(root_.c_str(), root_.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      int e = errno;
      FAIL("bind mount " << root_ << ": " << errname(e));
    }
    bind_mounted_ = true;
    register_mount(root_);
  }
  if (::mount(nullptr, root_.c_str(), nullptr, MS_REMOUNT | MS_BIND | flags, nullptr) != 0) {
    int e = errno;
    FAIL("bind remount " << root_ << " with " << options_.mount_opts << ": " << errname(e));
  }
}

void MountedFs::cleanup() noexcept {
  try {
    if (!reference_ && !root_.empty()) {
      if (mounted_ || find_mount(root_)) {
        int tries = 0;
        while (::umount2(root_.c_str(), 0) != 0) {
          if (errno == EBUSY && ++tries < 50) {
            sleep_ms(20);
            continue;
          }
          ::umount2(root_.c_str(), MNT_DETACH);
          break;
        }
        mounted_ = false;
        unregister_mount(root_);
      }
      if (pid_ > 0) {
        auto st = wait_for(pid_, std::chrono::seconds(30));
        if (!st) {
          std::fprintf(stderr, "dhfs_test: dhfs (pid %d) still running 30 s after unmount: SIGKILL\n",
                       pid_);
          ::kill(pid_, SIGKILL);
          ::waitpid(pid_, nullptr, 0);
        } else if (!(WIFEXITED(*st) && WEXITSTATUS(*st) == 0)) {
          std::fprintf(stderr, "dhfs_test: dhfs %s\n%s\n", describe_status(*st).c_str(),
                       daemon_log().c_str());
        }
        unregister_pid(pid_);
        pid_ = -1;
      }
      // A killed daemon can leave a dead mount behind.
      for (int i = 0; i < 4 && find_mount(root_); ++i) ::umount2(root_.c_str(), MNT_DETACH);
    }
    if (reference_ && bind_mounted_) {
      if (::umount2(root_.c_str(), 0) != 0) ::umount2(root_.c_str(), MNT_DETACH);
      bind_mounted_ = false;
      unregister_mount(root_);
    }
  } catch (...) {
  }
  remove_tree(tmpdir_);
}

// ---------------------------------------------------------------------------
// MountGuard

MountGuard::MountGuard(const std::string& source, const std::string& target,
                       const std::string& fstype, unsigned long flags, const std::string& data)
    : target_(target) {
  if (::mount(source.c_str(), target.c_str(), fstype.c_str(), flags,
              data.empty() ? nullptr : data.c_str()) != 0) {
    int e = errno;
    FAIL("mount -t " << fstype << " -o " << data << " " << source << " " << target << ": "
                     << errname(e) << "\nlast kernel messages:\n" << dmesg_tail(8));
  }
  mounted_ = true;
  register_mount(target_);
}

MountGuard::~MountGuard() {
  if (!mounted_) return;
  int tries = 0;
  while (::umount2(target_.c_str(), 0) != 0) {
    if (errno == EBUSY && ++tries < 50) {
      sleep_ms(20);
      continue;
    }
    ::umount2(target_.c_str(), MNT_DETACH);
    break;
  }
  unregister_mount(target_);
}

void MountGuard::unmount() {
  REQUIRE(mounted_);
  int tries = 0;
  while (::umount2(target_.c_str(), 0) != 0) {
    int e = errno;
    if (e == EBUSY && ++tries < 100) {
      sleep_ms(20);
      continue;
    }
    FAIL("umount " << target_ << ": " << errname(e));
  }
  mounted_ = false;
  unregister_mount(target_);
}

// ---------------------------------------------------------------------------
// I/O helpers

void Fd::close_checked() {
  int fd = release();
  REQUIRE(fd >= 0);
  errno = 0;
  int r = ::close(fd);
  int e = errno;
  INFO("close -> " << errname(e));
  REQUIRE(r == 0);
}

Fd open_fd(const std::string& path, int flags, mode_t mode) {
  errno = 0;
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  int e = errno;
  INFO("open " << path << " flags " << std::hex << flags << std::dec << " -> " << errname(e));
  REQUIRE(fd >= 0);
  return Fd(fd);
}

void pwrite_all(int fd, std::string_view data, off_t offset) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done, offset + off_t(done));
    if (n < 0 && errno == EINTR) continue;
    int e = errno;
    INFO("pwrite " << data.size() - done << " bytes at " << offset + off_t(done) << " -> "
                   << n << " (" << errname(n < 0 ? e : 0) << ")");
    REQUIRE(n > 0);
    done += size_t(n);
  }
}

std::string pread_all(int fd, size_t len, off_t offset) {
  std::string out(len, '\0');
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd, out.data() + done, len - done, offset + off_t(done));
    if (n < 0 && errno == EINTR) continue;
    int e = errno;
    INFO("pread at " << offset + off_t(done) << " -> " << errname(n < 0 ? e : 0));
    REQUIRE(n >= 0);
    if (n == 0) break;
    done += size_t(n);
  }
  out.resize(done);
  return out;
}

void write_file(const std::string& path, std::string_view data, mode_t mode) {
  Fd fd = open_fd(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  pwrite_all(fd, data, 0);
  fd.close_checked();
}

std::string read_file(const std::string& path) {
  Fd fd = open_fd(path, O_RDONLY);
  std::string out;
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    int e = errno;
    INFO("read " << path << " -> " << errname(n < 0 ? e : 0));
    REQUIRE(n >= 0);
    if (n == 0) break;
    out.append(buf.data(), size_t(n));
  }
  return out;
}

std::string random_bytes(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  size_t i = 0;
  while (i < n) {
    // splitmix64
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    size_t k = std::min<size_t>(8, n - i);
    std::memcpy(out.data() + i, &z, k);
    i += k;
  }
  return out;
}

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  errno = 0;
  int r = ::lstat(path.c_str(), &st);
  int e = errno;
  INFO("lstat " << path << " -> " << errname(e));
  REQUIRE(r == 0);
  return st;
}

struct stat stat_of(const std::string& path) {
  struct stat st {};
  errno = 0;
  int r = ::stat(path.c_str(), &st);
  int e = errno;
  INFO("stat " << path << " -> " << errname(e));
  REQUIRE(r == 0);
  return st;
}

struct stat fstat_of(int fd) {
  struct stat st {};
  errno = 0;
  int r = ::fstat(fd, &st);
  int e = errno;
  INFO("fstat " << fd << " -> " << errname(e));
  REQUIRE(r == 0);
  return st;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

int64_t ns_of(const struct timespec& ts) { return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec; }

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

void tick() { sleep_ms(25); }

std::vector<DirEntry> list_dir(const std::string& path, bool with_dots) {
  DIR* d = ::opendir(path.c_str());
  int e = errno;
  INFO("opendir " << path << " -> " << errname(d ? 0 : e));
  REQUIRE(d != nullptr);
  std::vector<DirEntry> out;
  for (;;) {
    errno = 0;
    struct dirent* de = ::readdir(d);
    if (!de) {
      int re = errno;
      ::closedir(d);
      INFO("readdir " << path << " -> " << errname(re));
      REQUIRE(re == 0);
      break;
    }
    std::string name = de->d_name;
    if (!with_dots && (name == "." || name == "..")) continue;
    out.push_back({name, de->d_type, de->d_ino});
  }
  return out;
}

std::vector<std::string> list_names(const std::string& path) {
  std::vector<std::string> names;
  for (auto& e : list_dir(path)) names.push_back(e.name);
  std::sort(names.begin(), names.end());
  return names;
}

std::optional<std::string> get_xattr(const std::string& path, const std::string& name) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    errno = 0;
    ssize_t n = ::lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
    if (n < 0 && errno == ENODATA) return std::nullopt;
    int e = errno;
    INFO("lgetxattr " << path << " " << name << " (size) -> " << errname(n < 0 ? e : 0));
    REQUIRE(n >= 0);
    std::string v(size_t(n), '\0');
    errno = 0;
    ssize_t m = ::lgetxattr(path.c_str(), name.c_str(), v.data(), v.size());
    if (m < 0 && errno == ERANGE) continue;  // grew in between
    if (m < 0 && errno == ENODATA) return std::nullopt;
    e = errno;
    INFO("lgetxattr " << path << " " << name << " -> " << errname(m < 0 ? e : 0));
    REQUIRE(m >= 0);
    v.resize(size_t(m));
    return v;
  }
  FAIL("lgetxattr " << path << " " << name << ": size keeps changing");
  return std::nullopt;
}

std::vector<std::string> list_xattrs(const std::string& path) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    errno = 0;
    ssize_t n = ::llistxattr(path.c_str(), nullptr, 0);
    int e = errno;
    INFO("llistxattr " << path << " (size) -> " << errname(n < 0 ? e : 0));
    REQUIRE(n >= 0);
    std::string buf(size_t(n), '\0');
    errno = 0;
    ssize_t m = ::llistxattr(path.c_str(), buf.data(), buf.size());
    if (m < 0 && errno == ERANGE) continue;
    e = errno;
    INFO("llistxattr " << path << " -> " << errname(m < 0 ? e : 0));
    REQUIRE(m >= 0);
    buf.resize(size_t(m));
    std::vector<std::string> names;
    size_t pos = 0;
    while (pos < buf.size()) {
      size_t end = buf.find('\0', pos);
      REQUIRE(end != std::string::npos);  // every name is NUL-terminated
      names.push_back(buf.substr(pos, end - pos));
      pos = end + 1;
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  FAIL("llistxattr " << path << ": size keeps changing");
  return {};
}

void set_xattr(const std::string& path, const std::string& name, std::string_view value,
               int flags) {
  errno = 0;
  int r = ::lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), flags);
  int e = errno;
  INFO("lsetxattr " << path << " " << name << " (" << value.size() << " bytes) -> "
                    << errname(r ? e : 0));
  REQUIRE(r == 0);
}

// ---------------------------------------------------------------------------
// Processes

int RunResult::exit_code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

std::string tool_path(const char* name) { return std::string(DHFS_BIN_DIR) + "/" + name; }

RunResult run(const std::vector<std::string>& args, int timeout_s) {
  RunResult res;
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::dup2(p[1], 1);
    ::dup2(p[1], 2);
    ::execv(argv[0], argv.data());
    dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
    ::_exit(127);
  }
  ::close(p[1]);
  auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  bool timed_out = false;
  char buf[65536];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    struct pollfd pfd {p[0], POLLIN, 0};
    int r = ::poll(&pfd, 1, int(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) continue;
    ssize_t n = ::read(p[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    res.output.append(buf, size_t(n));
  }
  ::close(p[0]);
  if (timed_out) {
    ::kill(pid, SIGKILL);
    res.output += fmt::format("\n[killed after {} s]", timeout_s);
  }
  while (::waitpid(pid, &res.status, 0) < 0 && errno == EINTR) {
  }
  return res;
}

Child::Child(std::function<std::string()> fn, std::optional<Creds> creds) {
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(p[0]);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    std::string out;
    bool ok = true;
    if (creds) {
      if (::setgroups(creds->groups.size(), creds->groups.data()) != 0 ||
          ::setresgid(creds->gid, creds->gid, creds->gid) != 0 ||
          ::setresuid(creds->uid, creds->uid, creds->uid) != 0) {
        out = "child setup failed: " + errname(errno);
        ok = false;
      }
    }
    if (ok) {
      try {
        out = fn();
      } catch (const std::exception& e) {
        out = std::string("child threw: ") + e.what();
      } catch (...) {
        out = "child threw";
      }
    }
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n = ::write(p[1], out.data() + done, out.size() - done);
      if (n <= 0) break;
      done += size_t(n);
    }
    ::_exit(0);
  }
  ::close(p[1]);
  pid_ = pid;
  pipe_ = p[0];
}

Child::~Child() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (pipe_ >= 0) ::close(pipe_);
}

bool Child::running() {
  if (status_) return false;
  int st = 0;
  if (::waitpid(pid_, &st, WNOHANG) == pid_) {
    status_ = st;
    return false;
  }
  return true;
}

std::string Child::wait(int timeout_s) {
  std::string out;
  auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  bool timed_out = false;
  char buf[4096];
  while (pipe_ >= 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    struct pollfd pfd {pipe_, POLLIN, 0};
    int r = ::poll(&pfd, 1, int(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) continue;
    ssize_t n = ::read(pipe_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  if (timed_out && !status_) ::kill(pid_, SIGKILL);
  if (!status_) {
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    status_ = st;
  }
  if (timed_out) return fmt::format("child died: timed out after {} s ({})", timeout_s, out);
  if (!(WIFEXITED(*status_) && WEXITSTATUS(*status_) == 0))
    return "child died: " + describe_status(*status_) + " (" + out + ")";
  return out;
}

std::string in_child(const std::function<std::string()>& fn, std::optional<Creds> creds,
                     int timeout_s) {
  Child c(fn, std::move(creds));
  return c.wait(timeout_s);
}

// ---------------------------------------------------------------------------

std::string content_digest(const std::string& path) {
  Fd fd = open_fd(path, O_RDONLY);
  struct stat st = fstat_of(fd);
  const off_t size = st.st_size;
  uint64_t h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
  auto mix = [&](const void* p, size_t n) {
    auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) {
      h1 = (h1 ^ b[i]) * 0x100000001b3ull;
      h2 = (h2 ^ b[i]) * 0x100000001b3ull + 0x9e3779b97f4a7c15ull;
    }
  };
  constexpr off_t kBlock = 4096;
  off_t next_block = 0;  // first block not hashed yet
  off_t pos = 0;
  std::string buf;
  uint64_t nonzero_blocks = 0;
  while (pos < size) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    off_t hole = size;
    if (data < 0) {
      if (errno == ENXIO) break;
      data = pos;  // no SEEK_DATA support: everything is data
    } else {
      hole = ::lseek(fd, data, SEEK_HOLE);
      if (hole < 0) hole = size;
    }
    off_t start = std::max(data / kBlock * kBlock, next_block);
    off_t end = std::min(size, (hole + kBlock - 1) / kBlock * kBlock);
    for (off_t off = start; off < end; off += 1 << 20) {
      size_t len = size_t(std::min<off_t>(1 << 20, end - off));
      buf = pread_all(fd, len, off);
      REQUIRE(buf.size() == len);
      for (size_t b = 0; b < buf.size(); b += kBlock) {
        size_t n = std::min<size_t>(kBlock, buf.size() - b);
        bool zero = std::all_of(buf.begin() + long(b), buf.begin() + long(b + n),
                                [](char c) { return c == 0; });
        if (zero) continue;
        uint64_t idx = uint64_t(off + off_t(b)) / kBlock;
        mix(&idx, sizeof idx);
        mix(buf.data() + b, n);
        ++nonzero_blocks;
      }
    }
    next_block = std::max(next_block, end);
    pos = std::max(hole, end);
  }
  return fmt::format("size={} nonzero_blocks={} hash={:016x}{:016x}", size, nonzero_blocks, h1, h2);
}

}  // namespace dhfs_test

namespace dhfs_test {

namespace {
std::string show(std::string_view s) {
  bool printable = s.size() <= 80 && std::all_of(s.begin(), s.end(), [](char c) {
                     return c >= 0x20 && c < 0x7f;
                   });
  if (printable) return "\"" + std::string(s) + "\"";
  return fmt::format("{} bytes", s.size());
}
}  // namespace

std::string bytes_diff(std::string_view got, std::string_view want) {
  if (got == want) return "";
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  std::string where;
  if (i < got.size() && i < want.size())
    where = fmt::format("first difference at offset {} (got 0x{:02x}, want 0x{:02x})", i,
                        static_cast<unsigned char>(got[i]), static_cast<unsigned char>(want[i]));
  else
    where = fmt::format("equal for the first {} bytes", i);
  return fmt::format("got {}, want {}: {}", show(got), show(want), where);
}

std::string bytes_diff(const std::optional<std::string>& got, std::string_view want) {
  if (!got) return fmt::format("got no value (ENODATA), want {}", show(want));
  return bytes_diff(std::string_view(*got), want);
}

}  // namespace dhfs_test
