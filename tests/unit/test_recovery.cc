// Persistence and crash recovery of the filesystem core: everything must
// survive a clean remount, and everything synced must survive a crash.
//
// A crash is simulated by copying the device's bytes (test::crash_copy)
// while the filesystem is still running, and opening the copy. MemDevice
// makes every completed write durable at once, so the copy holds at least
// what was synced; tests that need "not yet synced" to stay off the device
// use a commit interval of an hour, so that nothing reaches the journal
// before the test calls syncfs().
//
// Catch2 assertions are not thread-safe: writer threads only record what
// went wrong, and the test thread asserts.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fs/filesystem.h"
#include "fs/format.h"
#include "fs/inode.h"
#include "fs/log.h"
#include "fs/mkfs.h"
#include "tests/unit/test_support.h"

namespace dhfs {
namespace {

using test::as_bytes;
using test::getattr_of;
using test::kRoot;
using test::lookup_ino;
using test::pattern;
using test::read_at;
using test::read_file;
using test::write_at;
using test::write_file;

FsOptions quiet_options() {
  FsOptions o;
  o.commit_interval = std::chrono::hours(1);
  return o;
}

Ino mkdir_(FileSystem& fs, Ino parent, std::string_view name, std::uint32_t mode = 0755) {
  Attr a;
  INFO("mkdir " << name);
  REQUIRE(fs.mkdir(parent, name, mode, kRoot, &a) == 0);
  fs.forget(a.ino, 1);
  return a.ino;
}

void set_times(FileSystem& fs, Ino ino, std::int64_t atime, std::int64_t mtime) {
  SetAttr sa;
  sa.valid = SetAttr::kAtime | SetAttr::kMtime;
  sa.atime_ns = atime;
  sa.mtime_ns = mtime;
  Attr a;
  REQUIRE(fs.setattr(ino, sa, &a) == 0);
}

// A tree with one of everything the core can store.
void populate(FileSystem& fs) {
  Attr a;
  SetAttr sa;
  Ino d1 = mkdir_(fs, kRootIno, "dir1", 0750);
  sa.valid = SetAttr::kUid | SetAttr::kGid;
  sa.uid = 1000;
  sa.gid = 1001;
  REQUIRE(fs.setattr(d1, sa, &a) == 0);
  Ino d2 = mkdir_(fs, d1, "nested");
  Ino d3 = mkdir_(fs, d2, "deeper", 02775);
  mkdir_(fs, kRootIno, "empty");

  Ino small = write_file(fs, kRootIno, "small", "hello world");
  set_times(fs, small, 1111111111123456789LL, 999999999000000001LL);
  Ino medium = write_file(fs, d1, "medium", pattern(300001, 1));
  sa.valid = SetAttr::kMode;
  sa.mode = 04755;
  REQUIRE(fs.setattr(medium, sa, &a) == 0);
  write_file(fs, d2, "aligned", pattern(8192, 2));
  write_file(fs, d3, "zero-length", "");

  Ino sparse = write_file(fs, kRootIno, "sparse", "");
  write_at(fs, sparse, 1 << 20, "one MiB in");
  write_at(fs, sparse, (5ULL << 30) + 17, pattern(5000, 3));

  Ino pre = write_file(fs, kRootIno, "prealloc", pattern(5000, 4));
  REQUIRE(fs.fallocate(pre, FALLOC_FL_KEEP_SIZE, 0, 64 * 1024) == 0);
  Ino pre2 = write_file(fs, kRootIno, "prealloc-extend", "");
  REQUIRE(fs.fallocate(pre2, 0, 4096, 3 * 4096 + 5) == 0);
  write_at(fs, pre2, 5000, "inside");

  Ino punched = write_file(fs, kRootIno, "punched", std::string(6 * 4096, 'p'));
  REQUIRE(fs.fallocate(punched, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 3000, 3 * 4096) == 0);

  Ino trunc = write_file(fs, kRootIno, "trunc", std::string(12288, 't'));
  sa.valid = SetAttr::kSize;
  sa.size = 5000;
  REQUIRE(fs.setattr(trunc, sa, &a) == 0);
  sa.size = 9000;
  REQUIRE(fs.setattr(trunc, sa, &a) == 0);

  REQUIRE(fs.symlink(kRootIno, "link", "dir1/medium", kRoot, &a) == 0);
  fs.forget(a.ino, 1);
  REQUIRE(fs.symlink(d2, "longlink", std::string(kSymlinkMax, 'L'), kRoot, &a) == 0);
  fs.forget(a.ino, 1);
  REQUIRE(fs.link(small, d1, "small-hard", &a) == 0);
  fs.forget(small, 1);
  REQUIRE(fs.link(small, d3, "small-hard2", &a) == 0);
  fs.forget(small, 1);

  REQUIRE(fs.mknod(kRootIno, "chr", S_IFCHR | 0620, makedev(1, 3), kRoot, &a) == 0);
  fs.forget(a.ino, 1);
  REQUIRE(fs.mknod(kRootIno, "blk", S_IFBLK | 0660, makedev(8, 1), kRoot, &a) == 0);
  fs.forget(a.ino, 1);
  REQUIRE(fs.mknod(d1, "fifo", S_IFIFO | 0644, 0, kRoot, &a) == 0);
  fs.forget(a.ino, 1);
  REQUIRE(fs.mknod(d1, "sock", S_IFSOCK | 0755, 0, kRoot, &a) == 0);
  fs.forget(a.ino, 1);

  write_file(fs, kRootIno, "wh-src", "moved by whiteout");
  REQUIRE(fs.rename(kRootIno, "wh-src", d1, "wh-dst", kRenameWhiteout, kRoot) == 0);
  write_file(fs, kRootIno, "before", "renamed");
  REQUIRE(fs.rename(kRootIno, "before", d3, "after", 0, kRoot) == 0);
  write_file(fs, kRootIno, "x1", "one");
  write_file(fs, d2, "x2", "two");
  REQUIRE(fs.rename(kRootIno, "x1", d2, "x2", kRenameExchange, kRoot) == 0);
  mkdir_(fs, kRootIno, "movedir");
  REQUIRE(fs.rename(kRootIno, "movedir", d2, "moveddir", 0, kRoot) == 0);

  write_file(fs, kRootIno, "gone", pattern(20000, 5));
  REQUIRE(fs.unlink(kRootIno, "gone") == 0);
  write_file(fs, kRootIno, std::string(255, 'N'), "long name");

  REQUIRE(fs.setxattr(kRootIno, "trusted.overlay.opaque", "y", 0) == 0);
  REQUIRE(fs.setxattr(small, "user.one", "1", 0) == 0);
  REQUIRE(fs.setxattr(small, "security.selinux", std::string("ctx\0", 4), 0) == 0);
  REQUIRE(fs.setxattr(medium, "user.big", pattern(kXattrValueMax, 6), 0) == 0);
  REQUIRE(fs.setxattr(d3, "user.dir", "d", 0) == 0);
  Ino many = write_file(fs, kRootIno, "many-xattrs", "m");
  for (int i = 0; i < 200; ++i) REQUIRE(fs.setxattr(many, "user.x" + std::to_string(i), pattern(i, i), 0) == 0);
  for (int i = 0; i < 200; i += 3) REQUIRE(fs.removexattr(many, "user.x" + std::to_string(i)) == 0);
}

// Stream position and padded length of the newest batch in the journal ring
// of `medium` (0, 0 if there is none).
std::pair<std::uint64_t, std::uint64_t> newest_batch(MemDevice& medium, const Superblock& sb) {
  const std::uint64_t capacity = sb.journal_blocks * kBlockSize;
  std::pair<std::uint64_t, std::uint64_t> best{0, 0};
  bool found = false;
  for (std::uint64_t b = 0; b < sb.journal_blocks; ++b) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(medium.bytes().data()) + (sb.journal_start + b) * kBlockSize;
    std::string why;
    auto h = BatchHeader::decode({p, BatchHeader::kSize}, why);
    if (!h || h->uuid_tag != sb.uuid_tag() || h->lsn % capacity != b * kBlockSize) continue;
    if (!found || h->lsn > best.first) best = {h->lsn, h->padded_bytes()};
    found = true;
  }
  return best;
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> all_batches(MemDevice& medium, const Superblock& sb) {
  const std::uint64_t capacity = sb.journal_blocks * kBlockSize;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  for (std::uint64_t b = 0; b < sb.journal_blocks; ++b) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(medium.bytes().data()) + (sb.journal_start + b) * kBlockSize;
    std::string why;
    auto h = BatchHeader::decode({p, BatchHeader::kSize}, why);
    if (!h || h->uuid_tag != sb.uuid_tag() || h->lsn % capacity != b * kBlockSize) continue;
    out.emplace_back(h->lsn, h->padded_bytes());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::byte* journal_byte(MemDevice& medium, const Superblock& sb, std::uint64_t lsn) {
  return medium.bytes().data() + sb.journal_start * kBlockSize + lsn % (sb.journal_blocks * kBlockSize);
}

}  // namespace

// ------------------------------------------------------------ clean remount

TEST_CASE("recovery: everything persists across shutdown and reopen", "[recovery]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium);
  populate(*fs);
  const auto before = test::snapshot(*fs);
  const auto stats_before = fs->stats();
  REQUIRE(before.size() >= 30);
  REQUIRE(fs->shutdown() == 0);
  CHECK(fs->shutdown() == 0);  // idempotent
  fs.reset();

  fs = test::open_fs(medium);
  CHECK(test::diff(before, test::snapshot(*fs)) == "");
  const auto stats_after = fs->stats();
  CHECK(stats_after.inodes == stats_before.inodes);
  CHECK(stats_after.logical_bytes == stats_before.logical_bytes);
  CHECK(stats_after.allocated_blocks == stats_before.allocated_blocks);
  CHECK(stats_after.free_blocks == stats_before.free_blocks);

  // Atimes persist too. Mounted noatime, reading for the snapshot does not
  // change them.
  REQUIRE(fs->shutdown() == 0);
  fs.reset();
  FsOptions noatime;
  noatime.atime = AtimeMode::kNoatime;
  test::SnapshotOptions with_atime;
  with_atime.atime = true;
  fs = test::open_fs(medium, noatime);
  const auto atimes = test::snapshot(*fs, with_atime);
  CHECK(atimes.at("small").atime_ns != 0);
  REQUIRE(fs->shutdown() == 0);
  fs.reset();
  fs = test::open_fs(medium, noatime);
  CHECK(test::diff(atimes, test::snapshot(*fs, with_atime)) == "");

  // And a third mount after changes on the second.
  fs.reset();
  fs = test::open_fs(medium);
  REQUIRE(fs->unlink(kRootIno, "small") == 0);
  REQUIRE(fs->rmdir(kRootIno, "empty") == 0);
  const auto changed = test::snapshot(*fs);
  REQUIRE(fs->shutdown() == 0);
  fs.reset();
  fs = test::open_fs(medium);
  CHECK(test::diff(changed, test::snapshot(*fs)) == "");
}

TEST_CASE("recovery: inode numbers are stable and generations keep growing", "[recovery]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium);
  std::vector<Ino> inos;
  decltype(Attr::generation) max_gen = 0;
  for (int i = 0; i < 50; ++i) {
    Ino ino = write_file(*fs, kRootIno, "f" + std::to_string(i), "");
    inos.push_back(ino);
    max_gen = std::max(max_gen, getattr_of(*fs, ino).generation);
  }
  for (int i = 0; i < 50; i += 2) REQUIRE(fs->unlink(kRootIno, "f" + std::to_string(i)) == 0);
  REQUIRE(fs->shutdown() == 0);
  fs.reset();
  fs = test::open_fs(medium);
  for (int i = 1; i < 50; i += 2) CHECK(lookup_ino(*fs, kRootIno, "f" + std::to_string(i)) == inos[i]);
  // A reused inode number comes with a new generation.
  for (int i = 0; i < 30; ++i) {
    Ino ino = write_file(*fs, kRootIno, "g" + std::to_string(i), "");
    CHECK(getattr_of(*fs, ino).generation > max_gen);
  }
}

// ------------------------------------------------------------------ crashes

TEST_CASE("recovery: everything synced survives a crash (journal replay only)", "[recovery][crash]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium);
  populate(*fs);
  REQUIRE(fs->syncfs() == 0);
  auto copy = test::crash_copy(medium);
  const auto live = test::snapshot(*fs);

  std::string error;
  auto crashed = test::try_open_fs(copy, error);
  INFO("open after crash: " << error);
  REQUIRE(crashed);
  CHECK(crashed->journal_replayed_batches() > 0);
  CHECK(test::diff(live, test::snapshot(*crashed)) == "");
  // The recovered filesystem works and persists.
  write_file(*crashed, kRootIno, "after-crash", "x");
  const auto again = test::snapshot(*crashed);
  REQUIRE(crashed->shutdown() == 0);
  crashed.reset();
  crashed = test::open_fs(copy);
  CHECK(test::diff(again, test::snapshot(*crashed)) == "");
}

TEST_CASE("recovery: fsync of one file makes everything before it durable", "[recovery][crash]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium, test::kDefaultDeviceBytes, quiet_options());
  Ino d = mkdir_(*fs, kRootIno, "d");
  Ino f = write_file(*fs, d, "f", pattern(50000, 1));
  REQUIRE(fs->fsync(f, false) == 0);
  write_file(*fs, d, "unsynced", "maybe");
  auto copy = test::crash_copy(medium);
  auto crashed = test::open_fs(copy);
  CHECK(read_file(*crashed, test::resolve(*crashed, "d/f")) == pattern(50000, 1));
  int err = 0;
  lookup_ino(*crashed, lookup_ino(*crashed, kRootIno, "d"), "unsynced", &err);
  CHECK(err == -ENOENT);  // never reached the journal (commit interval: 1 h)
}

TEST_CASE("recovery: 10k creates with checkpoints in between, then a crash", "[recovery][crash]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium);
  std::vector<Ino> dirs;
  for (int i = 0; i < 10; ++i) dirs.push_back(mkdir_(*fs, kRootIno, "d" + std::to_string(i)));
  for (int i = 0; i < 10000; ++i) {
    Ino ino = write_file(*fs, dirs[i % 10], "f" + std::to_string(i), std::to_string(i));
    if (i % 100 == 0) REQUIRE(fs->setxattr(ino, "user.i", std::to_string(i), 0) == 0);
    if ((i + 1) % 2500 == 0) REQUIRE(fs->checkpoint() == 0);
  }
  SECTION("no changes after the last checkpoint") {}
  SECTION("changes after the last checkpoint come from the journal") {
    for (int i = 0; i < 10000; i += 7) REQUIRE(fs->unlink(dirs[i % 10], "f" + std::to_string(i)) == 0);
    for (int i = 1; i < 10000; i += 77)
      REQUIRE(fs->rename(dirs[i % 10], "f" + std::to_string(i), dirs[(i + 1) % 10], "r" + std::to_string(i), 0,
                         kRoot) == 0);
    for (int i = 0; i < 100; ++i) write_file(*fs, dirs[3], "late" + std::to_string(i), pattern(5000, i));
    REQUIRE(fs->rename(kRootIno, "d9", dirs[0], "d9-moved", 0, kRoot) == 0);
  }
  REQUIRE(fs->syncfs() == 0);
  auto copy = test::crash_copy(medium);
  const auto live = test::snapshot(*fs);
  CHECK(live.size() > 8000);

  std::string error;
  auto crashed = test::try_open_fs(copy, error);
  INFO("open after crash: " << error);
  REQUIRE(crashed);
  CHECK(test::diff(live, test::snapshot(*crashed)) == "");
  CHECK(crashed->stats().inodes == fs->stats().inodes);

  // And the clean way.
  REQUIRE(fs->shutdown() == 0);
  fs.reset();
  fs = test::open_fs(medium);
  CHECK(test::diff(live, test::snapshot(*fs)) == "");
}

TEST_CASE("recovery: the journal wraps many times under background checkpoints", "[recovery][crash]") {
  // 16 MiB of journal; about 75 MiB of transactions (64 KiB xattr values).
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium);
  const std::uint64_t journal_bytes = fs->superblock().journal_blocks * kBlockSize;
  std::vector<Ino> files;
  for (int i = 0; i < 4; ++i) files.push_back(write_file(*fs, kRootIno, "f" + std::to_string(i), "x"));
  std::uint64_t journaled = 0;
  for (int i = 0; journaled < 5 * journal_bytes; ++i) {
    std::string value = pattern(kXattrValueMax - (i % 100), i);
    REQUIRE(fs->setxattr(files[i % 4], "user.v" + std::to_string(i % 6), value, 0) == 0);
    journaled += value.size();
    if (i % 8 == 7) REQUIRE(fs->syncfs() == 0);
  }
  REQUIRE(fs->syncfs() == 0);
  auto copy = test::crash_copy(medium);
  const auto live = test::snapshot(*fs);
  std::string error;
  auto crashed = test::try_open_fs(copy, error);
  INFO("open after crash: " << error);
  REQUIRE(crashed);
  CHECK(test::diff(live, test::snapshot(*crashed)) == "");
}

TEST_CASE("recovery: fuzzy checkpoints while writers run, then crashes", "[recovery][crash][threads]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium);
  constexpr int kThreads = 4;
  constexpr int kFilesPerThread = 300;
  struct Writer {
    Ino dir = 0, a = 0, b = 0;
    std::atomic<int> done{0};  // files f0 .. f(done-1) are complete
    std::string error;
  };
  std::vector<Writer> writers(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    Writer& w = writers[t];
    w.dir = mkdir_(*fs, kRootIno, "t" + std::to_string(t));
    w.a = mkdir_(*fs, w.dir, "a");
    w.b = mkdir_(*fs, w.dir, "b");
    mkdir_(*fs, w.a, "m");
    write_file(*fs, w.dir, "scratch", pattern(64 << 10, t));
  }
  auto content = [](int t, int k) { return pattern(1000 + (k * 37) % 9000, t * 100000 + k); };

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Writer& w = writers[t];
      auto fail = [&](const std::string& what, long rc) {
        if (w.error.empty()) w.error = what + " failed: " + std::to_string(rc);
      };
      std::mt19937_64 rng(t);
      for (int k = 0; k < kFilesPerThread && w.error.empty(); ++k) {
        Attr a;
        std::string name = "f" + std::to_string(k);
        if (int rc = fs->create(w.dir, name, 0644, O_CREAT | O_WRONLY, kRoot, &a); rc) {
          fail("create " + name, rc);
          break;
        }
        std::string data = content(t, k);
        if (ssize_t n = fs->write(a.ino, 0, as_bytes(data)); n != static_cast<ssize_t>(data.size()))
          fail("write " + name, n);
        fs->release(a.ino);
        fs->forget(a.ino, 1);
        if (int rc = fs->setxattr(a.ino, "user.k", std::to_string(k), 0); rc) fail("setxattr", rc);
        w.done.store(k + 1);
        // Churn that is not verified by name: a directory moving between
        // two parents, overwrites, temporary files.
        bool in_a = k % 2 == 0;
        if (int rc = fs->rename(in_a ? w.a : w.b, "m", in_a ? w.b : w.a, "m", 0, kRoot); rc) fail("rename m", rc);
        Attr s;
        if (fs->lookup(w.dir, "scratch", &s) == 0) {
          std::string chunk = pattern(1 + rng() % 8000, k);
          if (ssize_t n = fs->write(s.ino, rng() % (64 << 10), as_bytes(chunk)); n < 0) fail("scratch write", n);
          fs->forget(s.ino, 1);
        }
        if (k % 3 == 0) {
          if (int rc = fs->create(w.b, "tmp", 0600, O_CREAT, kRoot, &s); rc) {
            fail("create tmp", rc);
          } else {
            fs->write(s.ino, 0, as_bytes(pattern(5000, k)));
            fs->release(s.ino);
            fs->forget(s.ino, 1);
            if (int rc2 = fs->unlink(w.b, "tmp"); rc2) fail("unlink tmp", rc2);
          }
        }
      }
    });
  }

  // Verifies, on a crashed copy, that every file counted in `done` before
  // the sync is there with its content and xattr.
  auto verify_copy = [&](const std::shared_ptr<MemDevice>& copy, const std::vector<int>& done) {
    std::string error;
    auto crashed = test::try_open_fs(copy, error);
    INFO("open after crash: " << error);
    REQUIRE(crashed);
    for (int t = 0; t < kThreads; ++t) {
      Ino dir = lookup_ino(*crashed, kRootIno, "t" + std::to_string(t));
      for (int k = 0; k < done[t]; ++k) {
        int err = 0;
        Ino f = lookup_ino(*crashed, dir, "f" + std::to_string(k), &err);
        if (err) FAIL("thread " << t << " file f" << k << " missing after crash (" << done[t] << " were synced)");
        REQUIRE(read_file(*crashed, f) == content(t, k));
        std::string v;
        REQUIRE(crashed->getxattr(f, "user.k", &v) == 0);
        REQUIRE(v == std::to_string(k));
      }
      // The moving directory is in exactly one place.
      int in_a = 0, in_b = 0;
      lookup_ino(*crashed, lookup_ino(*crashed, dir, "a"), "m", &in_a);
      lookup_ino(*crashed, lookup_ino(*crashed, dir, "b"), "m", &in_b);
      CHECK(((in_a == 0) != (in_b == 0)));
    }
  };

  int checkpoints = 0, crashes = 0;
  auto all_done = [&] {
    for (const Writer& w : writers)
      if (w.done.load() < kFilesPerThread && w.error.empty()) return false;
    return true;
  };
  while (!all_done()) {
    REQUIRE(fs->checkpoint() == 0);
    ++checkpoints;
    if (checkpoints % 4 == 0) {
      std::vector<int> done;
      for (const Writer& w : writers) done.push_back(w.done.load());
      REQUIRE(fs->syncfs() == 0);
      auto copy = test::crash_copy(medium);
      verify_copy(copy, done);
      ++crashes;
    }
  }
  for (auto& th : threads) th.join();
  for (const Writer& w : writers) CHECK(w.error == "");
  CHECK(checkpoints >= 4);
  INFO("checkpoints: " << checkpoints << ", crashes: " << crashes);

  // A last checkpoint racing nothing, more changes, then a final crash: the
  // copy equals the live filesystem.
  REQUIRE(fs->checkpoint() == 0);
  write_file(*fs, kRootIno, "after-last-checkpoint", "z");
  REQUIRE(fs->syncfs() == 0);
  auto copy = test::crash_copy(medium);
  const auto live = test::snapshot(*fs);
  std::vector<int> all(kThreads, kFilesPerThread);
  verify_copy(copy, all);
  auto crashed = test::open_fs(copy);
  CHECK(test::diff(live, test::snapshot(*crashed)) == "");
}

