// Mount options: ro refuses writes with EROFS; the generic options the kernel and
// mount(8) pass are accepted.  (Reference mode emulates them with a bind mount.)
#include <fcntl.h>
#include <fmt/format.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <fstream>
#include <sstream>
#include <thread>

#include "dhfsctl_support.h"
#include "fixture.h"

using namespace dhfs_test;

namespace {

bool has_opt(const std::string& opts, const std::string& opt) {
  std::stringstream ss(opts);
  std::string tok;
  while (std::getline(ss, tok, ','))
    if (tok == opt) return true;
  return false;
}

std::string mount_opts_of(const MountedFs& fs) {
  auto m = find_mount(fs.root());
  REQUIRE(m.has_value());
  return m->mount_opts;
}

// Every way of modifying the tree fails with EROFS.
void check_all_writes_refused(MountedFs& fs) {
  const std::string f = fs.path("f");
  auto open_ = [](const std::string& p, int flags) {
    int fd = ::open(p.c_str(), flags | O_CLOEXEC, 0644);
    int e = errno;
    if (fd >= 0) ::close(fd);
    errno = e;
    return fd < 0 ? -1 : 0;
  };
  CHECK_ERRNO(open_(f, O_WRONLY), EROFS);
  CHECK_ERRNO(open_(f, O_RDWR), EROFS);
  CHECK_ERRNO(open_(f, O_WRONLY | O_TRUNC), EROFS);
  CHECK_ERRNO(open_(fs.path("new"), O_WRONLY | O_CREAT), EROFS);
  CHECK_ERRNO(::mkdir(fs.path("newdir").c_str(), 0755), EROFS);
  CHECK_ERRNO(::mknod(fs.path("fifo").c_str(), S_IFIFO | 0644, 0), EROFS);
  CHECK_ERRNO(::symlink("f", fs.path("sl").c_str()), EROFS);
  CHECK_ERRNO(::link(f.c_str(), fs.path("hl").c_str()), EROFS);
  CHECK_ERRNO(::unlink(f.c_str()), EROFS);
  CHECK_ERRNO(::rmdir(fs.path("d").c_str()), EROFS);
  CHECK_ERRNO(::rename(f.c_str(), fs.path("g").c_str()), EROFS);
  CHECK_ERRNO(::chmod(f.c_str(), 0600), EROFS);
  CHECK_ERRNO(::chown(f.c_str(), 1, 1), EROFS);
  CHECK_ERRNO(::truncate(f.c_str(), 0), EROFS);
  CHECK_ERRNO(::utimensat(AT_FDCWD, f.c_str(), nullptr, 0), EROFS);
  CHECK_ERRNO(::setxattr(f.c_str(), "user.new", "1", 1, 0), EROFS);
  CHECK_ERRNO(::removexattr(f.c_str(), "user.k"), EROFS);
  CHECK_ERRNO(::access(f.c_str(), W_OK), EROFS);
}

}  // namespace

TEST_CASE("mount option ro refuses writes with EROFS", "[mount][ro]") {
  MountedFs fs;
  write_file(fs.path("f"), "persisted data");
  set_xattr(fs.path("f"), "user.k", "v");
  SYS(::mkdir(fs.path("d").c_str(), 0755));
  SYS(::symlink("f", fs.path("l").c_str()));

  fs.remount("ro");
  CHECK(has_opt(mount_opts_of(fs), "ro"));
  struct statvfs sv {};
  SYS(::statvfs(fs.root().c_str(), &sv));
  CHECK((sv.f_flag & ST_RDONLY) != 0);

  // Reading works.
  CHECK_BYTES(read_file(fs.path("f")), "persisted data");
  CHECK(get_xattr(fs.path("f"), "user.k") == "v");
  CHECK(list_names(fs.root()) == std::vector<std::string>{"d", "f", "l"});
  CHECK_BYTES(read_file(fs.path("l")), "persisted data");
  check_all_writes_refused(fs);

  // And rw again.
  fs.remount("rw");
  CHECK(has_opt(mount_opts_of(fs), "rw"));
  write_file(fs.path("new"), "writable again");
  CHECK_BYTES(read_file(fs.path("new")), "writable again");
  CHECK_BYTES(read_file(fs.path("f")), "persisted data");
}

