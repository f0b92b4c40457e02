// FileSystem::trim (fstrim): free space of the data area is discarded and
// nothing in use is. The memory device fills what it discards with a
// pattern, so a block discarded while a file, the checkpoint or a pending
// free still needed it shows up as wrong contents or an fsck error.
#include <fcntl.h>
#include <linux/fs.h>

#include <atomic>
#include <chrono>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
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

std::uint64_t trim_all(FileSystem& fs, std::uint64_t min_bytes = 0) {
  std::uint64_t trimmed = 0;
  REQUIRE(fs.trim(0, UINT64_MAX, min_bytes, &trimmed) == 0);
  return trimmed;
}

// Files of several kinds: plain, small, a clone partly overwritten, one in a
// region, and one deleted (its blocks freed by a transaction not yet
// committed when trim starts).
std::map<std::string, std::string> populate(FileSystem& fs) {
  std::map<std::string, std::string> files;
  auto add = [&](Ino dir, const std::string& path, const std::string& name, std::string content) {
    test::write_file(fs, dir, name, content);
    files[path] = std::move(content);
  };
  add(kRootIno, "a", "a", pattern(1 << 20, 1));
  add(kRootIno, "small", "small", pattern(10000, 2));
  add(kRootIno, "gone", "gone", pattern(3 << 20, 3));
  Attr region_dir;
  REQUIRE(fs.mkdir(kRootIno, "region", 0755, kRoot, &region_dir) == 0);
  REQUIRE(fs.create_region(region_dir.ino, 8 << 20) == 0);
  add(region_dir.ino, "region/r", "r", pattern(2 << 20, 4));
  fs.forget(region_dir.ino, 1);
  const Ino a = test::resolve(fs, "a");
  const Ino clone = test::write_file(fs, kRootIno, "clone", "");
  REQUIRE(fs.copy_file_range(a, 0, clone, 0, 1 << 20) == (1 << 20));
  std::string cloned = files["a"];
  const std::string patch = pattern(8192, 5);
  test::write_at(fs, clone, 4096 * 37, patch);
  cloned.replace(4096 * 37, patch.size(), patch);
  files["clone"] = cloned;
  REQUIRE(fs.checkpoint() == 0);
  REQUIRE(fs.unlink(kRootIno, "gone") == 0);
  files.erase("gone");
  return files;
}

TEST_CASE("trim discards every free block and nothing in use", "[trim]") {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium);
  const auto files = populate(*fs);
  const auto regions_before = fs->allocator().regions();

  const std::uint64_t trimmed = trim_all(*fs);
  // The delete's blocks were committed first, so they count too.
  CHECK(trimmed == fs->allocator().free_blocks() * kBlockSize);
  CHECK(trimmed > (3u << 20));
  CHECK(fs->allocator().consistent());
  // Reservations are where they were.
  const auto regions_after = fs->allocator().regions();
  REQUIRE(regions_after.size() == regions_before.size());
  for (std::size_t i = 0; i < regions_after.size(); ++i) {
    CHECK(regions_after[i].reserved == regions_before[i].reserved);
    CHECK(regions_after[i].free_blocks == regions_before[i].free_blocks);
  }
  test::require_files(*fs, files);

  // What a crash right now leaves: journal and checkpoint intact.
  auto crashed = test::crash_copy(medium);
  test::require_fsck_clean(*crashed);
  {
    auto again = test::open_fs(crashed);
    test::require_files(*again, files);
  }
  // And the space is usable as before.
  test::write_file(*fs, kRootIno, "after", pattern(4 << 20, 6));
  auto reopened = test::remount_checked(fs, medium, files);
  CHECK(test::read_file(*reopened, test::resolve(*reopened, "after")) == pattern(4 << 20, 6));
}