TEST_CASE("recovery: a torn journal tail leaves the state of the previous sync", "[recovery][crash]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium, test::kDefaultDeviceBytes, quiet_options());
  const Superblock sb = fs->superblock();
  Ino d = mkdir_(*fs, kRootIno, "d");
  write_file(*fs, d, "early", pattern(10000, 1));
  REQUIRE(fs->syncfs() == 0);
  const auto synced = test::snapshot(*fs);

  // One more batch of several blocks.
  for (int i = 0; i < 60; ++i) {
    Ino f = write_file(*fs, d, "late" + std::to_string(i), pattern(100, i));
    REQUIRE(fs->setxattr(f, "user.pad", pattern(1000, i), 0) == 0);
  }
  REQUIRE(fs->unlink(d, "early") == 0);
  REQUIRE(fs->syncfs() == 0);
  const auto latest = test::snapshot(*fs);

  auto intact = test::crash_copy(medium);
  auto torn = test::crash_copy(medium);
  auto [lsn, padded] = newest_batch(*torn, sb);
  REQUIRE(padded >= 4 * kBlockSize);

  SECTION("intact: everything is there") {
    auto crashed = test::open_fs(intact);
    CHECK(test::diff(latest, test::snapshot(*crashed)) == "");
  }
  SECTION("last block of the last batch never written") {
    std::memset(journal_byte(*torn, sb, lsn + padded - kBlockSize), 0, kBlockSize);
    std::string error;
    auto crashed = test::try_open_fs(torn, error);
    INFO("open after crash: " << error);
    REQUIRE(crashed);
    CHECK(test::diff(synced, test::snapshot(*crashed)) == "");
    // The recovered filesystem keeps working, and its new batches go where
    // the torn one was.
    write_file(*crashed, kRootIno, "after", "a");
    REQUIRE(crashed->syncfs() == 0);
    auto again = test::crash_copy(torn);
    auto snap = test::snapshot(*crashed);
    auto reopened = test::open_fs(again);
    CHECK(test::diff(snap, test::snapshot(*reopened)) == "");
  }
  SECTION("a middle block of the last batch never written") {
    std::memset(journal_byte(*torn, sb, lsn + 2 * kBlockSize), 0, kBlockSize);
    std::string error;
    auto crashed = test::try_open_fs(torn, error);
    INFO("open after crash: " << error);
    REQUIRE(crashed);
    CHECK(test::diff(synced, test::snapshot(*crashed)) == "");
  }
}