TEST_CASE("a fresh filesystem mounted read-only", "[mount][ro]") {
  MountedFs fs(FsOptions{"ro"});
  CHECK(has_opt(mount_opts_of(fs), "ro"));
  list_names(fs.root());  // readdir works
  CHECK_ERRNO(::mkdir(fs.path("d").c_str(), 0755), EROFS);
  CHECK_ERRNO(::open(fs.path("f").c_str(), O_CREAT | O_WRONLY, 0644), EROFS);
}

TEST_CASE("generic mount options are accepted", "[mount]") {
  const std::string opts = GENERATE(as<std::string>{}, "noatime", "nodev", "nosuid", "relatime", "rw",
                                    "noatime,nodev,nosuid,relatime,rw");
  INFO("-o allow_other," << opts);
  MountedFs fs(FsOptions{opts});
  const std::string shown = mount_opts_of(fs);
  INFO("mountinfo options: " << shown);
  std::stringstream ss(opts);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    if (tok == "relatime" && has_opt(opts, "noatime")) continue;  // noatime wins
    CHECK(has_opt(shown, tok));
  }
  // The filesystem works normally.
  write_file(fs.path("f"), "works");
  CHECK_BYTES(read_file(fs.path("f")), "works");
  SYS(::mkdir(fs.path("d").c_str(), 0755));
  SYS(::rename(fs.path("f").c_str(), fs.path("d/f").c_str()));
  CHECK(list_names(fs.path("d")) == std::vector<std::string>{"f"});

  if (has_opt(opts, "nodev")) {
    // Device nodes can be created but not opened.
    SYS(::mknod(fs.path("null").c_str(), S_IFCHR | 0666, makedev(1, 3)));
    CHECK_ERRNO(::open(fs.path("null").c_str(), O_WRONLY), EACCES);
  }
  if (has_opt(opts, "noatime")) {
    struct timespec ts[2] = {{1000, 0}, {2000, 0}};
    SYS(::utimensat(AT_FDCWD, fs.path("d/f").c_str(), ts, 0));
    CHECK_BYTES(read_file(fs.path("d/f")), "works");
    CHECK(lstat_of(fs.path("d/f")).st_atim.tv_sec == 1000);
  }
  // The options survive a remount.
  fs.remount();
  const std::string again = mount_opts_of(fs);
  std::stringstream ss2(opts);
  while (std::getline(ss2, tok, ',')) {
    if (tok == "relatime" && has_opt(opts, "noatime")) continue;
    CHECK(has_opt(again, tok));
  }
  CHECK_BYTES(read_file(fs.path("d/f")), "works");
}

