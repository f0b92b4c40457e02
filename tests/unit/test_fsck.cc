// Tests of fs/fsck.h: a populated filesystem checks clean, and every kind
// of damage fsck.dhfs claims to detect is detected (and, with repair,
// repaired so that a second check is clean, the filesystem mounts and the
// surviving files read back right).
//
// Images live on a MemDevice shared between the FileSystem (through a
// forwarding device, since the FileSystem owns its device) and the test,
// which corrupts and inspects the bytes directly. Logical damage (wrong
// link counts, dangling entries, overlapping extents) is made by loading the
// state, changing the in-memory table and writing it back as a newer
// checkpoint (write_state), exactly as a buggy writer would have left it.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "alloc/allocator.h"
#include "fs/checkpoint.h"
#include "fs/device.h"
#include "fs/filesystem.h"
#include "fs/format.h"
#include "fs/fsck.h"
#include "fs/inode_table.h"
#include "fs/loader.h"
#include "fs/mkfs.h"
#include "fs/records.h"

namespace dhfs {
namespace {

constexpr std::uint64_t kImageBytes = 64ULL << 20;  // the smallest dhfs
const Cred kRoot{0, 0};

// Forwards to a MemDevice the test keeps. When `frozen` is set, writes are
// dropped (and reported as done): the device "crashed" at that moment.
class SharedDevice : public Device {
 public:
  SharedDevice(std::shared_ptr<MemDevice> mem, std::shared_ptr<std::atomic<bool>> frozen)
      : mem_(std::move(mem)), frozen_(std::move(frozen)) {}
  int submit(std::span<const DeviceIo> ios) override {
    if (!frozen_->load()) return mem_->submit(ios);
    for (const DeviceIo& io : ios)
      if (io.op == DeviceIo::Op::Read)
        if (int rc = mem_->submit({&io, 1}); rc < 0) return rc;
    return 0;
  }
  int flush() override { return frozen_->load() ? 0 : mem_->flush(); }
  std::uint64_t size_bytes() const override { return mem_->size_bytes(); }
  bool read_only() const override { return false; }
  std::string describe() const override { return "shared memory device"; }

 private:
  std::shared_ptr<MemDevice> mem_;
  std::shared_ptr<std::atomic<bool>> frozen_;
};

// A device that refuses (and counts) every write: fsck -n must never try.
class ReadOnlyView : public Device {
 public:
  explicit ReadOnlyView(MemDevice& mem) : mem_(mem) {}
  int submit(std::span<const DeviceIo> ios) override {
    for (const DeviceIo& io : ios)
      if (io.op == DeviceIo::Op::Write) {
        ++write_attempts;
        return -EROFS;
      }
    return mem_.submit(ios);
  }
  int write_attempts = 0;
  int flush() override { return 0; }
  std::uint64_t size_bytes() const override { return mem_.size_bytes(); }
  bool read_only() const override { return true; }
  std::string describe() const override { return "read-only view"; }

 private:
  MemDevice& mem_;
};

std::span<const std::byte> as_bytes(std::string_view s) { return {reinterpret_cast<const std::byte*>(s.data()), s.size()}; }

// Position-dependent content, so that blocks read from a wrong place differ.
std::string pattern(std::size_t len, unsigned seed) {
  std::string s(len, '\0');
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& c : s) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return s;
}

struct Image {
  std::shared_ptr<MemDevice> mem;
  std::shared_ptr<std::atomic<bool>> frozen = std::make_shared<std::atomic<bool>>(false);

  explicit Image(std::uint64_t bytes = kImageBytes) : mem(std::make_shared<MemDevice>(bytes)) {
    std::string error;
    REQUIRE(format_device(*mem, {}, nullptr, error));
  }

  std::unique_ptr<FileSystem> mount() {
    std::string error;
    auto fs = FileSystem::open(std::make_unique<SharedDevice>(mem, frozen), FsOptions{}, error);
    INFO(error);
    REQUIRE(fs);
    return fs;
  }
  bool mounts(std::string* why = nullptr) {
    std::string error;
    auto fs = FileSystem::open(std::make_unique<SharedDevice>(mem, frozen), FsOptions{}, error);
    if (why) *why = error;
    if (!fs) return false;
    return fs->shutdown() == 0;
  }

  // fsck -n, on a device that refuses writes; also verifies nothing changed.
  FsckReport check() {
    ReadOnlyView ro(*mem);
    FsckReport r = Checker(ro, FsckOptions{false}).run();
    CHECK(ro.write_attempts == 0);
    CHECK_FALSE(r.wrote);
    return r;
  }
  FsckReport repair() { return Checker(*mem, FsckOptions{true}).run(); }

