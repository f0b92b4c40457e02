// Load: 16 writers, each in its own container region, create, overwrite,
// append, truncate, rename and remove files with periodic fsync, while 4
// readers read and verify files the writers have finished ("frozen" files,
// never changed again), for DHFS_LOAD_SECONDS (default 40; the long mode is
// e.g. DHFS_LOAD_SECONDS=1800). A watchdog fails the test if no thread makes
// progress for 60 s (a deadlock), and then kills the daemon so that every
// blocked thread returns. Afterwards the filesystem is unmounted, must pass
// fsck.dhfs -n, is mounted again, and every file must hold exactly what its
// writer's model says.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dhfsctl_support.h"
#include "fixture.h"

namespace dhfs_test {
namespace {

constexpr int kWriters = 16;
constexpr int kReaders = 4;
constexpr std::size_t kMaxFiles = 24;          // per writer
constexpr std::size_t kMaxFileBytes = 512 << 10;

int load_seconds() {
  const char* s = std::getenv("DHFS_LOAD_SECONDS");
  return s ? std::max(1, std::atoi(s)) : 40;
}

std::string random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::string out(n, '\0');
  for (std::size_t i = 0; i < n; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<std::size_t>(8, n - i));
  }
  return out;
}

// A file finished by a writer, for the readers.
struct Frozen {
  std::string path;
  std::string content;
};

struct Shared {
  std::atomic<std::uint64_t> progress{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<Frozen> frozen;
  std::vector<std::string> errors;  // one line each; the test thread reports them

  void error(std::string e) {
    std::lock_guard lk(mu);
    if (errors.size() < 20) errors.push_back(std::move(e));
    stop = true;
  }
};

class Writer {
 public:
  Writer(std::string dir, std::uint64_t seed, Shared& shared) : dir_(std::move(dir)), rng_(seed), shared_(shared) {}

  void run() {
    while (!shared_.stop) {
      step();
      ++shared_.progress;
    }
  }
  const std::map<std::string, std::string>& model() const { return files_; }

 private:
  std::uint64_t pick(std::uint64_t n) { return n ? rng_() % n : 0; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  bool check(bool ok, const std::string& what) {
    if (!ok) shared_.error(what + ": " + std::strerror(errno));
    return ok;
  }
  std::string any() {
    auto it = files_.begin();
    std::advance(it, static_cast<long>(pick(files_.size())));
    return it->first;
  }

  void step() {
    const std::uint64_t kind = pick(100);
    if (files_.size() < 4 || (kind < 25 && files_.size() < kMaxFiles)) return create();
    const std::string name = any();
    std::string& data = files_[name];
    if (kind < 55) {  // overwrite a range (maybe past the end)
      const std::size_t off = pick(data.size() + 1), len = 1 + pick(64 << 10);
      const std::string bytes = random_bytes(rng_, len);
      if (!write_at(name, off, bytes, O_WRONLY)) return;
      if (data.size() < off + len) data.resize(off + len, '\0');
      data.replace(off, len, bytes);
    } else if (kind < 70) {  // append
      if (data.size() > kMaxFileBytes) return truncate(name, data, pick(data.size()));
      const std::string bytes = random_bytes(rng_, 1 + pick(100 << 10));
      if (!write_at(name, data.size(), bytes, O_WRONLY)) return;
      data += bytes;
    } else if (kind < 78) {
      truncate(name, data, pick(data.size() + 8192));
    } else if (kind < 86) {  // rename (maybe over another file)
      const std::string to = "f" + std::to_string(pick(kMaxFiles * 2));
      if (to == name) return;
      if (!check(::rename(path(name).c_str(), path(to).c_str()) == 0, "rename " + path(name))) return;
      std::string moved = std::move(data);
      files_.erase(name);
      files_[to] = std::move(moved);
    } else if (kind < 94) {
      if (!check(::unlink(path(name).c_str()) == 0, "unlink " + path(name))) return;
      files_.erase(name);
    } else {  // fsync a file and the directory
      const int fd = ::open(path(name).c_str(), O_RDONLY);
      if (!check(fd >= 0, "open " + path(name))) return;
      check(::fsync(fd) == 0, "fsync " + path(name));
      ::close(fd);
      const int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY);
      if (!check(dfd >= 0, "open " + dir_)) return;
      check(::fsync(dfd) == 0, "fsync " + dir_);
      ::close(dfd);
    }
  }

  void create() {
    const std::string content = random_bytes(rng_, pick(kMaxFileBytes / 2));
    if (pick(8) == 0) {  // a frozen file for the readers: written once, kept
      const std::string p = path("frozen" + std::to_string(frozen_++));
      const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
      if (!check(fd >= 0, "create " + p)) return;
      const bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
      ::close(fd);
      if (!check(ok, "write " + p)) return;
      std::lock_guard lk(shared_.mu);
      shared_.frozen.push_back({p, content});
      return;
    }
    const std::string name = "f" + std::to_string(pick(kMaxFiles * 2));
    if (files_.count(name)) return;
    if (!write_at(name, 0, content, O_WRONLY | O_CREAT | O_EXCL)) return;
    files_[name] = content;
  }

