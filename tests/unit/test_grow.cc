// FileSystem::grow (dhfsctl grow): a mounted dhfs takes in more of its
// medium. The new blocks become free space of the data area, the journal
// stays put, a crash at any point leaves the old size or the new one, and
// what cannot be done (shrinking, a device too small, a read-only mount) is
// refused without changing anything.
#include <fcntl.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fs/control.h"
#include "fs/filesystem.h"
#include "fs/log.h"
#include "tests/unit/test_support.h"

namespace dhfs {
namespace {

using test::kRoot;
using test::pattern;

constexpr std::uint64_t kMiB = 1ULL << 20;

// Fills the filesystem up to `left` bytes of available space.
std::string fill(FileSystem& fs, std::uint64_t left, std::uint64_t seed) {
  const std::uint64_t bytes = fs.stats().available_blocks * kBlockSize - left;
  std::string content = pattern(bytes, seed);
  test::write_file(fs, kRootIno, "fill", content);
  REQUIRE(fs.syncfs() == 0);
  return content;
}

ssize_t try_write(FileSystem& fs, const std::string& name, const std::string& content) {
  Attr a;
  if (const int rc = fs.create(kRootIno, name, 0644, O_CREAT | O_RDWR, kRoot, &a); rc != 0) return rc;
  const ssize_t n = fs.write(a.ino, 0, test::as_bytes(content));
  fs.release(a.ino);
  fs.forget(a.ino, 1);
  return n;
}

TEST_CASE("grow turns the new blocks into free space and keeps everything", "[grow]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium, 64 * kMiB);
  const Superblock before = fs->superblock();
  std::map<std::string, std::string> files{{"fill", fill(*fs, 1 * kMiB, 1)}};
  const std::string more = pattern(40 * kMiB, 2);
  REQUIRE(try_write(*fs, "refused", more) < static_cast<ssize_t>(more.size()));  // ENOSPC
  REQUIRE(fs->unlink(kRootIno, "refused") == 0);

  GrowOutcome g;
  REQUIRE(fs->grow(128 * kMiB, &g) == 0);
  CHECK(g.old_bytes == 64 * kMiB);
  CHECK(g.new_bytes == 128 * kMiB);
  CHECK(g.device_bytes == 128 * kMiB);
  CHECK(medium->size_bytes() == 128 * kMiB);
  const Superblock after = fs->superblock();
  CHECK(after.total_blocks == 2 * before.total_blocks);
  CHECK(after.journal_blocks == before.journal_blocks);  // 1/64 of 128 MiB is still below the minimum
  CHECK(after.data_start == before.data_start);
  CHECK(after.feature_incompat == 0);
  CHECK(fs->stats().total_blocks == before.data_blocks + before.total_blocks);
  CHECK(fs->allocator().area() == after.data_area());
  // The old backup superblock's block is an ordinary free block now.
  bool old_backup_free = false;
  for (const Extent& e : fs->allocator().free_extents())
    old_backup_free = old_backup_free || e.contains(before.backup_block());
  CHECK(old_backup_free);
  CHECK(fs->allocator().consistent());

  REQUIRE(try_write(*fs, "more", more) == static_cast<ssize_t>(more.size()));
  files["more"] = more;
  test::require_files(*fs, files);

  REQUIRE(fs->syncfs() == 0);
  auto crashed = test::crash_copy(medium);
  test::require_fsck_clean(*crashed);
  {
    auto again = test::open_fs(crashed);
    CHECK(again->superblock().total_blocks == after.total_blocks);
    test::require_files(*again, files);
  }
  auto reopened = test::remount_checked(fs, medium, files);
  CHECK(reopened->superblock().total_blocks == after.total_blocks);
  CHECK(reopened->stats().total_blocks == after.data_blocks);
}

TEST_CASE("growing past the journal's sizing rule keeps the journal and says so in the superblock", "[grow][format]") {
  SECTION("geometry") {
    const Superblock small = Superblock::for_device(64 * kMiB);
    // 1 GiB + 4 MiB: the rule would give a journal of 4112 blocks.
    const std::uint64_t blocks = ((1ULL << 30) + 4 * kMiB) / kBlockSize;
    const Superblock grown = small.grown_to(blocks);
    CHECK(grown.journal_blocks == small.journal_blocks);
    CHECK(grown.data_start == small.data_start);
    CHECK(grown.data_blocks == blocks - 1 - small.data_start);
    CHECK(grown.feature_incompat == kIncompatJournalFixed);
    CHECK(small.grown_to(128 * kMiB / kBlockSize).feature_incompat == 0);

    std::string why;
    auto decoded = Superblock::decode(grown.encode(), why);
    REQUIRE(decoded);
    CHECK(decoded->journal_blocks == small.journal_blocks);
    // Without the flag the geometry contradicts the rule.
    Superblock unflagged = grown;
    unflagged.feature_incompat = 0;
    CHECK_FALSE(Superblock::decode(unflagged.encode(), why));
    CHECK(why == "superblock geometry is inconsistent");
    // The flag does not excuse a journal larger than the rule's, or smaller
    // than the minimum.
    Superblock larger = grown.with_journal(Superblock::for_device(blocks * kBlockSize).journal_blocks + 1);
    CHECK_FALSE(Superblock::decode(larger.encode(), why));
    Superblock tiny = grown.with_journal(kMinJournalBlocks - 1);
    CHECK_FALSE(Superblock::decode(tiny.encode(), why));
    // Nor areas that do not add up.
    Superblock skewed = grown;
    skewed.data_blocks -= 1;
    CHECK_FALSE(Superblock::decode(skewed.encode(), why));
  }
  SECTION("mounted") {
    std::shared_ptr<MemDevice> medium;
    auto fs = test::make_fs(&medium, 64 * kMiB);
    const std::string a = pattern(5 * kMiB, 3);
    test::write_file(*fs, kRootIno, "a", a);
    GrowOutcome g;
    REQUIRE(fs->grow((1ULL << 30) + 4 * kMiB, &g) == 0);
    CHECK(fs->superblock().feature_incompat == kIncompatJournalFixed);
    // Data lands beyond the old end once the old space is gone.
    const std::string b = pattern(100 * kMiB, 4);
    REQUIRE(try_write(*fs, "b", b) == static_cast<ssize_t>(b.size()));
    auto reopened = test::remount_checked(fs, medium, {{"a", a}, {"b", b}});
    CHECK(reopened->superblock().journal_blocks == kMinJournalBlocks);
    CHECK(reopened->superblock().total_blocks == ((1ULL << 30) + 4 * kMiB) / kBlockSize);
  }
}

TEST_CASE("a crash at any point of a grow leaves the old size or the new one", "[grow][crash]") {
  auto medium = test::format_medium(64 * kMiB);
  auto hook = std::make_shared<test::IoHook>();
  std::string error;
  auto fs = test::try_open_fs(medium, error, FsOptions{}, hook);
  REQUIRE(fs);
  std::map<std::string, std::string> files{{"a", pattern(3 * kMiB, 5)}, {"b", pattern(70000, 6)}};
  for (const auto& [name, content] : files) test::write_file(*fs, kRootIno, name, content);
  REQUIRE(fs->syncfs() == 0);

  // A copy before each superblock write of the grow (other threads may
  // write too meanwhile), and one after the last.
  const std::uint64_t old_blocks = 64 * kMiB / kBlockSize, new_blocks = 96 * kMiB / kBlockSize;
  std::vector<std::shared_ptr<MemDevice>> copies;
  *hook = [&](std::span<const DeviceIo> ios) {
    for (const DeviceIo& io : ios)
      if (io.op == DeviceIo::Op::Write && (io.offset == 0 || io.offset == (new_blocks - 1) * kBlockSize)) {
        copies.push_back(test::crash_copy(medium));
        break;
      }
    return 0;
  };
  GrowOutcome g;
  REQUIRE(fs->grow(96 * kMiB, &g) == 0);
  *hook = nullptr;
  copies.push_back(test::crash_copy(medium));
  REQUIRE(copies.size() == 3);  // before the backup superblock, before the primary, done

  for (std::size_t i = 0; i < copies.size(); ++i) {
    INFO("crash copy " << i);
    test::require_fsck_clean(*copies[i]);
    auto again = test::open_fs(copies[i]);
    CHECK(again->superblock().total_blocks == (i < 2 ? old_blocks : new_blocks));
    test::require_files(*again, files);
  }
  // The primary torn by the crash while it was written: the backup at the
  // end of the device, already the new one, takes its place.
  auto torn = copies[1];
  std::memset(torn->bytes().data() + 100, 0xEE, 200);
  {
    auto again = test::open_fs(torn);
    CHECK(again->superblock().total_blocks == new_blocks);
    test::require_files(*again, files);
  }
}

// A medium of fixed size that can be grown from outside, as a block device
// by lvextend: extend() only looks.
class FixedMedium final : public Device {
 public:
  explicit FixedMedium(std::shared_ptr<MemDevice> mem) : mem_(std::move(mem)) {}
  int submit(std::span<const DeviceIo> ios) override { return mem_->submit(ios); }
  int flush() override { return mem_->flush(); }
  int extend(std::uint64_t bytes) override { return mem_->size_bytes() < bytes ? -EFBIG : 0; }
  std::uint64_t size_bytes() const override { return mem_->size_bytes(); }
  bool read_only() const override { return false; }
  std::string describe() const override { return "fixed medium"; }