  Superblock superblock() {
    Superblock sb;
    std::optional<SuperblockFallback> fallback;
    std::string error;
    REQUIRE(read_superblock(*mem, sb, fallback, error));
    return sb;
  }
  void flip(std::uint64_t offset) { mem->bytes()[offset] ^= std::byte{0x5a}; }
};

// Compares file contents without printing kilobytes of binary on failure.
bool same(const std::optional<std::string>& got, const std::string& want) {
  if (!got) {
    UNSCOPED_INFO("file missing or unreadable");
    return false;
  }
  if (*got == want) return true;
  std::size_t at = 0;
  while (at < got->size() && at < want.size() && (*got)[at] == want[at]) ++at;
  UNSCOPED_INFO("contents differ: " << got->size() << " bytes, expected " << want.size() << ", first difference at "
                                    << at);
  return false;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

bool mentions(const std::vector<std::string>& lines, std::string_view what) {
  for (const auto& l : lines)
    if (l.find(what) != std::string::npos) return true;
  return false;
}

// ------------------------------------------------------- core API helpers

Ino lookup(FileSystem& fs, Ino parent, std::string_view name) {
  Attr a;
  return fs.lookup(parent, name, &a) == 0 ? a.ino : 0;
}

Ino resolve(FileSystem& fs, std::string_view path) {
  Ino cur = kRootIno;
  std::size_t pos = 0;
  while (pos < path.size() && cur) {
    std::size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    if (slash > pos) cur = lookup(fs, cur, path.substr(pos, slash - pos));
    pos = slash + 1;
  }
  return cur;
}

std::optional<std::string> read_all(FileSystem& fs, std::string_view path) {
  Ino ino = resolve(fs, path);
  if (!ino) return std::nullopt;
  Attr a;
  if (fs.getattr(ino, &a) != 0) return std::nullopt;
  std::string out;
  AlignedBuffer scratch;
  while (out.size() < a.size) {
    std::span<const std::byte> got;
    if (fs.read(ino, out.size(), 1 << 20, scratch, &got) != 0 || got.empty()) return std::nullopt;
    out.append(reinterpret_cast<const char*>(got.data()), got.size());
  }
  return out;
}

Ino make_file(FileSystem& fs, Ino dir, std::string_view name, const std::vector<std::pair<std::uint64_t, std::string>>& writes) {
  Attr a;
  REQUIRE(fs.create(dir, name, 0644, O_WRONLY, kRoot, &a) == 0);
  for (const auto& [off, data] : writes)
    REQUIRE(fs.write(a.ino, off, as_bytes(data)) == static_cast<ssize_t>(data.size()));
  fs.release(a.ino);
  return a.ino;
}

// What the populated image holds; `expect_files` checks it after a mount.
struct Population {
  std::string small = "hello, dhfs\n";
  std::string big = pattern(300 * 1024, 1);  // many blocks
  std::string piece1 = pattern(8192, 2), piece2 = pattern(5000, 3), piece3 = pattern(4096, 4);
  std::uint64_t off2 = 1 << 20, off3 = 7 << 20;  // sparse, three extents

  void populate(FileSystem& fs) {
    Attr a;
    REQUIRE(fs.mkdir(kRootIno, "dir", 0755, kRoot, &a) == 0);
    const Ino dir = a.ino;
    REQUIRE(fs.mkdir(dir, "sub", 0700, kRoot, &a) == 0);
    const Ino sub = a.ino;
    REQUIRE(fs.mkdir(sub, "deeper", 0700, kRoot, &a) == 0);
    const Ino small = make_file(fs, dir, "small", {{0, this->small}});
    REQUIRE(fs.link(small, kRootIno, "hardlink", &a) == 0);
    REQUIRE(fs.link(small, sub, "hardlink2", &a) == 0);
    make_file(fs, kRootIno, "big", {{0, big}});
    make_file(fs, sub, "sparse", {{0, piece1}, {off2, piece2}, {off3, piece3}});
    REQUIRE(fs.symlink(kRootIno, "sym", "dir/small", kRoot, &a) == 0);
    REQUIRE(fs.symlink(dir, "longsym", std::string(4095, 'x'), kRoot, &a) == 0);
    REQUIRE(fs.mknod(kRootIno, "fifo", S_IFIFO | 0644, 0, kRoot, &a) == 0);
    REQUIRE(fs.mknod(dir, "null", S_IFCHR | 0666, (1u << 8) | 3, kRoot, &a) == 0);
    REQUIRE(fs.setxattr(small, "user.color", "blue", 0) == 0);
    REQUIRE(fs.setxattr(dir, "trusted.overlay.opaque", "y", 0) == 0);
    // Preallocated (unwritten) blocks past the end of a file.
    const Ino pre = make_file(fs, kRootIno, "prealloc", {{0, "x"}});
    REQUIRE(fs.fallocate(pre, FALLOC_FL_KEEP_SIZE, 0, 64 * 1024) == 0);
    // Created and removed again: leaves nothing behind.
    make_file(fs, kRootIno, "gone", {{0, pattern(20000, 9)}});
    REQUIRE(fs.unlink(kRootIno, "gone") == 0);
  }

  void expect_files(FileSystem& fs, bool with_big = true) {
    CHECK(same(read_all(fs, "dir/small"), small));
    CHECK(same(read_all(fs, "hardlink"), small));
    CHECK(same(read_all(fs, "dir/sub/hardlink2"), small));
    if (with_big) CHECK(same(read_all(fs, "big"), big));
    auto sparse = read_all(fs, "dir/sub/sparse");
    REQUIRE(sparse);
    REQUIRE(sparse->size() == off3 + piece3.size());
    CHECK(same(sparse->substr(0, piece1.size()), piece1));
    CHECK(same(sparse->substr(off2, piece2.size()), piece2));
    CHECK(same(sparse->substr(off3), piece3));
    CHECK(same(sparse->substr(piece1.size(), 4096), std::string(4096, '\0')));
    std::string target;
    CHECK(fs.readlink(resolve(fs, "sym"), &target) == 0);
    CHECK(target == "dir/small");
    std::string v;
    CHECK(fs.getxattr(resolve(fs, "dir/small"), "user.color", &v) == 0);
    CHECK(v == "blue");
    Attr a;
    REQUIRE(fs.getattr(resolve(fs, "dir/small"), &a) == 0);
    CHECK(a.nlink == 3);
    REQUIRE(fs.getattr(resolve(fs, "dir"), &a) == 0);
    CHECK(a.nlink == 3);
  }
};

// A populated image, cleanly shut down.
struct Populated {
  Image img;
  Population pop;
  Populated() {
    auto fs = img.mount();
    pop.populate(*fs);
    REQUIRE(fs->shutdown() == 0);
  }
};

// ------------------------------------------------------ state rewriting

// Every record that rebuilds `table` (views point into the table).
std::vector<Record> records_of(const InodeTable& table) {
  std::vector<Record> out;
  table.for_each([&](const Inode& in) {
    out.push_back(in.to_record());
    if (in.map())
      for (const FileExtent& e : in.map()->extents()) out.push_back(ExtentSetRec{in.ino, e.lblk, e.len, e.pblk, e.flags});
    if (in.xattrs)
      for (const auto& [name, value] : *in.xattrs) out.push_back(XattrSetRec{in.ino, name, value});
    if (in.dir()) in.dir()->for_each([&](const DirEntry& d) { out.push_back(DirentSetRec{in.ino, d.ino, d.dtype, d.name}); });
  });
  return out;
}

// Makes `records` the filesystem's state: a new checkpoint holding them and
// a root slot with the next sequence number that replays nothing.
void write_state(MemDevice& mem, const std::vector<Record>& records, const std::vector<Extent>& extra_root_extents = {}) {
  LoadedState st;
  std::string error;
  REQUIRE(load_state(mem, st, error));
  Allocator alloc(st.sb.data_area());
  for (const Extent& e : st.root.extents) alloc.mark_used(e);
  for (const Record& r : records)
    if (auto* e = std::get_if<ExtentSetRec>(&r); e && e->pblk) alloc.mark_used({e->pblk, e->len});  // may fail: fine
  CheckpointWriter writer(mem, alloc, st.sb.uuid_tag());
  for (const Record& r : records) REQUIRE(writer.add(r) == 0);
  CheckpointRoot root;
  REQUIRE(writer.finish(root) == 0);
  root.seq = st.root.seq + 1;
  root.replay_lsn = st.replay.end_lsn;
  root.next_generation = st.next_generation;
  for (const Extent& e : extra_root_extents) root.extents.push_back(e);
  auto bytes = root.encode();
  AlignedBuffer block(kBlockSize);
  std::memcpy(block.data(), bytes.data(), kBlockSize);
  REQUIRE(mem.write(kRootSlotBlocks[1 - st.root_slot] * kBlockSize, block.data(), kBlockSize) == 0);
}

// Loads the state, lets `damage` change it, and writes it back.
void rewrite_state(MemDevice& mem, const std::function<void(InodeTable&)>& damage,
                   const std::vector<Extent>& extra_root_extents = {}) {
  LoadedState st;
  std::string error;
  REQUIRE(load_state(mem, st, error));
  damage(st.inodes);
  std::vector<Record> records = records_of(st.inodes);
  // The reference counts stay as they were (small files share pack blocks).
  st.meta.refs.for_each(
      [&](Extent e, std::uint32_t count) { records.push_back(RefcountSetRec{e.start, e.len, count}); });
  write_state(mem, records, extra_root_extents);
}

// Inode number of a path, from the on-disk state.
Ino ino_of(MemDevice& mem, std::string_view path) {
  LoadedState st;
  std::string error;
  REQUIRE(load_state(mem, st, error));
  Ino cur = kRootIno;
  std::size_t pos = 0;
  while (pos < path.size()) {
    std::size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    auto e = st.inodes.get(cur)->dir()->lookup(path.substr(pos, slash - pos));
    REQUIRE(e);
    cur = e->ino;
    pos = slash + 1;
  }
  return cur;
}

CheckpointRoot current_root(MemDevice& mem, int* slot = nullptr) {
  LoadedState st;
  std::string error;
  REQUIRE(load_state(mem, st, error));
  if (slot) *slot = st.root_slot;
  return st.root;
}

// Repairs, then expects a clean second check and a mountable filesystem.
FsckReport repair_and_recheck(Image& img) {
  FsckReport r = img.repair();
  INFO("problems:\n" << joined(r.problems) << "repaired:\n" << joined(r.repaired) << "reason: " << r.reason);
  CHECK(r.exit_code == kFsckRepaired);
  CHECK(r.wrote);
  if (mentions(r.info, "wrote checkpoint")) {
    // The root the repair replaced is retired: nothing can fall back to it.
    int cur = 0;
    current_root(*img.mem, &cur);
    const std::byte* old = img.mem->bytes().data() + kRootSlotBlocks[1 - cur] * kBlockSize;
    CHECK(std::all_of(old, old + kBlockSize, [](std::byte x) { return x == std::byte{0}; }));
  }
  FsckReport again = img.check();
  INFO("second check:\n" << joined(again.problems) << again.reason);
  CHECK(again.exit_code == kFsckClean);
  CHECK(again.problems.empty());
  std::string why;
  CHECK(img.mounts(&why));
  INFO(why);
  return r;
}

// ================================================================== tests

TEST_CASE("fsck: a freshly formatted filesystem is clean", "[fsck]") {
  Image img;
  FsckReport r = img.check();
  INFO(joined(r.problems) << r.reason);
  CHECK(r.exit_code == kFsckClean);
  CHECK(r.problems.empty());
  CHECK(r.inodes == 1);
  CHECK(r.directories == 1);
  CHECK(r.blocks_used == r.checkpoint_blocks);
  CHECK(r.free_blocks == r.data_blocks - r.blocks_used);
  // A repair run finds nothing to do and writes nothing.
  const auto before = img.mem->bytes();
  FsckReport y = img.repair();
  CHECK(y.exit_code == kFsckClean);
  CHECK_FALSE(y.wrote);
  CHECK(img.mem->bytes() == before);
}

TEST_CASE("fsck: a populated filesystem is clean", "[fsck]") {
  Populated p;
  FsckReport r = p.img.check();
  INFO(joined(r.problems) << r.reason);
  CHECK(r.exit_code == kFsckClean);
  CHECK(r.problems.empty());
  CHECK(r.repaired.empty());
  CHECK(r.inodes == 12);       // root, dir, sub, deeper, small, big, sparse, sym, longsym, fifo, null, prealloc
  CHECK(r.directories == 4);
  CHECK(r.symlinks == 2);
  CHECK(r.special_files == 2);
  CHECK(r.regular_files == 4);
  CHECK(r.extents >= 5);
  CHECK(r.orphans == 0);
  // small and prealloc's one byte packed into one block, big, sparse, and
  // prealloc's unwritten blocks 1..15
  const std::uint64_t data_blocks = 1 + 75 + (2 + 2 + 1) + 15;
  CHECK(r.file_blocks == data_blocks);
  CHECK(r.blocks_used == r.file_blocks + r.checkpoint_blocks);
  CHECK(r.free_blocks == r.data_blocks - r.blocks_used);
  // It mounts and reads back (and fsck after that mount is clean too).
  {
    auto fs = p.img.mount();
    p.pop.expect_files(*fs);
    REQUIRE(fs->shutdown() == 0);
  }
  CHECK(p.img.check().exit_code == kFsckClean);
}

TEST_CASE("fsck: journal not yet checkpointed is replayed and checked", "[fsck]") {
  Image img;
  Population pop;
  const std::string late = pattern(10000, 21);
  {
    auto fs = img.mount();
    pop.populate(*fs);
    REQUIRE(fs->syncfs() == 0);
    REQUIRE(fs->checkpoint() == 0);
    // Small transactions, each committed on its own, then a crash.
    Attr a;
    REQUIRE(fs->mkdir(kRootIno, "newdir", 0755, kRoot, &a) == 0);
    REQUIRE(fs->syncfs() == 0);
    make_file(*fs, a.ino, "late", {{0, late}});
    REQUIRE(fs->syncfs() == 0);
    REQUIRE(fs->link(resolve(*fs, "big"), a.ino, "big2", &a) == 0);
    REQUIRE(fs->syncfs() == 0);
    REQUIRE(fs->unlink(kRootIno, "fifo") == 0);
    REQUIRE(fs->syncfs() == 0);
    img.frozen->store(true);  // crash: the final checkpoint never lands
    fs->shutdown();
  }
  img.frozen->store(false);
  FsckReport r = img.check();
  INFO(joined(r.problems) << r.reason << joined(r.info));
  CHECK(r.exit_code == kFsckClean);
  CHECK(r.journal_batches == 4);
  CHECK(r.inodes == 15);  // 12 + newdir + late + "gone"; "gone" and "fifo" are orphans
  CHECK(r.orphans == 2);
  auto fs = img.mount();
  pop.expect_files(*fs);
  CHECK(same(read_all(*fs, "newdir/late"), late));
  Attr a;
  REQUIRE(fs->getattr(resolve(*fs, "big"), &a) == 0);
  CHECK(a.nlink == 2);
}

// A transaction group larger than one journal block.
TEST_CASE("fsck: a journal batch of several blocks is replayed", "[fsck]") {
  Image img;
  Population pop;
  {
    auto fs = img.mount();
    pop.populate(*fs);  // one batch of about 8 KiB
    REQUIRE(fs->syncfs() == 0);
    img.frozen->store(true);
    fs->shutdown();
  }
  img.frozen->store(false);
  FsckReport r = img.check();
  INFO(joined(r.problems) << r.reason << joined(r.info));
  CHECK(r.exit_code == kFsckClean);
  CHECK(r.journal_batches == 1);
  CHECK(r.inodes == 13);  // "gone" was unlinked while the kernel still knew it
  CHECK(r.orphans == 1);
}

TEST_CASE("fsck: damaged primary superblock is rewritten from the backup", "[fsck]") {
  Populated p;
  p.img.flip(100);
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  REQUIRE(r.problems.size() == 1);
  CHECK(mentions(r.problems, "primary superblock"));
  FsckReport y = repair_and_recheck(p.img);
  CHECK(mentions(y.repaired, "primary superblock"));
  // The primary itself verifies again.
  std::string why;
  CHECK(Superblock::decode({reinterpret_cast<const std::uint8_t*>(p.img.mem->bytes().data()), kBlockSize}, why));
  auto fs = p.img.mount();
  p.pop.expect_files(*fs);
}

TEST_CASE("fsck: a wiped primary superblock is restored when the rest is dhfs", "[fsck]") {
  Populated p;
  std::memset(p.img.mem->bytes().data(), 0, kBlockSize);
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(mentions(r.problems, "primary superblock"));
  repair_and_recheck(p.img);
  auto fs = p.img.mount();
  p.pop.expect_files(*fs);
}

TEST_CASE("fsck: damaged backup superblock is rewritten from the primary", "[fsck]") {
  Populated p;
  const Superblock sb = p.img.superblock();
  p.img.flip(sb.backup_block() * kBlockSize + 40);
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(mentions(r.problems, fmt::format("backup superblock (block {})", sb.backup_block())));
  repair_and_recheck(p.img);
  std::string why;
  CHECK(Superblock::decode(
      {reinterpret_cast<const std::uint8_t*>(p.img.mem->bytes().data()) + sb.backup_block() * kBlockSize,
       kBlockSize},
      why));
}

TEST_CASE("fsck: on a device larger than the filesystem the backup is where the primary says, or at -b", "[fsck]") {
  Populated p;
  const Superblock sb = p.img.superblock();
  REQUIRE(p.img.mem->extend(kImageBytes + (8ULL << 20)) == 0);  // lvextend, no dhfsctl grow yet
  std::byte* primary = p.img.mem->bytes().data();
  SECTION("the damaged primary still names the size") {
    p.img.flip(200);
    FsckReport r = p.img.check();
    CHECK(r.exit_code == kFsckProblemsLeft);
    CHECK(mentions(r.problems, fmt::format("the backup at block {} is intact", sb.backup_block())));
    FsckReport y = repair_and_recheck(p.img);
    CHECK(mentions(y.repaired, fmt::format("from the backup at block {}", sb.backup_block())));
  }
  SECTION("the size is lost with the primary: -b names the backup") {
    std::memset(primary + 8, 0xa5, 200);  // the magic survives, the geometry does not
    FsckReport r = p.img.check();
    CHECK(r.unrecoverable);
    CHECK(r.reason.find("give its backup with -b") != std::string::npos);
    CHECK(r.reason.find(std::to_string((kImageBytes + (8ULL << 20)) / kBlockSize - 1)) != std::string::npos);

    FsckReport wrong = Checker(*p.img.mem, FsckOptions{true, sb.backup_block() - 1}).run();
    CHECK(wrong.unrecoverable);
    CHECK(wrong.reason.find(fmt::format("block {} holds no usable backup", sb.backup_block() - 1)) !=
          std::string::npos);
    CHECK_FALSE(wrong.wrote);
    FsckReport beyond = Checker(*p.img.mem, FsckOptions{true, 1ULL << 40}).run();
    CHECK(beyond.unrecoverable);
    CHECK(beyond.reason.find("beyond the device's last block") != std::string::npos);

    FsckReport y = Checker(*p.img.mem, FsckOptions{true, sb.backup_block()}).run();
    INFO(joined(y.problems) << y.reason);
    CHECK(y.exit_code == kFsckRepaired);
    CHECK(mentions(y.repaired, fmt::format("from the backup at block {}", sb.backup_block())));
    CHECK(p.img.check().exit_code == kFsckClean);
  }
  CHECK(p.img.superblock().total_blocks == sb.total_blocks);
  auto fs = p.img.mount();
  p.pop.expect_files(*fs);
}

TEST_CASE("fsck: -b on an intact filesystem changes nothing", "[fsck]") {
  Populated p;
  FsckReport r = Checker(*p.img.mem, FsckOptions{true, 5}).run();
  CHECK(r.exit_code == kFsckClean);
  CHECK(mentions(r.info, "-b 5 was not needed"));
  CHECK_FALSE(r.wrote);
}

TEST_CASE("fsck: both superblocks damaged is unrecoverable", "[fsck]") {
  Populated p;
  const Superblock sb = p.img.superblock();
  p.img.flip(100);
  p.img.flip(sb.backup_block() * kBlockSize + 100);
  for (bool repair : {false, true}) {
    FsckReport r = repair ? p.img.repair() : p.img.check();
    CHECK(r.exit_code == kFsckProblemsLeft);
    CHECK(r.unrecoverable);
    CHECK(r.reason.find("superblock") != std::string::npos);
    CHECK_FALSE(r.wrote);
  }
}

TEST_CASE("fsck: what is not dhfs is an operational error", "[fsck]") {
  SECTION("zeros") {
    MemDevice zeros(64ULL << 20);
    FsckReport r = Checker(zeros, FsckOptions{true}).run();
    CHECK(r.exit_code == kFsckOperationalError);
    CHECK(r.operational_error);
    CHECK(r.reason.find("not a dhfs filesystem") != std::string::npos);
  }
  SECTION("too small") {
    MemDevice tiny(1 << 20);
    FsckReport r = Checker(tiny, FsckOptions{false}).run();
    CHECK(r.exit_code == kFsckOperationalError);
    CHECK(r.reason.find("not a dhfs filesystem") != std::string::npos);
  }
  SECTION("truncated image") {
    Image img(80ULL << 20);
    MemDevice cut(72ULL << 20);
    std::memcpy(cut.bytes().data(), img.mem->bytes().data(), cut.size_bytes());
    FsckReport r = Checker(cut, FsckOptions{false}).run();
    CHECK(r.exit_code == kFsckProblemsLeft);
    CHECK(r.unrecoverable);
    CHECK(r.reason.find("truncated") != std::string::npos);
  }
}

TEST_CASE("fsck: a damaged checkpoint stream is unrecoverable, never a crash", "[fsck]") {
  Populated p;
  const CheckpointRoot root = current_root(*p.img.mem);
  REQUIRE_FALSE(root.extents.empty());
  const std::uint64_t base = root.extents[0].start * kBlockSize;
  // In a frame header, then in the records.
  for (std::uint64_t off : {std::uint64_t{20}, std::uint64_t{300}, root.stream_bytes - 5}) {
    DYNAMIC_SECTION("byte " << off) {
      p.img.flip(base + off);
      FsckReport r = p.img.check();
      CHECK(r.exit_code == kFsckProblemsLeft);
      CHECK(r.unrecoverable);
      CHECK(r.reason.find("checkpoint") != std::string::npos);
      const auto before = p.img.mem->bytes();
      FsckReport y = p.img.repair();
      CHECK(y.exit_code == kFsckProblemsLeft);
      CHECK(y.unrecoverable);
      CHECK_FALSE(y.wrote);
      CHECK(p.img.mem->bytes() == before);
    }
  }
}

TEST_CASE("fsck: root slots: a stale or never written slot is no problem", "[fsck]") {
  Image img;
  Population pop;
  {
    auto fs = img.mount();
    pop.populate(*fs);
    REQUIRE(fs->checkpoint() == 0);
    REQUIRE(fs->checkpoint() == 0);
    REQUIRE(fs->shutdown() == 0);
  }
  int cur = 0;
  const CheckpointRoot root = current_root(*img.mem, &cur);
  FsckReport r = img.check();
  CHECK(r.exit_code == kFsckClean);
  CHECK(r.checkpoint_seq == root.seq);
  CHECK(mentions(r.info, fmt::format("slot {} is current", cur == 0 ? "A" : "B")));
  // Damage the older slot: only a note.
  img.flip(kRootSlotBlocks[1 - cur] * kBlockSize + 30);
  r = img.check();
  CHECK(r.exit_code == kFsckClean);
  CHECK(r.problems.empty());
  CHECK(mentions(r.info, "not valid"));
  // Both gone: nothing to start from.
  img.flip(kRootSlotBlocks[cur] * kBlockSize + 30);
  r = img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(r.unrecoverable);
  CHECK(r.reason.find("no valid checkpoint root") != std::string::npos);
}

TEST_CASE("fsck: journal damage in the middle loses the tail, repair keeps the rest", "[fsck]") {
  Image img;
  Population pop;
  const std::string a = pattern(6000, 11), b = pattern(7000, 12), c = pattern(100, 13);
  {
    auto fs = img.mount();
    pop.populate(*fs);
    REQUIRE(fs->syncfs() == 0);
    REQUIRE(fs->checkpoint() == 0);  // replays from here: batches of a, b and c follow
    make_file(*fs, kRootIno, "a", {{0, a}});
    REQUIRE(fs->syncfs() == 0);
    make_file(*fs, kRootIno, "b", {{0, b}});
    REQUIRE(fs->syncfs() == 0);
    make_file(*fs, kRootIno, "c", {{0, c}});
    REQUIRE(fs->syncfs() == 0);
    img.frozen->store(true);
    fs->shutdown();
  }
  img.frozen->store(false);
  CHECK(img.check().exit_code == kFsckClean);

  // Find the batches after the checkpoint's replay position.
  const Superblock sb = img.superblock();
  const CheckpointRoot root = current_root(*img.mem);
  const std::uint64_t ring = sb.journal_start * kBlockSize, cap = sb.journal_blocks * kBlockSize;
  std::vector<std::uint64_t> batches;
  for (std::uint64_t lsn = root.replay_lsn;;) {
    std::string why;
    auto h = BatchHeader::decode(
        {reinterpret_cast<const std::uint8_t*>(img.mem->bytes().data()) + ring + lsn % cap, BatchHeader::kSize}, why);
    if (!h || h->lsn != lsn || h->uuid_tag != sb.uuid_tag()) break;
    batches.push_back(lsn);
    lsn += h->padded_bytes();
  }
  REQUIRE(batches.size() == 3);

  SECTION("damaged payload") { img.flip(ring + batches[1] % cap + BatchHeader::kSize + 10); }
  SECTION("damaged header") { img.flip(ring + batches[1] % cap + 20); }

  std::string why;
  CHECK_FALSE(img.mounts(&why));
  CHECK(why.find("journal") != std::string::npos);
  FsckReport r = img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK_FALSE(r.unrecoverable);
  CHECK(mentions(r.problems, fmt::format("journal: the batch at position {}", batches[1])));
  FsckReport y = repair_and_recheck(img);
  CHECK(y.journal_transactions_lost >= 1);
  CHECK(mentions(y.repaired, "are lost"));

  auto fs = img.mount();
  pop.expect_files(*fs);
  CHECK(same(read_all(*fs, "a"), a));
  CHECK(resolve(*fs, "b") == 0);
  CHECK(resolve(*fs, "c") == 0);
  // The filesystem keeps working and stays consistent.
  make_file(*fs, kRootIno, "d", {{0, "after repair"}});
  REQUIRE(fs->syncfs() == 0);
  img.frozen->store(true);
  fs->shutdown();
  fs.reset();
  img.frozen->store(false);
  CHECK(img.check().exit_code == kFsckClean);
  auto again = img.mount();
  CHECK(same(read_all(*again, "d"), "after repair"));
  CHECK(resolve(*again, "b") == 0);
}

TEST_CASE("fsck: a directory entry pointing at a missing inode is removed", "[fsck]") {
  Populated p;
  rewrite_state(*p.img.mem, [](InodeTable& t) { t.get(kRootIno)->dir()->add("ghost", 4242, DT_REG); });
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(mentions(r.problems, "entry 'ghost' points at missing inode 4242"));
  repair_and_recheck(p.img);
  auto fs = p.img.mount();
  CHECK(resolve(*fs, "ghost") == 0);
  p.pop.expect_files(*fs);
}

TEST_CASE("fsck: wrong entry type is corrected", "[fsck]") {
  Populated p;
  const Ino small = ino_of(*p.img.mem, "dir/small");
  rewrite_state(*p.img.mem, [&](InodeTable& t) { t.get(kRootIno)->dir()->replace("hardlink", small, DT_DIR); });
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(mentions(r.problems, "entry 'hardlink'"));
  repair_and_recheck(p.img);
  LoadedState st;
  std::string error;
  REQUIRE(load_state(*p.img.mem, st, error));
  CHECK(st.inodes.get(kRootIno)->dir()->lookup("hardlink")->dtype == DT_REG);
}

TEST_CASE("fsck: wrong link counts are corrected", "[fsck]") {
  Populated p;
  const Ino small = ino_of(*p.img.mem, "dir/small"), dir = ino_of(*p.img.mem, "dir"),
            big = ino_of(*p.img.mem, "big");
  rewrite_state(*p.img.mem, [&](InodeTable& t) {
    t.get(small)->nlink = 7;
    t.get(dir)->nlink = 2;
    t.get(big)->nlink = 0;  // named, so not an orphan
  });
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(r.problems.size() == 3);
  CHECK(mentions(r.problems, fmt::format("inode {} (/hardlink) (regular file): nlink 7, but 3", small)));
  CHECK(mentions(r.problems, fmt::format("directory {} (/dir): nlink 2, but it has 1 subdirectories", dir)));
  CHECK(r.orphans == 0);
  repair_and_recheck(p.img);
  auto fs = p.img.mount();
  p.pop.expect_files(*fs);  // checks nlink of dir/small and dir
  Attr a;
  REQUIRE(fs->getattr(big, &a) == 0);
  CHECK(a.nlink == 1);
}

// Files may share blocks (clones, copy-ups, dedup), but then the reference
// counts must say so: blocks referenced twice with a count of one are
// reported, and repair makes the counts match the block maps (both files
// keep what their maps point at).
TEST_CASE("fsck: two files referencing the same blocks without reference counts", "[fsck]") {
  Populated p;
  const Ino big = ino_of(*p.img.mem, "big"), sparse = ino_of(*p.img.mem, "dir/sub/sparse");
  REQUIRE(big < sparse);
  BlockNo shared = 0;
  rewrite_state(*p.img.mem, [&](InodeTable& t) {
    // sparse's first two blocks are redirected onto blocks 10 and 11 of big.
    auto e = t.get(big)->map()->find(10);
    REQUIRE(e);
    shared = e->pblk + (10 - e->lblk);
    t.get(sparse)->map()->set(0, 2, shared, 0);
  });
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(mentions(r.problems, fmt::format("device blocks {}..{}: reference count 1, but 2 block maps reference them",
                                         shared, shared + 1)));
  FsckReport y = repair_and_recheck(p.img);
  CHECK(mentions(y.repaired, "reference counts rebuilt from the block maps"));
  auto fs = p.img.mount();
  CHECK(same(read_all(*fs, "big"), p.pop.big));
  auto s = read_all(*fs, "dir/sub/sparse");
  REQUIRE(s);
  CHECK(same(s->substr(0, 8192), p.pop.big.substr(10 * 4096, 8192)));
  CHECK(same(s->substr(p.pop.off2, p.pop.piece2.size()), p.pop.piece2));
}

TEST_CASE("fsck: file blocks also claimed by the checkpoint stream are unmapped from the file", "[fsck]") {
  Populated p;
  const Ino big = ino_of(*p.img.mem, "big");
  BlockNo first = 0;
  {
    LoadedState st;
    std::string error;
    REQUIRE(load_state(*p.img.mem, st, error));
    first = st.inodes.get(big)->map()->find(0)->pblk;
  }
  // The new root lists big's first two blocks among its stream's extents.
  rewrite_state(*p.img.mem, [](InodeTable&) {}, {{first, 2}});
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(mentions(r.problems, fmt::format("inode {} (/big): device blocks {}..{} (file blocks 0..1) are also used by "
                                         "the checkpoint stream",
                                         big, first, first + 1)));
  repair_and_recheck(p.img);
  auto fs = p.img.mount();
  auto now = read_all(*fs, "big");
  REQUIRE(now);
  CHECK(same(now->substr(0, 8192), std::string(8192, '\0')));
  CHECK(same(now->substr(8192), p.pop.big.substr(8192)));
}

TEST_CASE("fsck: extents outside the data area are unmapped", "[fsck]") {
  Populated p;
  const Superblock sb = p.img.superblock();
  const Ino big = ino_of(*p.img.mem, "big"), sparse = ino_of(*p.img.mem, "dir/sub/sparse");
  rewrite_state(*p.img.mem, [&](InodeTable& t) {
    t.get(big)->map()->set(2, 3, sb.total_blocks + 100, 0);  // beyond the device
    t.get(sparse)->map()->set(1000, 1, sb.journal_start + 5, 0);   // inside the journal
  });
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(r.problems.size() == 2);
  CHECK(mentions(r.problems, fmt::format("inode {} (/big): file blocks 2..4 -> device blocks {}..{} lie outside",
                                         big, sb.total_blocks + 100, sb.total_blocks + 102)));
  CHECK(mentions(r.problems, fmt::format("inode {} (/dir/sub/sparse): file blocks 1000 -> device blocks {} lie "
                                         "outside",
                                         sparse, sb.journal_start + 5)));
  repair_and_recheck(p.img);
  auto fs = p.img.mount();
  auto big_now = read_all(*fs, "big");
  REQUIRE(big_now);
  CHECK(same(big_now->substr(0, 2 * 4096), p.pop.big.substr(0, 2 * 4096)));
  CHECK(same(big_now->substr(2 * 4096, 3 * 4096), std::string(3 * 4096, '\0')));
  CHECK(same(big_now->substr(5 * 4096), p.pop.big.substr(5 * 4096)));
}

TEST_CASE("fsck: packed bytes that leave their block or overlap another file's are unmapped", "[fsck]") {
  // dir/small (12 bytes) and prealloc (1 byte, after it) share a pack block.
  Populated p;
  const Ino small = ino_of(*p.img.mem, "dir/small"), pre = ino_of(*p.img.mem, "prealloc");
  std::string expect;
  SECTION("past the end of the block") {
    rewrite_state(*p.img.mem, [&](InodeTable& t) { t.get(pre)->size = 4095; });  // at offset 12
    expect = fmt::format("inode {} (/prealloc): file blocks 0 -> device blocks", pre);
  }
  SECTION("over another file's bytes") {
    rewrite_state(*p.img.mem, [&](InodeTable& t) { t.get(small)->size = 100; });
    expect = fmt::format("inode {} (/prealloc): its packed bytes 12..13 of device block", pre);
  }
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  INFO(joined(r.problems));
  CHECK(r.problems.size() == 2);
  CHECK(mentions(r.problems, "reference count 2, but 1 block maps"));  // one map fewer now
  CHECK(mentions(r.problems, expect));
  repair_and_recheck(p.img);
  auto fs = p.img.mount();
  auto now = read_all(*fs, "prealloc");
  REQUIRE(now);
  CHECK(now->find_first_not_of('\0') == std::string::npos);  // its block is gone: zeros
  auto small_now = read_all(*fs, "dir/small");
  REQUIRE(small_now);
  CHECK(same(small_now->substr(0, p.pop.small.size()), p.pop.small));
}

TEST_CASE("fsck: records the decoder refuses make the checkpoint unrecoverable", "[fsck]") {
  Populated p;
  const Ino big = ino_of(*p.img.mem, "big"), fifo = ino_of(*p.img.mem, "fifo");
  SECTION("unknown extent flags") {
    rewrite_state(*p.img.mem, [&](InodeTable& t) {
      auto e = *t.get(big)->map()->find(0);
      t.get(big)->map()->set(0, 1, e.pblk, 0x80);
    });
  }
  SECTION("inode without a file type") {
    rewrite_state(*p.img.mem, [&](InodeTable& t) { t.get(fifo)->mode = 0644; });
  }
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(r.unrecoverable);
  CHECK(r.reason.find("checkpoint") != std::string::npos);
  const auto before = p.img.mem->bytes();
  FsckReport y = p.img.repair();
  CHECK(y.exit_code == kFsckProblemsLeft);
  CHECK_FALSE(y.wrote);
  CHECK(p.img.mem->bytes() == before);
}

TEST_CASE("fsck: unreachable inodes are relinked into /lost+found", "[fsck]") {
  Populated p;
  const Ino big = ino_of(*p.img.mem, "big"), dir = ino_of(*p.img.mem, "dir");
  SECTION("a file") {
    rewrite_state(*p.img.mem, [&](InodeTable& t) { t.get(kRootIno)->dir()->remove("big"); });
    FsckReport r = p.img.check();
    CHECK(r.exit_code == kFsckProblemsLeft);
    CHECK(mentions(r.problems, fmt::format("inode {} (regular file, nlink 1, {} bytes) is not reachable", big,
                                           p.pop.big.size())));
    FsckReport y = repair_and_recheck(p.img);
    CHECK(mentions(y.repaired, "created /lost+found"));
    auto fs = p.img.mount();
    CHECK(same(read_all(*fs, fmt::format("lost+found/#{}", big)), p.pop.big));
    p.pop.expect_files(*fs, false);
  }
  SECTION("a directory tree") {
    rewrite_state(*p.img.mem, [&](InodeTable& t) {
      t.get(kRootIno)->dir()->remove("dir");
      t.get(kRootIno)->nlink = 2;  // as if dir had been removed properly
    });
    FsckReport r = p.img.check();
    CHECK(r.exit_code == kFsckProblemsLeft);
    CHECK(mentions(r.problems, fmt::format("directory {} (", dir)));
    CHECK(r.problems.size() == 1);  // its contents are reached through it
    repair_and_recheck(p.img);
    auto fs = p.img.mount();
    CHECK(same(read_all(*fs, fmt::format("lost+found/#{}/small", dir)), p.pop.small));
    CHECK(read_all(*fs, fmt::format("lost+found/#{}/sub/sparse", dir)));
    CHECK(same(read_all(*fs, "hardlink"), p.pop.small));
  }
  SECTION("a cycle of detached directories") {
    const Ino sub = ino_of(*p.img.mem, "dir/sub");
    rewrite_state(*p.img.mem, [&](InodeTable& t) {
      t.get(kRootIno)->dir()->remove("dir");
      t.get(kRootIno)->nlink = 2;
      t.get(sub)->dir()->add("loop", dir, DT_DIR);  // dir -> sub -> dir
    });
    FsckReport r = p.img.check();
    CHECK(r.exit_code == kFsckProblemsLeft);
    CHECK(mentions(r.problems, "not reachable from the root"));
    CHECK(mentions(r.problems, "has a second name"));
    repair_and_recheck(p.img);
    auto fs = p.img.mount();
    CHECK(resolve(*fs, "lost+found") != 0);
  }
  SECTION("lost+found gets a new inode number") {
    // A table without holes: /lost+found extends it.
    Image img;
    std::string content = pattern(5000, 31);
    Ino f = 0;
    {
      auto fs = img.mount();
      f = make_file(*fs, kRootIno, "f", {{0, content}});
      REQUIRE(fs->shutdown() == 0);
    }
    rewrite_state(*img.mem, [&](InodeTable& t) { t.get(kRootIno)->dir()->remove("f"); });
    FsckReport y = repair_and_recheck(img);
    CHECK(mentions(y.repaired, fmt::format("created /lost+found (inode {})", f + 1)));
    auto fs = img.mount();
    CHECK(same(read_all(*fs, fmt::format("lost+found/#{}", f)), content));
  }
  SECTION("an existing lost+found is reused") {
    {
      auto fs = p.img.mount();
      Attr a;
      REQUIRE(fs->mkdir(kRootIno, "lost+found", 0700, kRoot, &a) == 0);
      REQUIRE(fs->shutdown() == 0);
    }
    rewrite_state(*p.img.mem, [&](InodeTable& t) { t.get(kRootIno)->dir()->remove("big"); });
    FsckReport y = repair_and_recheck(p.img);
    CHECK_FALSE(mentions(y.repaired, "created"));
    auto fs = p.img.mount();
    CHECK(same(read_all(*fs, fmt::format("lost+found/#{}", big)), p.pop.big));
  }
}

TEST_CASE("fsck: a directory with two names keeps the one closest to the root", "[fsck]") {
  Populated p;
  const Ino dir = ino_of(*p.img.mem, "dir"), deeper = ino_of(*p.img.mem, "dir/sub/deeper");
  rewrite_state(*p.img.mem, [&](InodeTable& t) {
    t.get(deeper)->dir()->add("again", dir, DT_DIR);  // a cycle: dir/sub/deeper/again is dir
    ++t.get(deeper)->nlink;
  });
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(mentions(r.problems, fmt::format("directory {} (/dir/sub/deeper): entry 'again': directory {} has a second "
                                         "name here (first name /dir)",
                                         deeper, dir)));
  repair_and_recheck(p.img);
  auto fs = p.img.mount();
  CHECK(resolve(*fs, "dir/sub/deeper/again") == 0);
  p.pop.expect_files(*fs);
}

TEST_CASE("fsck: orphans are noted and freed by a repair", "[fsck]") {
  Populated p;
  const Ino big = ino_of(*p.img.mem, "big");
  rewrite_state(*p.img.mem, [&](InodeTable& t) {
    t.get(kRootIno)->dir()->remove("big");
    t.get(big)->nlink = 0;  // unlinked while open, then a crash
  });
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckClean);
  CHECK(r.problems.empty());
  CHECK(r.orphans == 1);
  CHECK(mentions(r.info, fmt::format("inode {} (regular file, 75 blocks) is an orphan", big)));
  FsckReport y = p.img.repair();
  CHECK(y.exit_code == kFsckClean);
  CHECK(mentions(y.repaired, fmt::format("inode {}: orphan freed (75 blocks)", big)));
  FsckReport again = p.img.check();
  CHECK(again.exit_code == kFsckClean);
  CHECK(again.orphans == 0);
  CHECK(again.file_blocks + 75 == r.file_blocks);
  CHECK(again.inodes + 1 == r.inodes);
}

TEST_CASE("fsck: a symlink without a target is removed", "[fsck]") {
  Populated p;
  const Ino sym = ino_of(*p.img.mem, "sym");
  rewrite_state(*p.img.mem, [&](InodeTable& t) { t.get(sym)->target()->clear(); });
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(mentions(r.problems, fmt::format("inode {}: symlink target of 0 bytes", sym)));
  CHECK(mentions(r.problems, fmt::format("entry 'sym' points at missing inode {}", sym)));
  repair_and_recheck(p.img);
  auto fs = p.img.mount();
  CHECK(resolve(*fs, "sym") == 0);
  CHECK(same(read_all(*fs, "dir/small"), p.pop.small));
  CHECK(same(read_all(*fs, "big"), p.pop.big));
}

TEST_CASE("fsck: a missing root directory is recreated", "[fsck]") {
  Populated p;
  const Ino dir = ino_of(*p.img.mem, "dir");
  rewrite_state(*p.img.mem, [&](InodeTable& t) { t.erase(kRootIno); });
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(mentions(r.problems, "root directory (inode 1) is missing"));
  repair_and_recheck(p.img);
  auto fs = p.img.mount();
  CHECK(same(read_all(*fs, fmt::format("lost+found/#{}/small", dir)), p.pop.small));
}

TEST_CASE("fsck: random damage to metadata never crashes it", "[fsck]") {
  Image img;
  Population pop;
  {
    auto fs = img.mount();
    pop.populate(*fs);
    REQUIRE(fs->syncfs() == 0);
    REQUIRE(fs->checkpoint() == 0);
    make_file(*fs, kRootIno, "late", {{0, "journal only"}});
    REQUIRE(fs->syncfs() == 0);
    img.frozen->store(true);
    fs->shutdown();
  }
  img.frozen->store(false);
  const Superblock sb = img.superblock();
  const CheckpointRoot root = current_root(*img.mem);
  const std::vector<std::byte> pristine = img.mem->bytes();
  // Metadata regions: superblocks, root slots, the journal's used part, the stream.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> regions = {
      {0, kBlockSize},
      {kRootSlotBlocks[0] * kBlockSize, 2 * kBlockSize},
      {sb.journal_start * kBlockSize + root.replay_lsn % (sb.journal_blocks * kBlockSize), 2 * kBlockSize},
      {root.extents[0].start * kBlockSize, std::min<std::uint64_t>(root.stream_bytes, root.extents[0].len * kBlockSize)},
      {sb.backup_block() * kBlockSize, kBlockSize}};
  std::mt19937_64 rng(12345);
  int repaired = 0, unrecoverable = 0;
  for (int i = 0; i < 30; ++i) {
    img.mem->bytes() = pristine;
    const auto& [start, len] = regions[rng() % regions.size()];
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) img.mem->bytes()[start + rng() % len] ^= static_cast<std::byte>(1 + rng() % 255);
    FsckReport r = img.check();
    CHECK((r.exit_code == kFsckClean || r.exit_code == kFsckProblemsLeft || r.exit_code == kFsckOperationalError));
    FsckReport y = img.repair();
    INFO("iteration " << i << ": " << joined(y.problems) << y.reason);
    if (y.exit_code == kFsckRepaired || y.exit_code == kFsckClean) {
      repaired += y.exit_code == kFsckRepaired;
      CHECK(img.check().exit_code == kFsckClean);
      CHECK(img.mounts());
    } else {
      unrecoverable += y.unrecoverable;
      CHECK((y.unrecoverable || y.operational_error));
    }
  }
  // Both outcomes were exercised.
  CHECK(repaired > 0);
  CHECK(unrecoverable > 0);
}