TEST_CASE("trim keeps to its byte range and minimum length", "[trim]") {
  auto fs = test::make_fs();
  const Superblock& sb = fs->superblock();
  std::uint64_t trimmed = 0;
  // Only the superblocks, root slots and journal: nothing of it is free space.
  REQUIRE(fs->trim(0, sb.data_start * kBlockSize, 0, &trimmed) == 0);
  CHECK(trimmed == 0);
  // One MiB of the (empty) data area, from a block boundary inside it.
  const std::uint64_t from = (sb.data_start + 4096) * kBlockSize + 100;
  REQUIRE(fs->trim(from, 1 << 20, 0, &trimmed) == 0);
  CHECK(trimmed > 0);
  CHECK(trimmed <= (1u << 20));
  // No free run is as long as the whole data area.
  trimmed = 0;
  REQUIRE(fs->trim(0, UINT64_MAX, (sb.data_blocks + 1) * kBlockSize, &trimmed) == 0);
  CHECK(trimmed == 0);
  CHECK(fs->allocator().consistent());
}

// Two threads write files and delete every other one while `discard_once`
// runs again and again on the test thread; then every kept file, the
// allocator, fsck and a remount must be right.
void discard_while_writing(const FsOptions& opts, const std::function<int(FileSystem&)>& discard_once) {
  std::shared_ptr<MemDevice> medium;
  auto fs = test::make_fs(&medium, test::kDefaultDeviceBytes, opts);
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::string problem;
  std::map<std::string, std::string> kept;  // written by the workers, under mu
  std::uint64_t kept_bytes = 0;              // under mu
  std::vector<std::thread> workers;
  for (int t = 0; t < 2; ++t)
    workers.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        const std::string name = "w" + std::to_string(t) + "-" + std::to_string(i);
        const std::string content = pattern(std::size_t(64 + i % 7 * 50) << 10, std::uint64_t(t) * 100000 + i);
        Attr a;
        const int created = fs->create(kRootIno, name, 0644, O_CREAT | O_RDWR, kRoot, &a);
        const ssize_t n = created != 0 ? created : fs->write(a.ino, 0, test::as_bytes(content));
        if (n != static_cast<ssize_t>(content.size())) {
          std::lock_guard lk(mu);
          problem = "writing " + name + " failed: " + (n < 0 ? std::strerror(static_cast<int>(-n)) : "short");
          return;
        }
        fs->release(a.ino);
        fs->forget(a.ino, 1);
        // Every other file is kept, up to 32 MiB of them: the device
        // (128 MiB) must not fill however fast the workers are.
        bool keep = false;
        if (i % 2 == 0) {
          std::lock_guard lk(mu);
          keep = kept_bytes < (32u << 20);
          if (keep) {
            kept[name] = content;
            kept_bytes += content.size();
          }
        }
        if (!keep && fs->unlink(kRootIno, name) != 0) {
          std::lock_guard lk(mu);
          problem = "unlink " + name + " failed";
          return;
        }
      }
    });
  // At least five trims, and for at least 0.6 s, while the workers run.
  std::uint64_t rounds = 0;
  for (auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(600);
       rounds < 5 || std::chrono::steady_clock::now() < until; ++rounds) {
    const int rc = discard_once(*fs);
    if (rc != 0) {
      std::lock_guard lk(mu);
      problem = "discard failed: " + std::string(std::strerror(-rc));
      break;
    }
  }
  stop = true;
  for (auto& w : workers) w.join();
  INFO(problem);
  REQUIRE(problem.empty());
  INFO(rounds << " trims, " << kept.size() << " files kept");
  test::require_files(*fs, kept);
  CHECK(fs->allocator().consistent());
  test::remount_checked(fs, medium, kept);
}

TEST_CASE("trim while files are written and deleted loses nothing", "[trim]") {
  discard_while_writing(FsOptions{}, [](FileSystem& fs) {
    std::uint64_t trimmed = 0;
    return fs.trim(0, UINT64_MAX, 0, &trimmed);
  });
}

TEST_CASE("online discard while files are written and deleted loses nothing", "[trim][discard]") {
  FsOptions opts;
  opts.discard = true;  // the background task discards beside the test thread
  std::uint64_t discarded = 0;  // by the test thread's calls (the task's come on top)
  discard_while_writing(opts, [&](FileSystem& fs) {
    if (const int rc = fs.syncfs(); rc != 0) return rc;
    return fs.discard_released(&discarded);
  });
  CHECK(discarded > 0);
}