  bool write_at(const std::string& name, std::size_t off, const std::string& bytes, int flags) {
    const int fd = ::open(path(name).c_str(), flags, 0644);
    if (!check(fd >= 0, "open " + path(name))) return false;
    const bool ok = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(off)) ==
                    static_cast<ssize_t>(bytes.size());
    ::close(fd);
    return check(ok, "pwrite " + path(name));
  }

  void truncate(const std::string& name, std::string& data, std::size_t size) {
    if (!check(::truncate(path(name).c_str(), static_cast<off_t>(size)) == 0, "truncate " + path(name))) return;
    data.resize(size, '\0');
  }

  std::string dir_;
  std::mt19937_64 rng_;
  Shared& shared_;
  std::map<std::string, std::string> files_;
  int frozen_ = 0;
};

void read_frozen(Shared& shared, std::uint64_t seed, std::atomic<std::uint64_t>& verified) {
  std::mt19937_64 rng(seed);
  std::string got;
  while (!shared.stop) {
    Frozen f;
    {
      std::lock_guard lk(shared.mu);
      if (shared.frozen.empty()) {
        f.path.clear();
      } else {
        f = shared.frozen[rng() % shared.frozen.size()];
      }
    }
    if (f.path.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    const int fd = ::open(f.path.c_str(), O_RDONLY);
    if (fd < 0) return shared.error("open " + f.path + ": " + std::strerror(errno));
    got.assign(f.content.size() + 1, '\0');
    const ssize_t n = ::pread(fd, got.data(), got.size(), 0);
    ::close(fd);
    if (n != static_cast<ssize_t>(f.content.size()) || got.compare(0, f.content.size(), f.content) != 0)
      return shared.error("read " + f.path + ": content differs (" + std::to_string(n) + " bytes)");
    ++verified;
    ++shared.progress;
  }
}

std::string read_all(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return "<" + std::string(std::strerror(errno)) + ">";
  std::string out;
  char buf[1 << 16];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

}  // namespace

TEST_CASE("load: 16 writers in 16 regions and 4 readers, then fsck and every byte verified", "[load][dhfs]") {
  DHFS_ONLY_STRICT();
  MountedFs fs(FsOptions{"", "4G"});
  std::vector<std::string> dirs;
  std::set<std::string> region_ids;
  for (int i = 0; i < kWriters; ++i) {
    dirs.push_back(fs.path("tenant" + std::to_string(i)));
    SYS(::mkdir(dirs.back().c_str(), 0755));
    region_ids.insert(json_field(ctl_json({"region", "create", dirs.back(), "--size", "16M"}), "id"));
  }
  REQUIRE(region_ids.size() == static_cast<std::size_t>(kWriters));

  Shared shared;
  std::atomic<std::uint64_t> verified{0};
  std::vector<std::unique_ptr<Writer>> writers;
  for (int i = 0; i < kWriters; ++i)
    writers.push_back(std::make_unique<Writer>(dirs[static_cast<std::size_t>(i)], 1000 + static_cast<std::uint64_t>(i), shared));
  const int seconds = load_seconds();
  bool stalled = false;
  std::uint64_t ops = 0;
  {
    std::vector<std::jthread> threads;
    for (auto& w : writers) threads.emplace_back([&w] { w->run(); });
    for (int r = 0; r < kReaders; ++r)
      threads.emplace_back([&, r] { read_frozen(shared, 77 + static_cast<std::uint64_t>(r), verified); });
    // The watchdog: progress must not stop for 60 s.
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    auto last_change = std::chrono::steady_clock::now();
    std::uint64_t last = 0;
    while (!shared.stop && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      const std::uint64_t now_progress = shared.progress.load();
      if (now_progress != last) {
        last = now_progress;
        last_change = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - last_change > std::chrono::seconds(60)) {
        stalled = true;
        // Unblocks every thread (their calls fail with ENOTCONN).
        ::kill(fs.daemon_pid(), SIGKILL);
        break;
      }
    }
    shared.stop = true;
    ops = shared.progress.load();
  }
  INFO("ran " << seconds << " s: " << ops << " operations, " << verified.load() << " frozen files verified");
  REQUIRE_FALSE(stalled);
  {
    std::string all;
    for (const auto& e : shared.errors) all += e + "\n";
    INFO(all);
    REQUIRE(shared.errors.empty());
  }
  CHECK(verified.load() > 0);
  WARN("load: " << ops << " operations in " << seconds << " s by " << kWriters << " writers and " << kReaders
                << " readers, " << verified.load() << " frozen files verified while written around");

  // Unmount, fsck -n clean, mount again: every file as its writer left it.
  fs.remount();
  std::size_t files = 0;
  for (int i = 0; i < kWriters; ++i)
    for (const auto& [name, content] : writers[static_cast<std::size_t>(i)]->model()) {
      const std::string p = dirs[static_cast<std::size_t>(i)] + "/" + name;
      INFO(p);
      CHECK(read_all(p) == content);
      ++files;
    }
  for (const Frozen& f : shared.frozen) {
    INFO(f.path);
    CHECK(read_all(f.path) == f.content);
  }
  CHECK(files > 0);
}

}  // namespace dhfs_test