// ================================================= regions, shared extents

// Every record that rebuilds `st`: inodes with what they own, regions,
// settings, reference counts (views point into `st`).
std::vector<Record> records_of(const MetaState& st) {
  std::vector<Record> out = records_of(st.inodes);
  for (const auto& [id, g] : st.regions) out.push_back(RegionSetRec{id, g.root, g.flags, g.reserved});
  for (const auto& [name, value] : st.config) out.push_back(ConfigSetRec{name, value});
  st.refs.for_each([&](Extent e, std::uint32_t c) { out.push_back(RefcountSetRec{e.start, e.len, c}); });
  return out;
}

// Loads the whole state, lets `damage` change it, and writes it back.
void rewrite_meta(MemDevice& mem, const std::function<void(MetaState&)>& damage) {
  LoadedState st;
  std::string error;
  REQUIRE(load_state(mem, st, error));
  damage(st.meta);
  write_state(mem, records_of(st.meta));
}

MetaState load_meta(MemDevice& mem) {
  LoadedState st;
  std::string error;
  REQUIRE(load_state(mem, st, error));
  return std::move(st.meta);
}

std::uint64_t blocks_of(const std::vector<Extent>& v) {
  std::uint64_t n = 0;
  for (const Extent& e : v) n += e.len;
  return n;
}