// Where on the medium a 4 KiB block holding `block` (4096 bytes) lies, if
// anywhere.
std::optional<std::uint64_t> find_block(const std::shared_ptr<MemDevice>& medium, std::string_view block) {
  auto copy = test::crash_copy(medium);
  const std::byte* bytes = copy->bytes().data();
  for (std::uint64_t off = 0; off + kBlockSize <= copy->bytes().size(); off += kBlockSize)
    if (std::memcmp(bytes + off, block.data(), kBlockSize) == 0) return off;
  return std::nullopt;
}

// Whether the block at `offset` of the medium still holds `block`.
bool still_holds(MemDevice& medium, std::uint64_t offset, std::string_view block) {
  AlignedBuffer buf(kBlockSize);
  REQUIRE(medium.read(offset, buf.data(), kBlockSize) == 0);
  return std::memcmp(buf.data(), block.data(), kBlockSize) == 0;
}

TEST_CASE("online discard gives back what deletes free soon after and nothing in use", "[trim][discard]") {
  for (const bool discard : {true, false}) {
    INFO("discard " << discard);
    FsOptions opts;
    opts.discard = discard;
    std::shared_ptr<MemDevice> medium;
    auto fs = test::make_fs(&medium, test::kDefaultDeviceBytes, opts);
    const auto files = populate(*fs);  // ends with a delete of "gone" (3 MiB)
    const std::string gone_tail = pattern(3 << 20, 3).substr((3 << 20) - kBlockSize);
    REQUIRE(fs->syncfs() == 0);
    const auto where = find_block(medium, gone_tail);
    REQUIRE(where);
    // The background task runs every second: give it five, or one and a
    // half where there is none.
    bool gone = false;
    for (int i = 0; i < (discard ? 50 : 15) && !gone; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      gone = !still_holds(*medium, *where, gone_tail);
    }
    CHECK(gone == discard);
    test::require_files(*fs, files);
    CHECK(fs->allocator().consistent());
    test::remount_checked(fs, medium, files);
  }
}

// A memory medium that cannot discard (what Device does by default), or
// whose discard takes a while (a slow SSD, a thin volume).
class TestMedium final : public Device {
 public:
  enum class Discard { kUnsupported, kSlow };
  TestMedium(std::shared_ptr<MemDevice> mem, Discard discard) : mem_(std::move(mem)), discard_(discard) {}
  int submit(std::span<const DeviceIo> ios) override { return mem_->submit(ios); }
  int flush() override { return mem_->flush(); }
  int discard(std::uint64_t offset, std::uint64_t len) override {
    if (discard_ == Discard::kUnsupported) return -EOPNOTSUPP;
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    return mem_->discard(offset, len);
  }
  std::uint64_t size_bytes() const override { return mem_->size_bytes(); }
  bool read_only() const override { return false; }
  std::string describe() const override { return "test medium"; }

 private:
  std::shared_ptr<MemDevice> mem_;
  Discard discard_;
};

TEST_CASE("trim on a medium without discard fails and keeps every free block", "[trim]") {
  auto medium = test::format_medium();
  std::string error;
  auto fs = FileSystem::open(std::make_unique<TestMedium>(medium, TestMedium::Discard::kUnsupported), FsOptions{}, error);
  INFO(error);
  REQUIRE(fs);
  const std::uint64_t free_before = fs->allocator().free_blocks();
  std::uint64_t trimmed = 0;
  CHECK(fs->trim(0, UINT64_MAX, 0, &trimmed) == -EOPNOTSUPP);
  CHECK(trimmed == 0);
  CHECK(fs->allocator().free_blocks() == free_before);
  CHECK(fs->allocator().consistent());
}