namespace dhfs_test {

// The kernel starts a FUSE mount with 128 KiB of read-ahead; dhfs raises it
// (see fs/fuse_bdi.h) as soon as the kernel has applied FUSE_INIT, to 4 MiB
// or what -o readahead says.
TEST_CASE("mount: read-ahead of the mount is raised to 4 MiB, or to -o readahead", "[mount][dhfs]") {
  DHFS_ONLY_STRICT();
  const std::string opt = GENERATE(as<std::string>{}, "", "readahead=8M");
  const std::string want = opt.empty() ? "4096\n" : "8192\n";
  FsOptions options;
  options.mount_opts = opt;
  MountedFs fs(options);
  struct stat st {};
  SYS(::stat(fs.root().c_str(), &st));
  const std::string sysfs = fmt::format("/sys/class/bdi/{}:{}/read_ahead_kb", major(st.st_dev), minor(st.st_dev));
  INFO(sysfs);
  REQUIRE(exists(sysfs));
  std::string value;
  INFO("option '" << opt << "'");
  for (int i = 0; i < 500 && (value = read_file(sysfs)) != want; ++i) sleep_ms(10);
  CHECK(value == want);
}

// The kernel gives a FUSE mount a strict 1% share of the dirty threshold;
// dhfs takes a kernel filesystem's share unless told otherwise.
TEST_CASE("mount: the dirty-page limit is a kernel filesystem's, or FUSE's with strict_dirty_limit",
          "[mount][dhfs]") {
  DHFS_ONLY_STRICT();
  const bool strict = GENERATE(false, true);
  FsOptions options;
  if (strict) options.mount_opts = "strict_dirty_limit";
  MountedFs fs(options);
  struct stat st {};
  SYS(::stat(fs.root().c_str(), &st));
  const std::string bdi = fmt::format("/sys/class/bdi/{}:{}/", major(st.st_dev), minor(st.st_dev));
  INFO(bdi << " strict_dirty_limit " << strict);
  if (!exists(bdi + "strict_limit")) {
    WARN("skipped: this kernel has no per-bdi strict_limit (Linux < 6.2)");
    return;
  }
  const std::string want_strict = strict ? "1\n" : "0\n", want_ratio = strict ? "1\n" : "100\n";
  // Set by a helper thread once FUSE_INIT is answered, like read-ahead.
  for (int i = 0; i < 500 && read_file(bdi + "max_ratio") != want_ratio; ++i) sleep_ms(10);
  CHECK(read_file(bdi + "strict_limit") == want_strict);
  CHECK(read_file(bdi + "max_ratio") == want_ratio);
}

}  // namespace dhfs_test