constexpr std::uint64_t kRegionImageBytes = 128ULL << 20;

FsOptions region_options() {
  FsOptions o;
  o.region_bytes = 2ULL << 20;  // 512 blocks: several regions fit
  o.cow_unit_bytes = 64 * 1024;
  return o;
}

std::unique_ptr<FileSystem> mount_with(Image& img, const FsOptions& o) {
  std::string error;
  auto fs = FileSystem::open(std::make_unique<SharedDevice>(img.mem, img.frozen), o, error);
  INFO(error);
  REQUIRE(fs);
  return fs;
}

Ino mkdir_p(FileSystem& fs, std::string_view path) {
  Ino cur = kRootIno;
  std::size_t pos = 0;
  while (pos < path.size()) {
    std::size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    const std::string_view name = path.substr(pos, slash - pos);
    Attr a;
    Ino next = lookup(fs, cur, name);
    if (!next) {
      REQUIRE(fs.mkdir(cur, name, 0755, kRoot, &a) == 0);
      next = a.ino;
    }
    cur = next;
    pos = slash + 1;
  }
  return cur;
}

// Writes `data` in 1 MiB pieces (what makes a write a chunk).
Ino make_chunked_file(FileSystem& fs, Ino dir, std::string_view name, const std::string& data) {
  Attr a;
  REQUIRE(fs.create(dir, name, 0644, O_WRONLY, kRoot, &a) == 0);
  for (std::size_t off = 0; off < data.size(); off += 1 << 20) {
    const std::string_view piece = std::string_view(data).substr(off, 1 << 20);
    REQUIRE(fs.write(a.ino, off, as_bytes(piece)) == static_cast<ssize_t>(piece.size()));
  }
  fs.release(a.ino);
  return a.ino;
}

