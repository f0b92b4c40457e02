// Fault injection: a FaultyDevice (crash_devices.h) fails chosen reads,
// writes or flushes with EIO. The caller of write/read/fsync/syncfs sees
// the error; afterwards the filesystem is shut down (or dropped if that
// fails too), reopened on the same medium without faults, and must be
// fsck-clean with everything made durable before the fault intact.
// Also an ENOSPC storm: threads fill a small device at once, everything is
// deleted, and no block may leak.
#include <fcntl.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "fs/filesystem.h"
#include "fs/fsck.h"
#include "fs/inode.h"
#include "fs/log.h"
#include "tests/unit/crash_devices.h"
#include "tests/unit/test_support.h"

namespace dhfs {
namespace {

using test::as_bytes;
using test::FaultRule;
using test::FaultyDevice;
using test::kRoot;
using test::pattern;

std::atomic<std::uint64_t> g_injected{0};

struct Rig {
  std::shared_ptr<MemDevice> medium = test::format_medium(64ULL << 20);
  std::shared_ptr<FaultyDevice> faulty = std::make_shared<FaultyDevice>(medium);
  std::unique_ptr<FileSystem> fs;
  Superblock sb;

  Rig() {
    std::string error;
    FsOptions o;
    o.commit_interval = std::chrono::hours(1);
    fs = FileSystem::open(std::make_unique<test::DeviceRef>(faulty), o, error);
    INFO(error);
    REQUIRE(fs);
    sb = fs->superblock();
  }
  std::uint64_t data_begin() const { return sb.data_start * kBlockSize; }
  std::uint64_t journal_begin() const { return sb.journal_start * kBlockSize; }
  std::uint64_t journal_end() const { return (sb.journal_start + sb.journal_blocks) * kBlockSize; }