TEST_CASE("online discard on a medium that cannot discard says so once and loses no space", "[trim][discard]") {
  std::vector<std::string> warnings;
  std::mutex mu;
  log::Capture capture([&](log::Level level, std::string_view line) {
    std::lock_guard lk(mu);
    if (level == log::Level::kWarning) warnings.emplace_back(line);
  });
  auto count = [&] {
    std::lock_guard lk(mu);
    return warnings.size();
  };
  auto medium = test::format_medium();
  FsOptions opts;
  opts.discard = true;
  std::string error;
  auto fs = FileSystem::open(std::make_unique<TestMedium>(medium, TestMedium::Discard::kUnsupported), opts, error);
  INFO(error);
  REQUIRE(fs);
  const std::uint64_t free_before = fs->allocator().free_blocks();
  for (int round = 0; round < 2; ++round) {
    test::write_file(*fs, kRootIno, "f", pattern(1 << 20, 60 + round));
    REQUIRE(fs->unlink(kRootIno, "f") == 0);
    REQUIRE(fs->syncfs() == 0);
    for (int i = 0; i < 25 && count() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // another period: nothing more is said
  {
    std::lock_guard lk(mu);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0] == "test medium: online discard failed: Operation not supported; it is off until the next "
                         "mount (fstrim also gives space back)");
  }
  CHECK(fs->allocator().consistent());
  CHECK(fs->allocator().free_blocks() == free_before);  // the deleted files' blocks are all back
}

TEST_CASE("a writer short of space waits for the blocks trim holds instead of failing", "[trim][enospc]") {
  auto medium = test::format_medium(64ULL << 20);
  std::string error;
  auto fs = FileSystem::open(std::make_unique<TestMedium>(medium, TestMedium::Discard::kSlow), FsOptions{}, error);
  INFO(error);
  REQUIRE(fs);
  // Fill all but 4 MiB: then each trim holds all the free space for a while.
  const std::uint64_t fill = fs->stats().available_blocks * kBlockSize - (4 << 20);
  test::write_file(*fs, kRootIno, "fill", pattern(fill, 40));
  REQUIRE(fs->syncfs() == 0);

  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> trims{0};
  std::thread trimmer([&] {
    while (!done.load()) {
      std::uint64_t trimmed = 0;
      if (fs->trim(0, UINT64_MAX, 0, &trimmed) == 0) ++trims;
    }
  });
  std::vector<std::string> failures;
  const std::string data = pattern(2 << 20, 41);
  // At least 20 rounds, and on until three trims ran meanwhile.
  for (int i = 0; (i < 20 || trims.load() < 3) && i < 5000; ++i) {
    Attr a;
    if (fs->create(kRootIno, "w", 0644, O_CREAT | O_RDWR, kRoot, &a) != 0) {
      failures.push_back("create " + std::to_string(i));
      continue;
    }
    const ssize_t n = fs->write(a.ino, 0, test::as_bytes(data));
    if (n != static_cast<ssize_t>(data.size()))
      failures.push_back("write " + std::to_string(i) + ": " + (n < 0 ? std::strerror(static_cast<int>(-n)) : "short"));
    fs->release(a.ino);
    fs->forget(a.ino, 1);
    REQUIRE(fs->unlink(kRootIno, "w") == 0);
  }
  done = true;
  trimmer.join();
  std::string all;
  for (const auto& f : failures) all += f + "; ";
  INFO(trims.load() << " trims; failures: " << all);
  CHECK(failures.empty());
  CHECK(trims.load() >= 3);
  CHECK(fs->allocator().consistent());
}

TEST_CASE("FITRIM through the control interface", "[trim][control]") {
  auto fs = test::make_fs();
  fstrim_range out{};
  CHECK(test::control(*fs, FITRIM, false, fstrim_range{0, UINT64_MAX, 0}, &out) == -EPERM);
  const fstrim_range past_end{fs->superblock().total_blocks * kBlockSize, UINT64_MAX, 0};
  CHECK(test::control(*fs, FITRIM, true, past_end, &out) == -EINVAL);
  REQUIRE(test::control(*fs, FITRIM, true, fstrim_range{0, UINT64_MAX, 0}, &out) == 0);
  // On return, len is what was discarded: all the free space of a new filesystem.
  CHECK(out.len == fs->allocator().free_blocks() * kBlockSize);
  CHECK(out.len > 0);
}

}  // namespace
}  // namespace dhfs