namespace dhfs_test {
namespace {

// Calls fn(task id, thread name) for each of the daemon's threads that serve
// FUSE over io_uring.
void for_each_ring_thread(pid_t pid, const std::function<void(const std::string&, const std::string&)>& fn) {
  for (const auto& task : list_names(fmt::format("/proc/{}/task", pid))) {
    // libfuse's own threads come and go: one may be gone by now.
    std::ifstream in(fmt::format("/proc/{}/task/{}/comm", pid, task));
    std::string comm;
    if (std::getline(in, comm) && comm.starts_with("dhfs-ring-q")) fn(task, comm);
  }
}

// Names of the daemon's threads that serve FUSE over io_uring.
std::vector<std::string> ring_threads(pid_t pid) {
  std::vector<std::string> found;
  for_each_ring_thread(pid, [&](const std::string&, const std::string& comm) { found.push_back(comm); });
  return found;
}

// Waits until every online CPU's queue has at least two ring threads (what
// start() spawns where max_threads is 16 and CPUs are few), or 5 s pass. The
// threads start one by one after the INIT reply, so seeing the first one says
// nothing about the others yet.
std::vector<std::string> wait_for_ring_threads(pid_t pid) {
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  std::vector<std::string> threads;
  for (int i = 0; i < 500; ++i, sleep_ms(10)) {
    threads = ring_threads(pid);
    bool all = true;
    for (long q = 0; q < cpus && all; ++q)
      all = std::count(threads.begin(), threads.end(), fmt::format("dhfs-ring-q{}", q)) >= 2;
    if (all) break;
  }
  return threads;
}

}  // namespace

// With fuse_uring=on and FUSE over io_uring in the kernel (Linux 6.14+) the
// daemon serves requests from threads that each own a ring entry
// ("dhfs-ring-qN", N the CPU queue; the default); with fuse_uring=off
// every request goes over /dev/fuse. Data and names written either way come back whole, with
// requests as large as the entries.
TEST_CASE("mount: requests go over io_uring with fuse_uring=on, over /dev/fuse with fuse_uring=off",
          "[mount][dhfs]") {
  DHFS_ONLY_STRICT();
  if (!exists("/sys/module/fuse/parameters/enable_uring")) {
    WARN("skipped: this kernel has no FUSE over io_uring (Linux < 6.14)");
    return;
  }
  // ring_spin=0: ring threads sleep as soon as they have replied.
  const std::string opts = GENERATE(as<std::string>{}, "fuse_uring=on", "fuse_uring=on,ring_spin=0", "fuse_uring=off");
  const bool uring = opts != "fuse_uring=off";
  FsOptions options;
  options.mount_opts = opts;
  MountedFs fs(options);
  INFO(opts);

  // The threads start once the kernel applied the INIT reply.
  if (uring) {
    const std::vector<std::string> threads = wait_for_ring_threads(fs.daemon_pid());
    REQUIRE_FALSE(threads.empty());
    CHECK(read_file("/sys/module/fuse/parameters/enable_uring") == "Y\n");
    // Every CPU queue has threads, so the kernel switched the connection
    // over (it does once every queue has an entry).
    const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    for (long q = 0; q < cpus; ++q)
      CHECK(std::count(threads.begin(), threads.end(), fmt::format("dhfs-ring-q{}", q)) >= 2);
  }

  // 3 MiB in one write and back in one read: requests of the entry's full
  // payload (1 MiB) and more than one of them in flight.
  std::string data(3 << 20, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
  write_file(fs.path("big"), data);
  for (int i = 0; i < 200; ++i) write_file(fs.path(fmt::format("small-{}", i)), fmt::format("file {}\n", i));
  SYS(::mkdir(fs.path("d").c_str(), 0755));
  SYS(::rename(fs.path("small-7").c_str(), fs.path("d/seven").c_str()));
  SYS(::setxattr(fs.path("big").c_str(), "user.k", "v", 1, 0));
  drop_caches();
  CHECK(read_file(fs.path("big")) == data);
  CHECK(read_file(fs.path("d/seven")) == "file 7\n");
  CHECK(list_names(fs.root()).size() == 201);  // big, d, 199 small files
  char v[8] = {};
  CHECK(::getxattr(fs.path("big").c_str(), "user.k", v, sizeof v) == 1);
  fs.remount();
  CHECK(read_file(fs.path("big")) == data);
  CHECK(read_file(fs.path("small-199")) == "file 199\n");
  CHECK((uring ? wait_for_ring_threads(fs.daemon_pid()) : ring_threads(fs.daemon_pid())).empty() != uring);
}

namespace {

// The CPUs each ring thread of queue `queue` may run on ("0", "0-1", ...).
std::vector<std::string> ring_thread_cpus(pid_t pid, unsigned queue) {
  std::vector<std::string> found;
  const std::string name = fmt::format("dhfs-ring-q{}", queue);
  for_each_ring_thread(pid, [&](const std::string& task, const std::string& comm) {
    if (comm != name) return;
    std::ifstream status(fmt::format("/proc/{}/task/{}/status", pid, task));
    for (std::string line; std::getline(status, line);)
      if (line.starts_with("Cpus_allowed_list:")) found.push_back(line.substr(line.find_first_not_of(" \t", 18)));
  });
  return found;
}

// Reads `files` at once from threads held to CPU 0, so that their requests
// (and the read-ahead's, several 1 MiB READs each) all land in queue 0,
// while `sample` runs now and then; stops when the readers are done.
void read_from_cpu0(const std::vector<std::string>& files, const std::function<void()>& sample) {
  std::atomic<int> running{static_cast<int>(files.size())};
  std::vector<std::thread> readers;
  for (const auto& f : files)
    readers.emplace_back([&running, f] {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(0, &one);
      ::pthread_setaffinity_np(::pthread_self(), sizeof one, &one);
      for (int round = 0; round < 3; ++round) {
        std::vector<char> buf(1 << 20);
        const int fd = ::open(f.c_str(), O_RDONLY);
        if (fd < 0) break;
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        while (::read(fd, buf.data(), buf.size()) > 0) {
        }
        ::close(fd);
      }
      --running;
    });
  while (running > 0) {
    sample();
    sleep_ms(1);
  }
  for (auto& t : readers) t.join();
}

}  // namespace

// ring_pin: the threads of CPU queue N serve on CPU N while requests come
// one at a time (auto, the default) and always (on), so that the process
// that waits for a reply and the thread that answers it share a CPU; with
// auto, many requests at once on one queue let its threads use every CPU.
// off: anywhere, always.
TEST_CASE("mount: ring threads run on their queue's CPU unless the queue is busy (ring_pin)", "[mount][dhfs]") {
  DHFS_ONLY_STRICT();
  if (!exists("/sys/module/fuse/parameters/enable_uring")) {
    WARN("skipped: this kernel has no FUSE over io_uring (Linux < 6.14)");
    return;
  }
  const std::string pin = GENERATE(as<std::string>{}, "auto", "on", "off");
  FsOptions options;
  options.mount_opts = "ring_pin=" + pin;
  MountedFs fs(options);
  INFO(options.mount_opts);
  REQUIRE_FALSE(wait_for_ring_threads(fs.daemon_pid()).empty());
  cpu_set_t mine;
  REQUIRE(::sched_getaffinity(0, sizeof mine, &mine) == 0);
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  const bool several = cpus >= 2 && CPU_COUNT(&mine) >= 2;  // else "anywhere" is one CPU too
  for (long q = 0; q < cpus; ++q) {
    if (!CPU_ISSET(q, &mine)) continue;
    for (const std::string& allowed : ring_thread_cpus(fs.daemon_pid(), static_cast<unsigned>(q))) {
      if (pin != "off")
        CHECK(allowed == std::to_string(q));
      else if (several)
        CHECK(allowed != std::to_string(q));
    }
  }
  if (pin == "off") return;
  if (!several || !CPU_ISSET(0, &mine)) {
    WARN("skipped the busy queue: this machine lets the test use fewer than 2 CPUs");
    return;
  }
  // Busy: four readers of 8 MiB each, all on CPU 0.
  std::vector<std::string> files;
  for (int i = 0; i < 4; ++i) {
    files.push_back(fs.path(fmt::format("big{}", i)));
    write_file(files.back(), std::string(8 << 20, static_cast<char>('a' + i)));
  }
  drop_caches();
  bool spread = false;
  read_from_cpu0(files, [&] {
    for (const std::string& allowed : ring_thread_cpus(fs.daemon_pid(), 0)) spread = spread || allowed != "0";
  });
  CHECK(spread == (pin == "auto"));
}

// `dhfsctl requests`: the daemon counts every request it answers by kind,
// over the ring and over /dev/fuse alike, and prints them.
TEST_CASE("dhfsctl requests counts what the daemon answered, by kind", "[mount][dhfs]") {
  DHFS_ONLY_STRICT();
  const std::string opts = GENERATE(as<std::string>{}, "fuse_uring=on", "fuse_uring=off");
  FsOptions options;
  options.mount_opts = opts;
  MountedFs fs(options);
  INFO(opts);
  auto count_of = [](const std::string& json, const std::string& name) -> std::uint64_t {
    const auto at = json.find("\"request\":\"" + name + "\"");
    return at == std::string::npos ? 0 : json_u64(json.substr(at), "count");
  };
  const std::string before = ctl_json({"requests", fs.root()});
  for (int i = 0; i < 20; ++i) write_file(fs.path(fmt::format("f{}", i)), "x");
  const std::string after = ctl_json({"requests", fs.root()});
  CHECK(count_of(after, "CREATE") == count_of(before, "CREATE") + 20);
  CHECK(count_of(after, "LOOKUP") >= count_of(before, "LOOKUP") + 20);  // a new name is looked up first
  // The first query is answered before the second counts it, not itself.
  CHECK(count_of(after, "IOCTL") == count_of(before, "IOCTL") + 1);
  CHECK(json_u64(after, "count") >= json_u64(before, "count") + 41);
  CHECK(json_u64(after, "total_ns") > json_u64(before, "total_ns"));

  const RunResult text = ctl({"requests", fs.root()});
  CHECK(text.exit_code() == 0);
  CHECK(text.output.find("CREATE") != std::string::npos);
  CHECK(text.output.find("mean us") != std::string::npos);
  const RunResult outside = ctl({"requests", "/"});
  CHECK(outside.exit_code() == 1);
  CHECK(outside.output.find("not on a dhfs filesystem") != std::string::npos);
}

}  // namespace dhfs_test