// Docker's layout: two overlay2 layers (automatic regions), overlay2/l (no
// region), a directory made a region explicitly; a file shared chunk by
// chunk with an identical one written later, a clone through
// copy_file_range with a few blocks overwritten afterwards (redirected),
// and a file moved out of a region whose root is then removed.
struct RegionPopulation {
  std::string base = pattern(2 << 20, 41);    // two chunks
  std::string tail = pattern(300 * 1024, 42);  // the clone source's unaligned end
  std::string patch = pattern(3 * 4096, 43);
  std::uint64_t patch_at = 40 * 4096;

  void populate(FileSystem& fs) {
    const Ino a = mkdir_p(fs, "docker/overlay2/aaa/diff");
    const Ino b = mkdir_p(fs, "docker/overlay2/bbb/diff");
    mkdir_p(fs, "docker/overlay2/l");
    const Ino gone = mkdir_p(fs, "docker/overlay2/ccc");
    const Ino exp = mkdir_p(fs, "explicit");
    REQUIRE(fs.create_region(exp, 1 << 20) == 0);
    // Shared chunks: the same bytes written twice.
    make_chunked_file(fs, a, "base", base);
    make_chunked_file(fs, b, "copy", base);
    // A clone, then an overwrite of a few of its blocks.
    const Ino src = make_file(fs, a, "src", {{0, tail}});
    Attr at;
    REQUIRE(fs.create(b, "clone", 0644, O_WRONLY, kRoot, &at) == 0);
    REQUIRE(fs.copy_file_range(src, 0, at.ino, 0, tail.size()) == static_cast<ssize_t>(tail.size()));
    REQUIRE(fs.write(at.ino, patch_at, as_bytes(patch)) == static_cast<ssize_t>(patch.size()));
    fs.release(at.ino);
    make_file(fs, exp, "inside", {{0, pattern(50000, 44)}});
    // A file moved out of a region that ends afterwards keeps its number.
    make_file(fs, gone, "moved", {{0, pattern(9000, 45)}});
    REQUIRE(fs.rename(gone, "moved", kRootIno, "moved", 0, kRoot) == 0);
    REQUIRE(fs.rmdir(resolve(fs, "docker/overlay2"), "ccc") == 0);
  }

  void expect_files(FileSystem& fs) {
    CHECK(same(read_all(fs, "docker/overlay2/aaa/diff/base"), base));
    CHECK(same(read_all(fs, "docker/overlay2/bbb/diff/copy"), base));
    CHECK(same(read_all(fs, "docker/overlay2/aaa/diff/src"), tail));
    std::string clone = tail;
    clone.replace(patch_at, patch.size(), patch);
    CHECK(same(read_all(fs, "docker/overlay2/bbb/diff/clone"), clone));
    CHECK(same(read_all(fs, "explicit/inside"), pattern(50000, 44)));
    CHECK(same(read_all(fs, "moved"), pattern(9000, 45)));
  }
};