TEST_CASE("recovery: a damaged journal batch before valid ones refuses to mount", "[recovery][crash]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium, test::kDefaultDeviceBytes, quiet_options());
  const Superblock sb = fs->superblock();
  for (int i = 0; i < 5; ++i) {
    write_file(*fs, kRootIno, "f" + std::to_string(i), "x");
    REQUIRE(fs->syncfs() == 0);
  }
  auto copy = test::crash_copy(medium);
  auto batches = all_batches(*copy, sb);
  REQUIRE(batches.size() >= 5);
  *journal_byte(*copy, sb, batches[1].first + BatchHeader::kSize + 3) ^= std::byte{0x40};
  std::string error;
  auto crashed = test::try_open_fs(copy, error);
  CHECK_FALSE(crashed);
  CHECK(error.find("damaged") != std::string::npos);
  CHECK(error.find('\n') == std::string::npos);
}

TEST_CASE("recovery: blocks freed by a change that is not yet durable are not reused", "[recovery][crash]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium, test::kDefaultDeviceBytes, quiet_options());
  const std::string old_data = pattern(256 << 10, 1);
  Ino a = write_file(*fs, kRootIno, "A", old_data);
  REQUIRE(fs->syncfs() == 0);
  REQUIRE(fs->allocator().pending_blocks() == 0);

  SECTION("unlink") { REQUIRE(fs->unlink(kRootIno, "A") == 0); }
  SECTION("truncate") {
    SetAttr sa;
    sa.valid = SetAttr::kSize;
    sa.size = 0;
    Attr at;
    REQUIRE(fs->setattr(a, sa, &at) == 0);
  }
  SECTION("punch hole") {
    REQUIRE(fs->fallocate(a, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, old_data.size()) == 0);
  }
  SECTION("rename over it") {
    write_file(*fs, kRootIno, "B", "replacement");
    REQUIRE(fs->rename(kRootIno, "B", kRootIno, "A", 0, kRoot) == 0);
  }
  CHECK(fs->allocator().pending_blocks() == 64);
  // New data everywhere the allocator will give it.
  for (int i = 0; i < 40; ++i) write_file(*fs, kRootIno, "new" + std::to_string(i), pattern(256 << 10, 100 + i));

  // Crash before the change is durable: the old file is intact.
  auto copy = test::crash_copy(medium);
  auto crashed = test::open_fs(copy);
  Ino old = lookup_ino(*crashed, kRootIno, "A");
  CHECK(old == a);
  CHECK(read_file(*crashed, old) == old_data);

  // Once durable, the blocks are free again.
  REQUIRE(fs->syncfs() == 0);
  CHECK(fs->allocator().pending_blocks() == 0);
}