 private:
  std::shared_ptr<MemDevice> mem_;
};

TEST_CASE("grow refuses what it cannot do and changes nothing then", "[grow]") {
  auto medium = test::format_medium(64 * kMiB);
  std::string error;
  auto fs = FileSystem::open(std::make_unique<FixedMedium>(medium), FsOptions{}, error);
  INFO(error);
  REQUIRE(fs);
  const Superblock before = fs->superblock();
  GrowOutcome g;
  CHECK(fs->grow(32 * kMiB, &g) == -EINVAL);  // dhfs does not shrink
  CHECK(fs->grow(256 * kMiB, &g) == -EFBIG);  // the device has not grown
  CHECK(g.device_bytes == 64 * kMiB);
  REQUIRE(fs->grow(0, &g) == 0);  // all of the device: what it already is
  CHECK(g.new_bytes == g.old_bytes);
  CHECK(fs->grow(64 * kMiB + 4095, &g) == 0);  // rounded down to whole blocks: the same
  CHECK(g.new_bytes == 64 * kMiB);
  CHECK(fs->superblock().total_blocks == before.total_blocks);
  CHECK(fs->allocator().area() == before.data_area());
  auto on_disk =
      Superblock::decode({reinterpret_cast<const std::uint8_t*>(medium->bytes().data()), kBlockSize}, error);
  REQUIRE(on_disk);
  CHECK(on_disk->total_blocks == before.total_blocks);

  // The volume grows underneath (lvextend); grow with no size takes it all.
  REQUIRE(medium->extend(100 * kMiB) == 0);
  REQUIRE(fs->grow(0, &g) == 0);
  CHECK(g.new_bytes == 100 * kMiB);
  CHECK(fs->superblock().total_blocks == 100 * kMiB / kBlockSize);
  REQUIRE(fs->shutdown() == 0);
  fs.reset();
  test::require_fsck_clean(*medium);

  FsOptions ro;
  ro.read_only = true;
  auto readonly = test::open_fs(medium, ro);
  CHECK(readonly->grow(200 * kMiB, &g) == -EROFS);
  CHECK(medium->size_bytes() == 100 * kMiB);
}

TEST_CASE("grow while files are written and deleted loses nothing", "[grow]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium, 64 * kMiB);
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::string problem;
  std::map<std::string, std::string> kept;
  std::vector<std::thread> workers;
  for (int t = 0; t < 2; ++t)
    workers.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        const std::string name = "w" + std::to_string(t) + "-" + std::to_string(i);
        const std::string content = pattern(std::size_t(64 + i % 5 * 100) << 10, std::uint64_t(t) * 100000 + i);
        const ssize_t n = try_write(*fs, name, content);
        // Early on the filesystem may well be full; a grow is what ends that.
        if (n == -ENOSPC) {
          fs->unlink(kRootIno, name);
          continue;
        }
        std::lock_guard lk(mu);
        if (n != static_cast<ssize_t>(content.size())) {
          problem = "writing " + name + " failed: " + std::strerror(static_cast<int>(-n));
          return;
        }
        if (i % 3 == 0) {
          if (fs->unlink(kRootIno, name) != 0) problem = "unlink " + name + " failed";
        } else {
          kept[name] = content;
        }
      }
    });
  for (std::uint64_t size = 72 * kMiB; size <= 160 * kMiB; size += 8 * kMiB) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    GrowOutcome g;
    const int rc = fs->grow(size, &g);
    std::lock_guard lk(mu);
    if (rc != 0) problem = "grow to " + std::to_string(size) + " failed: " + std::strerror(-rc);
  }
  stop = true;
  for (auto& w : workers) w.join();
  INFO(problem);
  REQUIRE(problem.empty());
  INFO(kept.size() << " files kept");
  CHECK(fs->superblock().total_blocks == 160 * kMiB / kBlockSize);
  CHECK(fs->allocator().consistent());
  test::require_files(*fs, kept);
  test::remount_checked(fs, medium, kept);
}