struct RegionImage {
  Image img{kRegionImageBytes};
  RegionPopulation pop;
  std::vector<RegionReport> regions;  // as the filesystem saw them at the end
  FsStats stats;
  explicit RegionImage(bool clean_shutdown = true) {
    auto fs = mount_with(img, region_options());
    pop.populate(*fs);
    regions = fs->region_reports();
    stats = fs->stats();
    if (!clean_shutdown) {
      REQUIRE(fs->syncfs() == 0);
      img.frozen->store(true);  // the checkpoint of the shutdown never lands
    }
    fs->shutdown();
    img.frozen->store(false);
  }
  std::uint32_t region_of(std::string_view path) {
    const Ino ino = ino_of(*img.mem, path);
    for (const RegionReport& r : regions)
      if (r.root == ino) return r.id;
    FAIL("no region rooted at " << path);
    return 0;
  }
};

const FsckRegion* find_region(const FsckReport& r, std::uint32_t id) {
  for (const FsckRegion& g : r.regions)
    if (g.id == id) return &g;
  return nullptr;
}

// What fsck reports per region agrees with what a mount of the image reports.
void expect_accounting_matches_mount(Image& img, const FsckReport& r) {
  auto fs = mount_with(img, FsOptions{});
  const std::vector<RegionReport> mounted = fs->region_reports();
  CHECK(mounted.size() == r.regions.size());
  for (const RegionReport& m : mounted) {
    const FsckRegion* g = find_region(r, m.id);
    REQUIRE(g);
    CHECK(g->root == m.root);
    CHECK(g->reserved_blocks == m.reserved_blocks);
    CHECK(g->slices == m.slices);
    CHECK(g->used_blocks + g->checkpoint_blocks == m.used_blocks);
  }
  const FsStats s = fs->stats();
  CHECK(r.shared_blocks == s.shared_blocks);
  CHECK(r.saved_blocks == s.saved_blocks);
  REQUIRE(fs->shutdown() == 0);
}

TEST_CASE("fsck: regions, clones and shared chunks check clean", "[fsck][regions]") {
  for (bool clean_shutdown : {true, false}) {
    DYNAMIC_SECTION((clean_shutdown ? "after a clean shutdown" : "after a crash (journal replayed)")) {
      RegionImage ri(clean_shutdown);
      REQUIRE(ri.regions.size() == 3);  // aaa, bbb, explicit (ccc ended, l is excluded)
      REQUIRE(ri.stats.shared_blocks > 0);
      FsckReport r = ri.img.check();
      INFO(joined(r.problems) << r.reason << joined(r.info));
      CHECK(r.exit_code == kFsckClean);
      CHECK(r.problems.empty());
      // Sharing: the chunks (512 blocks) and the clone's 75 blocks but
      // the 64 KiB cow_unit (16 blocks) its patch copied.
      CHECK(r.shared_blocks == 512 + 75 - 16);
      CHECK(r.shared_blocks == ri.stats.shared_blocks);
      CHECK(r.saved_blocks == ri.stats.saved_blocks);
      // Regions: each reserves at least what it was created with.
      REQUIRE(r.regions.size() == 3);
      const FsckRegion* a = find_region(r, ri.region_of("docker/overlay2/aaa"));
      const FsckRegion* b = find_region(r, ri.region_of("docker/overlay2/bbb"));
      const FsckRegion* x = find_region(r, ri.region_of("explicit"));
      REQUIRE((a && b && x));
      CHECK(a->root_path == "/docker/overlay2/aaa");
      CHECK(x->root_path == "/explicit");
      CHECK(a->reserved_blocks >= 512);
      CHECK(x->reserved_blocks >= 256);
      for (const FsckRegion* g : {a, b, x}) {
        CHECK(g->reserved_blocks == g->used_blocks + g->checkpoint_blocks + g->free_blocks);
        CHECK(g->file_blocks_inside <= g->file_blocks);
      }
      // aaa: base (512 blocks) and src (75) were written there.
      CHECK(a->file_blocks == 512 + 75);
      CHECK(a->file_blocks_inside == a->file_blocks);
      CHECK(a->used_blocks == 512 + 75);
      CHECK(a->inodes == 4);  // aaa, diff, base, src
      // bbb's copy and clone share aaa's blocks (outside bbb: no error);
      // only the redirected blocks of the clone live in bbb.
      CHECK(b->file_blocks == 512 + 75);
      CHECK(b->file_blocks_inside < b->file_blocks);
      CHECK(b->file_blocks_inside > 0);
      CHECK(r.reserved_blocks == a->reserved_blocks + b->reserved_blocks + x->reserved_blocks);
      // After the crash, the removed region root ccc is still an orphan
      // (the shutdown that would have freed it never landed).
      const std::uint64_t orphans = clean_shutdown ? 0 : 1;
      CHECK(r.orphans == orphans);
      // The file moved out of the removed region names it still (and so
      // does the orphaned root): a note.
      CHECK(r.stray_region_inodes == 1 + orphans);
      CHECK(mentions(r.info, fmt::format("{} inodes name regions that do not exist", 1 + orphans)));
      CHECK(r.settings == 2);  // region_size and cow_unit, persisted by the mount
      CHECK(mentions(r.info, fmt::format("region {} (root /docker/overlay2/aaa): {} blocks reserved", a->id,
                                         a->reserved_blocks)));
      // A repair run has nothing to do but free the orphan.
      const auto before = ri.img.mem->bytes();
      FsckReport y = ri.img.repair();
      CHECK(y.exit_code == kFsckClean);
      CHECK(y.problems.empty());
      CHECK(y.wrote == (orphans > 0));
      const bool unchanged = ri.img.mem->bytes() == before;  // (not printed: 128 MiB)
      CHECK(unchanged == (orphans == 0));
      expect_accounting_matches_mount(ri.img, ri.img.check());
      auto fs = ri.img.mount();
      ri.pop.expect_files(*fs);
      REQUIRE(fs->shutdown() == 0);
      CHECK(ri.img.check().exit_code == kFsckClean);
    }
  }
}

TEST_CASE("fsck: a region whose root is wrong is dropped", "[fsck][regions]") {
  RegionImage ri;
  const std::uint32_t id = ri.region_of("docker/overlay2/aaa");
  const Ino root = ino_of(*ri.img.mem, "docker/overlay2/aaa");
  const Ino base = ino_of(*ri.img.mem, "docker/overlay2/aaa/diff/base");
  std::vector<std::string> expect;
  SECTION("root inode missing") {
    rewrite_meta(*ri.img.mem, [&](MetaState& m) { m.regions.at(id).root = 9999; });
    // The region is dropped first; then the mark of its former root names
    // a region that no longer exists.
    expect = {fmt::format("region {}: its root inode 9999 does not exist", id),
              fmt::format("directory {} (/docker/overlay2/aaa) is marked as the root of region {}, which does not "
                          "exist",
                          root, id)};
  }
  SECTION("root is a regular file") {
    rewrite_meta(*ri.img.mem, [&](MetaState& m) { m.regions.at(id).root = base; });
    expect = {fmt::format("region {}: its root, inode {}, is a regular file, not a directory", id, base),
              fmt::format("directory {} (/docker/overlay2/aaa) is marked as the root of region {}, which does not "
                          "exist",
                          root, id)};
  }
  SECTION("root without the region-root mark") {
    rewrite_meta(*ri.img.mem, [&](MetaState& m) { m.inodes.get(root)->flags &= ~kInodeRegionRoot; });
    expect = {fmt::format("region {}: its root, directory {} (/docker/overlay2/aaa), is not marked as a region root",
                          id, root)};
  }
  SECTION("root naming another region") {
    rewrite_meta(*ri.img.mem, [&](MetaState& m) { m.inodes.get(root)->region = 777; });
    expect = {fmt::format("region {}: its root, directory {} (/docker/overlay2/aaa), belongs to region 777", id, root),
              fmt::format("directory {} (/docker/overlay2/aaa) is marked as the root of region 777, which does not "
                          "exist",
                          root)};
  }
  SECTION("root removed (an orphan)") {
    rewrite_meta(*ri.img.mem, [&](MetaState& m) {
      const Ino parent = ino_of(*ri.img.mem, "docker/overlay2");
      m.inodes.get(parent)->dir()->remove("aaa");
      --m.inodes.get(parent)->nlink;
      // An empty orphan directory: its contents go too.
      m.inodes.get(root)->dir()->remove("diff");
      m.inodes.get(root)->nlink = 0;
      const Ino diff = ino_of(*ri.img.mem, "docker/overlay2/aaa/diff");
      m.inodes.get(kRootIno)->dir()->add("diff-saved", diff, DT_DIR);
      ++m.inodes.get(kRootIno)->nlink;
    });
    expect = {fmt::format("region {}: its root, directory {}, has been removed (an orphan)", id, root),
              fmt::format("directory {} is marked as the root of region {}, which does not exist", root, id)};
  }
  FsckReport r = ri.img.check();
  INFO(joined(r.problems));
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(r.problems.size() == expect.size());
  for (const auto& e : expect) CHECK(mentions(r.problems, e));
  CHECK(find_region(r, id) == nullptr);
  CHECK(r.regions.size() == 2);
  FsckReport y = repair_and_recheck(ri.img);
  CHECK(mentions(y.repaired, fmt::format("region {}: dropped", id)));
  const MetaState m = load_meta(*ri.img.mem);
  CHECK(m.regions.count(id) == 0);
  CHECK(m.regions.size() == 2);
  if (const Inode* in = m.inodes.get(root)) CHECK_FALSE(in->flags & kInodeRegionRoot);
  CHECK(m.config.size() == 2);  // settings survive the repaired checkpoint
  auto fs = ri.img.mount();
  CHECK(fs->region_reports().size() == 2);
  CHECK(same(read_all(*fs, "docker/overlay2/bbb/diff/copy"), ri.pop.base));
}