TEST_CASE("recovery: unlinked files still open at a crash are removed at mount", "[recovery][crash]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium);
  const auto empty = fs->stats();
  Attr a;
  REQUIRE(fs->create(kRootIno, "orphan", 0644, O_CREAT | O_RDWR, kRoot, &a) == 0);
  REQUIRE(fs->write(a.ino, 0, as_bytes(pattern(1 << 20, 1))) == (1 << 20));
  REQUIRE(fs->unlink(kRootIno, "orphan") == 0);
  REQUIRE(fs->syncfs() == 0);
  CHECK(fs->stats().allocated_blocks == 256);  // still open

  SECTION("after a crash") {
    auto copy = test::crash_copy(medium);
    auto crashed = test::open_fs(copy);
    Attr x;
    CHECK(crashed->getattr(a.ino, &x) == -ENOENT);
    CHECK(crashed->stats().inodes == 1);
    CHECK(crashed->stats().allocated_blocks == 0);
    REQUIRE(crashed->syncfs() == 0);
    CHECK(crashed->stats().available_blocks + 8 >= empty.available_blocks);
  }
  SECTION("after a clean shutdown") {
    REQUIRE(fs->shutdown() == 0);
    fs.reset();
    fs = test::open_fs(medium);
    Attr x;
    CHECK(fs->getattr(a.ino, &x) == -ENOENT);
    CHECK(fs->stats().inodes == 1);
    CHECK(fs->stats().allocated_blocks == 0);
  }
}