  // Shuts down with the faults still armed (the device stays bad), drops
  // the filesystem, checks the medium and reopens it without faults.
  std::unique_ptr<FileSystem> reopen() {
    fs->shutdown();  // may fail: the device is still failing
    fs.reset();
    g_injected += faulty->injected();
    faulty->disarm();
    Checker checker(*medium, FsckOptions{});
    FsckReport r = checker.run();
    std::string problems;
    for (const auto& p : r.problems) problems += p + "; ";
    INFO("fsck after faults: " << r.reason << " " << problems);
    CHECK(r.exit_code == kFsckClean);
    return test::open_fs(medium);
  }
};

// Creates `name` with `content`; returns the first error (0 if none).
int try_write_file(FileSystem& fs, std::string_view name, const std::string& content, Ino* ino = nullptr) {
  Attr a;
  if (int rc = fs.create(kRootIno, name, 0644, O_CREAT | O_RDWR, kRoot, &a); rc) return rc;
  if (ino) *ino = a.ino;
  ssize_t n = fs.write(a.ino, 0, as_bytes(content));
  fs.release(a.ino);
  fs.forget(a.ino, 1);
  return n < 0 ? static_cast<int>(n) : (n == static_cast<ssize_t>(content.size()) ? 0 : -EIO);
}

TEST_CASE("faults: a failing data write returns EIO, durable data survives", "[faults]") {
  Rig rig;
  const std::string keep = pattern(300000, 1);
  test::write_file(*rig.fs, kRootIno, "keep", keep);
  REQUIRE(rig.fs->syncfs() == 0);
  const FsStats before = rig.fs->stats();
  rig.faulty->arm({{FaultRule::Kind::kWrite, 0, false, rig.data_begin(), UINT64_MAX}});
  Ino lost = 0;
  int rc = try_write_file(*rig.fs, "lost", pattern(200000, 2), &lost);
  CHECK(rc == -EIO);
  // An in-place overwrite of the durable file fails the same way.
  const Ino k = test::resolve(*rig.fs, "keep");
  rig.fs->open(k, O_RDWR);
  CHECK(rig.fs->write(k, 4096, as_bytes(pattern(8192, 3))) == -EIO);
  rig.fs->release(k);
  CHECK(rig.faulty->injected() >= 2);
  // The blocks the failed write had allocated are not leaked, and the
  // filesystem goes on working once the device does.
  rig.faulty->disarm();
  REQUIRE(rig.fs->syncfs() == 0);
  CHECK(test::getattr_of(*rig.fs, lost).size == 0);
  CHECK(rig.fs->stats().free_blocks == before.free_blocks);
  CHECK(test::read_file(*rig.fs, k) == keep);
  REQUIRE(rig.fs->unlink(kRootIno, "lost") == 0);
  const std::string again = pattern(200000, 7);
  REQUIRE(try_write_file(*rig.fs, "again", again) == 0);
  REQUIRE(rig.fs->syncfs() == 0);
  auto fs = rig.reopen();
  CHECK(test::read_file(*fs, test::resolve(*fs, "again")) == again);
  CHECK(test::read_file(*fs, test::resolve(*fs, "keep")) == keep);
}

TEST_CASE("faults: a failing read returns EIO and changes nothing", "[faults]") {
  Rig rig;
  const std::string keep = pattern(100000, 4);
  Ino ino = test::write_file(*rig.fs, kRootIno, "keep", keep);
  REQUIRE(rig.fs->syncfs() == 0);
  rig.faulty->arm({{FaultRule::Kind::kRead, 0, false, rig.data_begin(), UINT64_MAX}});
  AlignedBuffer scratch;
  std::span<const std::byte> got;
  CHECK(rig.fs->read(ino, 0, 65536, scratch, &got) == -EIO);
  // A partial overwrite must load the rest of the block first: that fails too.
  rig.fs->open(ino, O_RDWR);
  CHECK(rig.fs->write(ino, 100, as_bytes("x")) == -EIO);
  rig.fs->release(ino);
  CHECK(rig.faulty->injected() >= 2);
  rig.faulty->disarm();
  CHECK(test::read_file(*rig.fs, ino) == keep);
  auto fs = rig.reopen();
  CHECK(test::read_file(*fs, test::resolve(*fs, "keep")) == keep);
}

// Every message the filesystem logs while it lives, for the test to check.
class LogLines {
 public:
  LogLines()
      : capture_([this](log::Level level, std::string_view line) {
          std::lock_guard lk(mu_);
          lines_.push_back({level, std::string(line)});
        }) {}
  // How many lines of `level` contain every one of `parts`.
  int count(log::Level level, std::initializer_list<std::string_view> parts) const {
    std::lock_guard lk(mu_);
    int n = 0;
    for (const auto& [l, text] : lines_) {
      bool all = l == level;
      for (std::string_view p : parts) all = all && text.find(p) != std::string::npos;
      n += all;
    }
    return n;
  }
  std::string all() const {
    std::lock_guard lk(mu_);
    std::string out;
    for (const auto& line : lines_) out += line.second + "\n";
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::pair<log::Level, std::string>> lines_;
  log::Capture capture_;  // last: it calls into the members above
};

TEST_CASE("faults: a failing journal write or flush fails fsync, the synced state survives", "[faults]") {
  LogLines logged;
  Rig rig;
  const std::string keep = pattern(50000, 5);
  test::write_file(*rig.fs, kRootIno, "keep", keep);
  REQUIRE(rig.fs->syncfs() == 0);
  const std::string late = pattern(50000, 6);
  Ino ino = test::write_file(*rig.fs, kRootIno, "late", late);
  SECTION("journal write") {
    rig.faulty->arm({{FaultRule::Kind::kWrite, 1, true, rig.journal_begin(), rig.journal_end()}});
  }
  SECTION("flush") { rig.faulty->arm({{FaultRule::Kind::kFlush, 1, true}}); }
  SECTION("second flush of the commit (after the batch)") {
    rig.faulty->arm({{FaultRule::Kind::kFlush, 2, true}});
  }
  CHECK(rig.fs->fsync(ino, false) == -EIO);
  // The error sticks: nothing that can never be durable is accepted.
  CHECK(rig.fs->syncfs() != 0);
  CHECK(rig.faulty->injected() >= 1);
  // ... and the operator learns it once, with the cause.
  INFO("log:\n" << logged.all());
  CHECK(logged.count(log::Level::kError, {"journal commit failed", std::strerror(EIO)}) == 1);
  auto fs = rig.reopen();
  CHECK(test::read_file(*fs, test::resolve(*fs, "keep")) == keep);
  // "late" may or may not have made it, but never half.
  int err = 0;
  Ino l = test::lookup_ino(*fs, kRootIno, "late", &err);
  if (l) CHECK(test::read_file(*fs, l) == late);
}

TEST_CASE("faults: a checkpoint that fails at unmount loses nothing, the journal replays it", "[faults]") {
  LogLines logged;
  Rig rig;
  const std::string kept = pattern(300000, 7);
  test::write_file(*rig.fs, kRootIno, "kept", kept);
  REQUIRE(rig.fs->syncfs() == 0);
  // Every write to the data area fails from now on: there the checkpoint
  // stream goes (a host filesystem that is full fails them the same way).
  rig.faulty->arm({{FaultRule::Kind::kWrite, 1, true, rig.data_begin(), UINT64_MAX, -ENOSPC}});
  Attr made;
  REQUIRE(rig.fs->mkdir(kRootIno, "made after", 0755, kRoot, &made) == 0);
  rig.fs->forget(made.ino, 1);
  CHECK(rig.fs->shutdown() == 0);
  CHECK(rig.faulty->injected() >= 1);
  INFO("log:\n" << logged.all());
  CHECK(logged.count(log::Level::kWarning, {"checkpoint at unmount failed", std::strerror(ENOSPC), "replays"}) == 1);
  auto fs = rig.reopen();
  CHECK(test::read_file(*fs, test::resolve(*fs, "kept")) == kept);
  CHECK(test::lookup_ino(*fs, kRootIno, "made after") == made.ino);
}

// The Nth write (or flush) from a point on fails, for every N the workload
// reaches: whatever was synced before the fault is intact afterwards, and
// the medium is clean.
TEST_CASE("faults: the Nth write or flush fails, for every N", "[faults]") {
  std::uint64_t runs = 0, failed_calls = 0;
  const std::uint64_t injected_before = g_injected.load();
  for (int kind = 0; kind < 2; ++kind) {
    for (std::uint64_t n = 1;; ++n) {
      INFO((kind ? "flush " : "write ") << n);
      Rig rig;
      std::map<std::string, std::string> durable;  // name -> content synced before any fault
      for (int i = 0; i < 3; ++i) {
        const std::string c = pattern(20000 + i * 4096, 100 + i);
        test::write_file(*rig.fs, kRootIno, "base" + std::to_string(i), c);
        durable["base" + std::to_string(i)] = c;
      }
      REQUIRE(rig.fs->syncfs() == 0);
      const std::uint64_t writes_before = rig.faulty->writes_seen();
      rig.faulty->arm({{kind ? FaultRule::Kind::kFlush : FaultRule::Kind::kWrite, n, n % 2 == 0}});
      // A workload: new files, overwrites, clones, syncs, a checkpoint.
      std::map<std::string, std::string> acked;  // written without error, then synced without error
      std::map<std::string, std::string> written;
      bool all_ok = true;
      for (int i = 0; i < 6; ++i) {
        const std::string name = "w" + std::to_string(i);
        const std::string c = pattern(8192 * (i + 1) + 77, 200 + i);
        Ino ino = 0;
        int rc = try_write_file(*rig.fs, name, c, &ino);
        if (rc) {
          all_ok = false;
          ++failed_calls;
        } else {
          written[name] = c;
        }
        if (i == 2) {
          Ino src = test::resolve(*rig.fs, "base1");
          if (ino && rig.fs->copy_file_range(src, 0, ino, 0, 8192) != 8192) {
            all_ok = false;
            written.erase(name);
            ++failed_calls;
          } else if (ino && written.count(name)) {
            written[name].replace(0, 8192, durable["base1"].substr(0, 8192));
          }
        }
        if (i == 3 && rig.fs->checkpoint() != 0) ++failed_calls;
        if (i % 2 == 1) {
          if (rig.fs->syncfs() == 0) {
            for (auto& [k, v] : written) acked[k] = v;
          } else {
            ++failed_calls;
          }
          written.clear();
        }
      }
      const bool reached = rig.faulty->injected() > 0;
      auto fs = rig.reopen();
      for (const auto& [name, c] : durable) CHECK(test::read_file(*fs, test::resolve(*fs, name)) == c);
      for (const auto& [name, c] : acked) {
        INFO(name);
        CHECK(test::read_file(*fs, test::resolve(*fs, name)) == c);
      }
      ++runs;
      // Stop once N lies beyond the workload's I/O.
      if (!reached) {
        CHECK(all_ok);
        break;
      }
      (void)writes_before;
    }
  }
  std::cout << "faults: Nth-I/O runs " << runs << ", faults injected " << g_injected.load() - injected_before
            << ", calls that failed " << failed_calls << " (all fault tests so far: " << g_injected.load()
            << " faults injected)\n";
  CHECK(runs > 10);
}

// Mount and fsck on a device whose Nth read fails: mount refuses with one
// line (or, if it can do without that read, loads everything), fsck reports
// an error; neither crashes nor hangs, and neither writes anything.
TEST_CASE("faults: the Nth read fails during mount and fsck", "[faults]") {
  auto medium = test::format_medium(64ULL << 20);
  {
    auto fs = test::open_fs(medium);
    for (int i = 0; i < 20; ++i) test::write_file(*fs, kRootIno, "f" + std::to_string(i), pattern(5000, i));
    REQUIRE(fs->checkpoint() == 0);
    for (int i = 20; i < 30; ++i) test::write_file(*fs, kRootIno, "f" + std::to_string(i), pattern(5000, i));
    REQUIRE(fs->syncfs() == 0);
    // A crash: the journal holds the last ten files.
    medium = test::crash_copy(medium);
  }
  const std::vector<std::byte> image = medium->bytes();
  std::uint64_t injected = 0, mounts_refused = 0, mounts_despite = 0, fsck_errors = 0;
  for (std::uint64_t n = 1;; ++n) {
    INFO("read " << n);
    auto copy = std::make_shared<MemDevice>(image.size());
    copy->bytes() = image;
    auto faulty = std::make_shared<FaultyDevice>(copy);
    faulty->arm({{FaultRule::Kind::kRead, n, false}});
    FsOptions o;
    o.defer_start = true;
    std::string error;
    auto fs = FileSystem::open(std::make_unique<test::DeviceRef>(faulty), o, error);
    const bool hit = faulty->injected() > 0;
    injected += faulty->injected();
    faulty->disarm();
    if (!fs) {
      ++mounts_refused;
      CHECK(hit);
      CHECK(!error.empty());
      CHECK(error.find('\n') == std::string::npos);
      const bool unchanged = copy->bytes() == image;
      CHECK(unchanged);
    } else if (hit) {
      // The mount did without the failed read: what it loaded is complete.
      ++mounts_despite;
      WARN("mount succeeded although read " << n << " failed");
      CHECK(test::list_dir(*fs, kRootIno).size() == 30);
    }
    fs.reset();
    copy->bytes() = image;
    auto faulty2 = std::make_shared<FaultyDevice>(copy);
    faulty2->arm({{FaultRule::Kind::kRead, n, false}});
    Checker checker(*faulty2, FsckOptions{});
    FsckReport r = checker.run();
    injected += faulty2->injected();
    if (faulty2->injected() > 0) {
      ++fsck_errors;
      CHECK(r.exit_code != kFsckClean);
    } else {
      CHECK(r.exit_code == kFsckClean);
    }
    const bool unchanged = copy->bytes() == image;
    CHECK(unchanged);  // fsck without repair writes nothing
    if (!hit && faulty2->injected() == 0) break;
  }
  g_injected += injected;
  std::cout << "faults: read faults at mount/fsck: " << injected << " injected, " << mounts_refused
            << " mounts refused, " << mounts_despite << " mounts without the failed read, " << fsck_errors
            << " fsck runs failed\n";
  CHECK(mounts_refused > 3);
}

TEST_CASE("faults: an ENOSPC storm leaks no blocks", "[faults][enospc]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium, 64ULL << 20);
  REQUIRE(fs->checkpoint() == 0);
  REQUIRE(fs->syncfs() == 0);
  const FsStats empty = fs->stats();
  constexpr int kThreads = 4;
  std::atomic<std::uint64_t> enospc{0}, other_errors{0}, files{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      const std::string chunk = pattern(256 << 10, 900 + t);
      for (int i = 0;; ++i) {
        Attr a;
        const std::string name = "t" + std::to_string(t) + "-" + std::to_string(i);
        int rc = fs->create(kRootIno, name, 0644, O_CREAT | O_RDWR, kRoot, &a);
        if (rc == -ENOSPC) {
          ++enospc;
          return;
        }
        if (rc) {
          ++other_errors;
          return;
        }
        ++files;
        bool full = false;
        for (int k = 0; k < 8 && !full; ++k) {
          // Distinct bytes per file and chunk: nothing to deduplicate.
          std::string c = chunk;
          c[0] = static_cast<char>(i);
          c[1] = static_cast<char>(k);
          c[2] = static_cast<char>(i >> 8);
          ssize_t n = fs->write(a.ino, static_cast<std::uint64_t>(k) * c.size(), as_bytes(c));
          if (n == -ENOSPC) {
            ++enospc;
            full = true;
          } else if (n < 0) {
            ++other_errors;
            full = true;
          }
        }
        fs->release(a.ino);
        fs->forget(a.ino, 1);
        if (full) return;
      }
    });
  for (auto& th : threads) th.join();
  CHECK(other_errors == 0);
  CHECK(enospc >= static_cast<std::uint64_t>(kThreads));
  std::cout << "faults: ENOSPC storm: " << files << " files, " << enospc << " ENOSPC errors\n";
  for (const std::string& name : test::list_dir(*fs, kRootIno)) REQUIRE(fs->unlink(kRootIno, name) == 0);
  REQUIRE(fs->syncfs() == 0);
  REQUIRE(fs->checkpoint() == 0);
  REQUIRE(fs->syncfs() == 0);
  FsStats after = fs->stats();
  CHECK(after.free_blocks == empty.free_blocks);
  CHECK(after.allocated_blocks == 0);
  REQUIRE(fs->shutdown() == 0);
  fs.reset();
  Checker checker(*medium, FsckOptions{});
  FsckReport r = checker.run();
  INFO(r.reason);
  CHECK(r.exit_code == kFsckClean);
  fs = test::open_fs(medium);
  CHECK(fs->stats().free_blocks == empty.free_blocks);
}

}  // namespace
}  // namespace dhfs