TEST_CASE("fsck: a region-root mark without its region is cleared", "[fsck][regions]") {
  RegionImage ri;
  const std::uint32_t id = ri.region_of("docker/overlay2/aaa");
  const Ino diff = ino_of(*ri.img.mem, "docker/overlay2/aaa/diff");
  const Ino l = ino_of(*ri.img.mem, "docker/overlay2/l");
  const Ino src = ino_of(*ri.img.mem, "docker/overlay2/aaa/diff/src");
  rewrite_meta(*ri.img.mem, [&](MetaState& m) {
    m.inodes.get(diff)->flags |= kInodeRegionRoot;  // region `id` exists, but its root is aaa
    m.inodes.get(l)->flags |= kInodeRegionRoot;
    m.inodes.get(l)->region = 555;  // no such region
    m.inodes.get(src)->flags |= kInodeRegionRoot;
  });
  FsckReport r = ri.img.check();
  INFO(joined(r.problems));
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(r.problems.size() == 3);
  CHECK(mentions(r.problems, fmt::format("directory {} (/docker/overlay2/aaa/diff) is marked as the root of region "
                                         "{}, whose root is inode {}",
                                         diff, id, ino_of(*ri.img.mem, "docker/overlay2/aaa"))));
  CHECK(mentions(r.problems, fmt::format("directory {} (/docker/overlay2/l) is marked as the root of region 555, "
                                         "which does not exist",
                                         l)));
  CHECK(mentions(r.problems, fmt::format("inode {} (regular file) is marked as a region root, but only a directory "
                                         "can be one",
                                         src)));
  CHECK(r.regions.size() == 3);  // the regions themselves are fine
  // The region-less inode under /docker/overlay2/l is only a note.
  CHECK(r.stray_region_inodes == 2);
  FsckReport y = repair_and_recheck(ri.img);
  for (Ino ino : {diff, l, src}) CHECK(mentions(y.repaired, fmt::format("inode {}: region-root mark cleared", ino)));
  const MetaState m = load_meta(*ri.img.mem);
  for (Ino ino : {diff, l, src}) CHECK_FALSE(m.inodes.get(ino)->flags & kInodeRegionRoot);
  CHECK(m.inodes.get(ino_of(*ri.img.mem, "docker/overlay2/aaa"))->flags & kInodeRegionRoot);
  CHECK(m.regions.size() == 3);
  // Removing the wrongly marked directory no longer ends region `id`.
  auto fs = ri.img.mount();
  REQUIRE(fs->rmdir(resolve(*fs, "docker/overlay2"), "l") == 0);
  CHECK(fs->region_reports().size() == 3);
}

TEST_CASE("fsck: reserved slices outside the data area are cut or dropped", "[fsck][regions]") {
  RegionImage ri;
  const Superblock sb = ri.img.superblock();
  const Extent area = sb.data_area();
  const std::uint32_t id = ri.region_of("explicit");
  std::vector<Extent> before;
  rewrite_meta(*ri.img.mem, [&](MetaState& m) {
    auto& slices = m.regions.at(id).reserved;
    before = slices;
    slices.push_back({area.end() - 2, 10});      // reaches past the end
    slices.push_back({sb.journal_start, 4});     // inside the journal
    slices.push_back({sb.total_blocks + 50, 5});  // beyond the device
  });
  FsckReport r = ri.img.check();
  INFO(joined(r.problems));
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(r.problems.size() == 3);
  const std::string data = fmt::format("the data area (blocks {}..{})", area.start, area.end() - 1);
  CHECK(mentions(r.problems, fmt::format("region {}: reserved blocks {}..{} reach outside {}", id, area.end() - 2,
                                         area.end() + 7, data)));
  CHECK(mentions(r.problems, fmt::format("region {}: reserved blocks {}..{} lie outside {}", id, sb.journal_start,
                                         sb.journal_start + 3, data)));
  CHECK(mentions(r.problems, fmt::format("region {}: reserved blocks {}..{} lie outside {}", id,
                                         sb.total_blocks + 50, sb.total_blocks + 54, data)));
  const FsckRegion* g = find_region(r, id);
  REQUIRE(g);
  CHECK(g->reserved_blocks == blocks_of(before) + 2);
  FsckReport y = repair_and_recheck(ri.img);
  CHECK(mentions(y.repaired, fmt::format("region {}: reserved blocks {}..{} cut to {}..{}", id, area.end() - 2,
                                         area.end() + 7, area.end() - 2, area.end() - 1)));
  CHECK(mentions(y.repaired, fmt::format("region {}: reserved blocks {}..{} dropped", id, sb.journal_start,
                                         sb.journal_start + 3)));
  const MetaState m = load_meta(*ri.img.mem);
  std::vector<Extent> want = before;
  want.push_back({area.end() - 2, 2});
  CHECK(m.regions.at(id).reserved == want);
  expect_accounting_matches_mount(ri.img, y);
}

TEST_CASE("fsck: overlapping reserved slices", "[fsck][regions]") {
  RegionImage ri;
  const std::uint32_t a = ri.region_of("docker/overlay2/aaa"), b = ri.region_of("docker/overlay2/bbb");
  REQUIRE(a < b);
  const MetaState orig = load_meta(*ri.img.mem);
  const Extent a0 = orig.regions.at(a).reserved.at(0);
  REQUIRE(a0.len >= 20);
  SECTION("within one region: coalesced") {
    const Extent extra{a0.end() - 10, 30};  // overlaps a0's last 10 blocks
    rewrite_meta(*ri.img.mem, [&](MetaState& m) {
      auto& s = m.regions.at(a).reserved;
      s.insert(s.begin(), extra);  // and out of order
    });
    FsckReport r = ri.img.check();
    INFO(joined(r.problems));
    CHECK(r.exit_code == kFsckProblemsLeft);
    CHECK(r.problems.size() >= 1);
    CHECK(mentions(r.problems, fmt::format("region {}: reserved slices {}..{} and {}..{} overlap", a, a0.start,
                                           a0.end() - 1, extra.start, extra.end() - 1)));
    FsckReport y = repair_and_recheck(ri.img);
    CHECK(mentions(y.repaired, fmt::format("region {}: overlapping reserved slices coalesced", a)));
    const MetaState m = load_meta(*ri.img.mem);
    const auto& s = m.regions.at(a).reserved;
    CHECK(std::is_sorted(s.begin(), s.end(), [](const Extent& x, const Extent& y) { return x.start < y.start; }));
    for (std::size_t i = 1; i < s.size(); ++i) CHECK(s[i - 1].end() < s[i].start);
    expect_accounting_matches_mount(ri.img, y);
  }
  SECTION("between regions: the later one gives up the overlap") {
    const Extent stolen{a0.start + 5, 10};
    rewrite_meta(*ri.img.mem, [&](MetaState& m) { m.regions.at(b).reserved.push_back(stolen); });
    FsckReport r = ri.img.check();
    INFO(joined(r.problems));
    CHECK(r.exit_code == kFsckProblemsLeft);
    CHECK(r.problems.size() == 1);
    CHECK(mentions(r.problems, fmt::format("region {}: reserved blocks {}..{} are also reserved by region {}", b,
                                           stolen.start, stolen.end() - 1, a)));
    // Accounting already shows the repaired reservations.
    CHECK(find_region(r, a)->reserved_blocks == blocks_of(orig.regions.at(a).reserved));
    CHECK(find_region(r, b)->reserved_blocks == blocks_of(orig.regions.at(b).reserved));
    FsckReport y = repair_and_recheck(ri.img);
    CHECK(mentions(y.repaired, fmt::format("region {}: gave up 10 reserved blocks that region {} keeps", b, a)));
    const MetaState m = load_meta(*ri.img.mem);
    CHECK(m.regions.at(a).reserved == orig.regions.at(a).reserved);
    CHECK(m.regions.at(b).reserved == orig.regions.at(b).reserved);
    expect_accounting_matches_mount(ri.img, y);
  }
}

TEST_CASE("fsck: more reserved slices than a region record holds", "[fsck][regions]") {
  RegionImage ri;
  const std::uint32_t a = ri.region_of("docker/overlay2/aaa"), b = ri.region_of("docker/overlay2/bbb");
  REQUIRE(a < b);
  const Extent area = ri.img.superblock().data_area();
  const MetaState orig = load_meta(*ri.img.mem);
  // b: kMaxRegionSlices slices, the first of 3 blocks, the others of 1
  // block with a gap after each, clear of every other region's slices;
  // a reserves the middle block of b's first slice, which splits it: one
  // slice too many.
  auto reserved_elsewhere = [&](BlockNo blk) {
    for (const auto& [id, g] : orig.regions)
      if (id != a && id != b)
        for (const Extent& e : g.reserved)
          if (e.contains(blk)) return true;
    return false;
  };
  std::vector<Extent> many;
  for (BlockNo blk = area.start + 1; many.size() < kMaxRegionSlices && blk + 3 < area.end(); blk += 4) {
    if (reserved_elsewhere(blk) || reserved_elsewhere(blk + 1) || reserved_elsewhere(blk + 2)) continue;
    many.push_back({blk, many.empty() ? 3u : 1u});
  }
  REQUIRE(many.size() == kMaxRegionSlices);
  const Extent middle{many[0].start + 1, 1};
  rewrite_meta(*ri.img.mem, [&](MetaState& m) {
    m.regions.at(a).reserved = {middle};
    m.regions.at(b).reserved = many;
  });
  FsckReport r = ri.img.check();
  INFO(joined(r.problems));
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(r.problems.size() == 2);
  CHECK(mentions(r.problems, fmt::format("region {}: reserved blocks {} are also reserved by region {}", b,
                                         middle.start, a)));
  CHECK(mentions(r.problems, fmt::format("region {}: {} reserved slices, more than the {} a region record holds", b,
                                         kMaxRegionSlices + 1, kMaxRegionSlices)));
  REQUIRE(find_region(r, b));
  CHECK(find_region(r, b)->slices == kMaxRegionSlices);
  FsckReport y = repair_and_recheck(ri.img);
  CHECK(mentions(y.repaired, fmt::format("region {}: kept its {} largest reserved slices, released 1 smaller ones", b,
                                         kMaxRegionSlices)));
  const MetaState m = load_meta(*ri.img.mem);
  CHECK(m.regions.at(b).reserved.size() == kMaxRegionSlices);
  CHECK(m.regions.at(a).reserved == std::vector<Extent>{middle});
  expect_accounting_matches_mount(ri.img, ri.img.check());
}

TEST_CASE("fsck: touching or unordered reserved slices are only a note", "[fsck][regions]") {
  RegionImage ri;
  const std::uint32_t x = ri.region_of("explicit");
  const MetaState orig = load_meta(*ri.img.mem);
  const std::vector<Extent> want = orig.regions.at(x).reserved;
  REQUIRE(want.size() == 1);
  REQUIRE(want[0].len >= 4);
  // The same blocks, spelled as two touching slices, the later one first.
  const Extent lo{want[0].start, 2}, hi{want[0].start + 2, want[0].len - 2};
  rewrite_meta(*ri.img.mem, [&](MetaState& m) { m.regions.at(x).reserved = {hi, lo}; });
  FsckReport r = ri.img.check();
  INFO(joined(r.problems));
  CHECK(r.exit_code == kFsckClean);
  CHECK(r.problems.empty());
  CHECK(mentions(r.info, fmt::format("region {}: reserved slices are not listed ascending and coalesced", x)));
  REQUIRE(find_region(r, x));
  CHECK(find_region(r, x)->slices == 1);
  CHECK(find_region(r, x)->reserved_blocks == want[0].len);
  FsckReport y = ri.img.repair();
  CHECK(y.exit_code == kFsckClean);
  CHECK_FALSE(y.wrote);
  expect_accounting_matches_mount(ri.img, r);
}