TEST_CASE("recovery: a root write torn by a crash during a checkpoint falls back to the previous root",
          "[recovery][crash]") {
  // The hook takes the crash copy just before the new root reaches the
  // medium, and tears that write in the copy (first half new, second half
  // old): the previous root and everything it points at must still be
  // there, and journal replay from it must give the synced state.
  const bool first = GENERATE(true, false);
  std::shared_ptr<MemDevice> medium = test::format_medium();
  auto hook = std::make_shared<test::IoHook>();
  std::string error;
  auto fs = test::try_open_fs(medium, error, {}, hook);
  REQUIRE(fs);
  populate(*fs);
  if (!first) {
    REQUIRE(fs->checkpoint() == 0);
    write_file(*fs, kRootIno, "after-first-checkpoint", pattern(70000, 1));
    REQUIRE(fs->unlink(kRootIno, "small") == 0);
  }
  REQUIRE(fs->syncfs() == 0);
  const auto synced = test::snapshot(*fs);

  std::shared_ptr<MemDevice> torn;
  int root_writes = 0;
  *hook = [&](std::span<const DeviceIo> ios) {
    for (const DeviceIo& io : ios) {
      if (io.op != DeviceIo::Op::Write) continue;
      for (BlockNo slot : kRootSlotBlocks) {
        if (io.offset != slot * kBlockSize || torn) continue;
        ++root_writes;
        // Everything written so far, plus half of the new root.
        torn = std::make_shared<MemDevice>(medium->size_bytes());
        std::vector<DeviceIo> read{{DeviceIo::Op::Read, 0, nullptr, 0}};
        AlignedBuffer all(medium->size_bytes());
        read[0].buf = all.data();
        read[0].len = static_cast<std::uint32_t>(medium->size_bytes());
        if (medium->submit(read) != 0) return 0;
        std::memcpy(torn->bytes().data(), all.data(), medium->size_bytes());
        std::memcpy(torn->bytes().data() + io.offset, io.buf, kBlockSize / 2);
      }
    }
    return 0;
  };
  REQUIRE(fs->checkpoint() == 0);
  *hook = nullptr;
  REQUIRE(root_writes == 1);
  REQUIRE(torn);

  auto crashed = test::try_open_fs(torn, error);
  INFO("open after a torn root write: " << error);
  REQUIRE(crashed);
  CHECK(test::diff(synced, test::snapshot(*crashed)) == "");
  // The live filesystem, for comparison, is unharmed.
  CHECK(test::diff(synced, test::snapshot(*fs)) == "");
}