TEST_CASE("DHFS_IOC_GROW is for root and reports what it did", "[grow][control]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium, 64 * kMiB);
  ControlGrow out{};
  CHECK(test::control(*fs, DHFS_IOC_GROW, false, ControlGrow{80 * kMiB, 0, 0, 0}, &out) == -EPERM);
  CHECK(medium->size_bytes() == 64 * kMiB);
  REQUIRE(test::control(*fs, DHFS_IOC_GROW, true, ControlGrow{80 * kMiB, 0, 0, 0}, &out) == 0);
  CHECK(out.old_bytes == 64 * kMiB);
  CHECK(out.new_bytes == 80 * kMiB);
  CHECK(out.device_bytes == 80 * kMiB);

  ControlStats stats{};
  REQUIRE(test::control(*fs, DHFS_IOC_STATS, false, std::byte{}, &stats) == 0);
  CHECK(stats.filesystem_blocks == 80 * kMiB / kBlockSize);
  CHECK(stats.total_blocks == fs->superblock().data_blocks);
}

TEST_CASE("a mount says when the device has room the filesystem does not use", "[grow][log]") {
  auto medium = test::format_medium(64 * kMiB);
  REQUIRE(medium->extend(96 * kMiB) == 0);
  std::vector<std::string> lines;
  std::mutex mu;
  log::Capture capture([&](log::Level, std::string_view line) {
    std::lock_guard lk(mu);
    lines.emplace_back(line);
  });
  auto fs = test::open_fs(medium);
  bool said = false;
  {
    std::lock_guard lk(mu);
    for (const auto& l : lines) said = said || l.find("32.0 MiB beyond the end of the filesystem") != std::string::npos;
  }
  INFO(lines.size() << " lines logged");
  CHECK(said);
}

}  // namespace
}  // namespace dhfs