TEST_CASE("fsck: unknown region and inode flags are cleared", "[fsck][regions]") {
  RegionImage ri;
  const std::uint32_t x = ri.region_of("explicit");
  const Ino root = ino_of(*ri.img.mem, "explicit");
  const Ino inside = ino_of(*ri.img.mem, "explicit/inside");
  rewrite_meta(*ri.img.mem, [&](MetaState& m) {
    m.regions.at(x).flags = 0x10;
    m.inodes.get(root)->flags |= 0x40;  // kept: its region-root mark
    m.inodes.get(inside)->flags = 0x8;
  });
  FsckReport r = ri.img.check();
  INFO(joined(r.problems));
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(r.problems.size() == 3);
  CHECK(mentions(r.problems, fmt::format("region {}: unknown flags 0x10", x)));
  CHECK(mentions(r.problems, fmt::format("directory {} (/explicit): unknown inode flags 0x40", root)));
  CHECK(mentions(r.problems, fmt::format("inode {} (/explicit/inside): unknown inode flags 0x8", inside)));
  CHECK(r.regions.size() == 3);
  FsckReport y = repair_and_recheck(ri.img);
  CHECK(mentions(y.repaired, fmt::format("region {}: unknown flags cleared", x)));
  CHECK(mentions(y.repaired, fmt::format("inode {}: unknown flags cleared", root)));
  const MetaState m = load_meta(*ri.img.mem);
  CHECK(m.regions.at(x).flags == 0);
  CHECK(m.inodes.get(root)->flags == kInodeRegionRoot);
  CHECK(m.inodes.get(inside)->flags == 0);
  auto fs = ri.img.mount();
  ri.pop.expect_files(*fs);
}

TEST_CASE("fsck: region and setting records the decoder refuses are unrecoverable", "[fsck][regions]") {
  RegionImage ri;
  const Extent area = ri.img.superblock().data_area();
  const Ino root = ino_of(*ri.img.mem, "explicit");
  std::vector<Extent> too_many;
  for (std::uint64_t i = 0; i <= kMaxRegionSlices; ++i) too_many.push_back({area.start + 2 * i, 1});
  const std::string long_name(65, 'k');
  Record bad;
  SECTION("region id 0") { bad = RegionSetRec{0, root, 0, {{area.start, 8}}}; }
  SECTION("region root 0") { bad = RegionSetRec{77, 0, 0, {{area.start, 8}}}; }
  SECTION("a slice at block 0") { bad = RegionSetRec{77, root, 0, {{0, 8}}}; }
  SECTION("an empty slice") { bad = RegionSetRec{77, root, 0, {{area.start, 0}}}; }
  SECTION("too many slices") { bad = RegionSetRec{77, root, 0, too_many}; }
  SECTION("a setting name of 65 bytes") { bad = ConfigSetRec{long_name, "1"}; }
  LoadedState st;
  std::string error;
  REQUIRE(load_state(*ri.img.mem, st, error));
  std::vector<Record> recs = records_of(st.meta);
  recs.push_back(bad);
  write_state(*ri.img.mem, recs);
  FsckReport r = ri.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(r.unrecoverable);
  CHECK(r.reason.find("checkpoint") != std::string::npos);
  CHECK(r.reason.find('\n') == std::string::npos);
  std::string why;
  CHECK_FALSE(ri.img.mounts(&why));
  FsckReport y = ri.img.repair();
  CHECK(y.exit_code == kFsckProblemsLeft);
  CHECK_FALSE(y.wrote);
}

TEST_CASE("fsck: reserved slices holding the checkpoint stream are a note", "[fsck][regions]") {
  RegionImage ri;
  const std::uint32_t x = ri.region_of("explicit");
  const Extent area = ri.img.superblock().data_area();
  // A reservation of everything not reserved by another region holds the
  // new checkpoint, wherever it lands.
  rewrite_meta(*ri.img.mem, [&](MetaState& m) {
    std::vector<Extent> others;
    for (const auto& [id, g] : m.regions)
      if (id != x) others.insert(others.end(), g.reserved.begin(), g.reserved.end());
    std::sort(others.begin(), others.end(), [](const Extent& p, const Extent& q) { return p.start < q.start; });
    std::vector<Extent> rest;
    BlockNo cur = area.start;
    for (const Extent& e : others) {
      if (e.start > cur) rest.push_back({cur, e.start - cur});
      cur = std::max(cur, e.end());
    }
    if (cur < area.end()) rest.push_back({cur, area.end() - cur});
    m.regions.at(x).reserved = rest;
  });
  FsckReport r = ri.img.check();
  INFO(joined(r.problems) << joined(r.info));
  CHECK(r.exit_code == kFsckClean);
  CHECK(r.problems.empty());
  const FsckRegion* g = find_region(r, x);
  REQUIRE(g);
  CHECK(g->checkpoint_blocks == r.checkpoint_blocks);
  CHECK(mentions(r.info, fmt::format("region {}: {} of its reserved blocks hold the checkpoint stream", x,
                                     r.checkpoint_blocks)));
  CHECK(r.reserved_blocks == r.data_blocks);
  expect_accounting_matches_mount(ri.img, r);
}

TEST_CASE("fsck: inodes of a region that does not exist are only a note", "[fsck][regions]") {
  RegionImage ri;
  const Ino f = ino_of(*ri.img.mem, "explicit/inside");
  rewrite_meta(*ri.img.mem, [&](MetaState& m) { m.inodes.get(f)->region = 4242; });
  FsckReport r = ri.img.check();
  INFO(joined(r.problems));
  CHECK(r.exit_code == kFsckClean);
  CHECK(r.stray_region_inodes == 2);  // this one and /moved
  CHECK(mentions(r.info, "2 inodes name regions that do not exist"));
  CHECK(mentions(r.info, "4242"));
  FsckReport y = ri.img.repair();
  CHECK(y.exit_code == kFsckClean);
  CHECK_FALSE(y.wrote);
  auto fs = ri.img.mount();
  CHECK(same(read_all(*fs, "explicit/inside"), pattern(50000, 44)));
}

TEST_CASE("fsck: settings a mount cannot use are removed, unknown ones kept", "[fsck][regions]") {
  RegionImage ri;
  rewrite_meta(*ri.img.mem, [&](MetaState& m) {
    m.config["cow_unit"] = "12K";            // not a power of two
    m.config["region_size"] = "lots";        // not a size
    m.config["region_patterns"] = "a//b:*";  // an empty component
    m.config["future_knob"] = "on";
  });
  FsckReport r = ri.img.check();
  INFO(joined(r.problems));
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(r.problems.size() == 3);
  CHECK(mentions(r.problems, "setting cow_unit = '12K': not a copy-on-write unit (a power of two from 4K to 1M); "
                             "no mount option stores such a value"));
  CHECK(mentions(r.problems, "setting region_size = 'lots': not a region size from 4K to 1T"));
  CHECK(mentions(r.problems, "setting region_patterns = 'a//b:*': region pattern 'a//b'"));
  CHECK(mentions(r.info, "setting 'future_knob' = 'on' is unknown to this version of dhfs: kept"));
  FsckReport y = repair_and_recheck(ri.img);
  for (const char* k : {"cow_unit", "region_size", "region_patterns"})
    CHECK(mentions(y.repaired, fmt::format("setting {} removed (the default applies)", k)));
  const MetaState m = load_meta(*ri.img.mem);
  CHECK(m.config.size() == 1);
  CHECK(m.config.count("future_knob") == 1);
  CHECK(m.regions.size() == 3);  // regions survive the repaired checkpoint
  CHECK(ri.img.check().settings == 1);
  auto fs = ri.img.mount();
  ri.pop.expect_files(*fs);
}

TEST_CASE("fsck: reference counts of shared blocks are verified and rebuilt", "[fsck][refcount]") {
  RegionImage ri;
  const MetaState orig = load_meta(*ri.img.mem);
  REQUIRE(orig.refs.shared_blocks() > 0);
  Extent first;
  std::uint32_t count = 0;
  orig.refs.for_each([&](Extent e, std::uint32_t c) {
    if (first.empty()) {
      first = e;
      count = c;
    }
  });
  REQUIRE(count == 2);
  SECTION("a count too high") {
    rewrite_meta(*ri.img.mem, [&](MetaState& m) { m.refs.set({first.start, 1}, 3); });
    FsckReport r = ri.img.check();
    CHECK(r.exit_code == kFsckProblemsLeft);
    CHECK(mentions(r.problems, fmt::format("device blocks {}: reference count 3, but 2 block maps reference them",
                                           first.start)));
  }
  SECTION("counts lost") {
    rewrite_meta(*ri.img.mem, [&](MetaState& m) { m.refs.clear(); });
    FsckReport r = ri.img.check();
    CHECK(r.exit_code == kFsckProblemsLeft);
    CHECK(mentions(r.problems, fmt::format("device blocks {}..{}: reference count 1, but 2 block maps reference them",
                                           first.start, first.end() - 1)));
  }
  SECTION("a count for blocks no file references") {
    const Extent area = ri.img.superblock().data_area();
    rewrite_meta(*ri.img.mem, [&](MetaState& m) { m.refs.set({area.end() - 8, 4}, 2); });
    FsckReport r = ri.img.check();
    CHECK(r.exit_code == kFsckProblemsLeft);
    CHECK(mentions(r.problems, "reference counts cover 4 blocks that no block map references"));
  }
  std::string why;
  CHECK_FALSE(ri.img.mounts(&why));  // mount verifies the counts too
  CHECK(why.find("run fsck.dhfs") != std::string::npos);
  FsckReport y = repair_and_recheck(ri.img);
  CHECK(mentions(y.repaired, "reference counts rebuilt from the block maps"));
  const MetaState m = load_meta(*ri.img.mem);
  CHECK(m.refs.shared_blocks() == orig.refs.shared_blocks());
  CHECK(m.refs.saved_blocks() == orig.refs.saved_blocks());
  CHECK(m.regions.size() == 3);
  CHECK(m.config.size() == 2);
  auto fs = ri.img.mount();
  ri.pop.expect_files(*fs);
  // The clone is still independent: a write to it leaves the source alone.
  const Ino clone = resolve(*fs, "docker/overlay2/bbb/diff/clone");
  REQUIRE(fs->write(clone, 0, as_bytes(std::string(4096, 'z'))) == 4096);
  CHECK(same(read_all(*fs, "docker/overlay2/aaa/diff/src"), ri.pop.tail));
}

TEST_CASE("fsck: an unrelated repair keeps regions, settings and counts", "[fsck][regions]") {
  RegionImage ri;
  const MetaState orig = load_meta(*ri.img.mem);
  const Ino base = ino_of(*ri.img.mem, "docker/overlay2/aaa/diff/base");
  rewrite_meta(*ri.img.mem, [&](MetaState& m) { m.inodes.get(base)->nlink = 5; });
  FsckReport y = repair_and_recheck(ri.img);
  CHECK(y.problems.size() == 1);
  const MetaState m = load_meta(*ri.img.mem);
  REQUIRE(m.regions.size() == orig.regions.size());
  for (const auto& [id, g] : orig.regions) {
    CHECK(m.regions.at(id).root == g.root);
    CHECK(m.regions.at(id).reserved == g.reserved);
  }
  CHECK(m.config == orig.config);
  CHECK(m.refs.shared_blocks() == orig.refs.shared_blocks());
  CHECK(m.refs.saved_blocks() == orig.refs.saved_blocks());
  auto fs = ri.img.mount();
  ri.pop.expect_files(*fs);
}

}  // namespace
}  // namespace dhfs