TEST_CASE("recovery: a damaged current root slot is refused with one clear line", "[recovery][crash]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium);
  write_file(*fs, kRootIno, "one", "1");
  REQUIRE(fs->checkpoint() == 0);
  REQUIRE(fs->syncfs() == 0);
  auto copy = test::crash_copy(medium);
  const std::uint64_t tag = fs->superblock().uuid_tag();
  int valid = 0;
  for (BlockNo slot : kRootSlotBlocks) {
    std::string why;
    const auto* p = reinterpret_cast<const std::uint8_t*>(copy->bytes().data()) + slot * kBlockSize;
    if (CheckpointRoot::decode({p, kBlockSize}, tag, why)) {
      ++valid;
      copy->bytes()[slot * kBlockSize + 100] ^= std::byte{1};
    }
  }
  REQUIRE(valid >= 1);
  std::string error;
  auto crashed = test::try_open_fs(copy, error);
  CHECK_FALSE(crashed);
  CHECK(error.find("checkpoint root") != std::string::npos);
  CHECK(error.find('\n') == std::string::npos);
}

TEST_CASE("recovery: after a write error the filesystem fails calls instead of losing them", "[recovery][crash]") {
  // The device starts failing every write: syncfs reports the error, later
  // changes are refused, nothing hangs, and the device keeps the state of
  // the last successful sync.
  std::shared_ptr<MemDevice> medium = test::format_medium();
  auto hook = std::make_shared<test::IoHook>();
  std::string error;
  auto fs = test::try_open_fs(medium, error, quiet_options(), hook);
  REQUIRE(fs);
  Ino d = mkdir_(*fs, kRootIno, "d");
  write_file(*fs, d, "synced", pattern(9000, 1));
  REQUIRE(fs->syncfs() == 0);
  const auto synced = test::snapshot(*fs);

  std::atomic<bool> failing{true};
  *hook = [&](std::span<const DeviceIo> ios) {
    for (const DeviceIo& io : ios)
      if (io.op == DeviceIo::Op::Write && failing.load()) return -EIO;
    return 0;
  };
  Attr a;
  REQUIRE(fs->create(d, "late", 0644, O_CREAT | O_WRONLY, kRoot, &a) == 0);  // memory only so far
  CHECK(fs->write(a.ino, 0, as_bytes("data")) == -EIO);  // data goes to the device at once
  fs->release(a.ino);
  fs->forget(a.ino, 1);
  CHECK(fs->syncfs() == -EIO);
  CHECK(fs->fsync(a.ino, false) == -EIO);
  CHECK(fs->mkdir(d, "after-error", 0755, kRoot, &a) == -EIO);
  CHECK(fs->setxattr(d, "user.x", "y", 0) == -EIO);
  CHECK(fs->unlink(d, "synced") == -EIO);
  CHECK(fs->checkpoint() != 0);
  CHECK(fs->shutdown() != 0);  // reports the failure, and returns
  fs.reset();

  failing = false;
  auto again = test::open_fs(medium);
  CHECK(test::diff(synced, test::snapshot(*again)) == "");
}

TEST_CASE("recovery: a new filesystem on old blocks ignores everything of the old one", "[recovery][crash]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium);
  populate(*fs);
  REQUIRE(fs->checkpoint() == 0);
  write_file(*fs, kRootIno, "in-the-journal", "j");
  REQUIRE(fs->syncfs() == 0);
  auto old = test::crash_copy(medium);  // unclean: the journal has batches
  fs.reset();
  std::string error;
  Superblock sb;
  INFO(error);
  REQUIRE(format_device(*old, FormatOptions{}, &sb, error));
  fs = test::open_fs(old);
  CHECK(fs->journal_replayed_batches() == 0);
  CHECK(test::list_dir(*fs, kRootIno).empty());
  CHECK(fs->stats().inodes == 1);
  CHECK(fs->stats().allocated_blocks == 0);
  write_file(*fs, kRootIno, "new", "n");
  REQUIRE(fs->syncfs() == 0);
  auto copy = test::crash_copy(old);
  auto crashed = test::open_fs(copy);
  CHECK(test::list_dir(*crashed, kRootIno) == std::vector<std::string>{"new"});
}

TEST_CASE("recovery: a damaged primary superblock falls back to the backup", "[recovery]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium);
  write_file(*fs, kRootIno, "f", "data");
  const auto live = test::snapshot(*fs);
  REQUIRE(fs->shutdown() == 0);
  fs.reset();
  medium->bytes()[200] ^= std::byte{1};  // inside the primary superblock, after the magic
  {
    // The operator learns that block 0 needs fsck.dhfs.
    std::vector<std::string> warnings;
    std::mutex mu;
    log::Capture capture([&](log::Level level, std::string_view line) {
      std::lock_guard lk(mu);
      if (level == log::Level::kWarning) warnings.emplace_back(line);
    });
    fs = test::open_fs(medium);
    const std::string last = std::to_string(medium->size_bytes() / kBlockSize - 1);
    std::lock_guard lk(mu);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("the primary superblock is damaged (superblock checksum mismatch); mounted with its "
                           "backup from block " + last + "; fsck.dhfs rewrites it") != std::string::npos);
  }
  CHECK(test::diff(live, test::snapshot(*fs)) == "");
  fs.reset();
  std::memset(medium->bytes().data(), 0, kBlockSize);  // no magic: not a dhfs at all
  std::string error;
  CHECK_FALSE(test::try_open_fs(medium, error));
  CHECK(error.find("not a dhfs filesystem") != std::string::npos);
}

TEST_CASE("recovery: on a grown device the damaged primary's size leads to the backup", "[recovery]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium);
  write_file(*fs, kRootIno, "f", "data");
  const auto live = test::snapshot(*fs);
  const std::uint64_t blocks = fs->superblock().total_blocks;
  REQUIRE(fs->shutdown() == 0);
  fs.reset();
  REQUIRE(medium->extend(medium->size_bytes() + (16ULL << 20)) == 0);  // lvextend, no grow
  medium->bytes()[200] ^= std::byte{1};
  fs = test::open_fs(medium);
  CHECK(test::diff(live, test::snapshot(*fs)) == "");
  CHECK(fs->superblock().total_blocks == blocks);
  fs.reset();
  // With the size gone from the primary too, the mount names where it
  // looked and sends the operator to fsck.dhfs (which takes -b).
  std::memset(medium->bytes().data() + 16, 0, 8);
  std::string error;
  CHECK_FALSE(test::try_open_fs(medium, error));
  const std::string last = std::to_string(medium->size_bytes() / kBlockSize - 1);
  CHECK(error.find("no usable backup was found (looked at block " + last + ")") != std::string::npos);
  CHECK(error.find("run fsck.dhfs") != std::string::npos);
}

}  // namespace dhfs
