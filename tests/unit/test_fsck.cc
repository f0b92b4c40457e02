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
    bool backup;
    std::string error;
    REQUIRE(read_superblock(*mem, sb, backup, error));
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
    if (in.map)
      for (const FileExtent& e : in.map->extents()) out.push_back(ExtentSetRec{in.ino, e.lblk, e.len, e.pblk, e.flags});
    if (in.xattrs)
      for (const auto& [name, value] : *in.xattrs) out.push_back(XattrSetRec{in.ino, name, value});
    if (in.dir) in.dir->for_each([&](const DirEntry& d) { out.push_back(DirentSetRec{in.ino, d.ino, d.dtype, d.name}); });
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
  write_state(mem, records_of(st.inodes), extra_root_extents);
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
    auto e = st.inodes.get(cur)->dir->lookup(path.substr(pos, slash - pos));
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
  const std::uint64_t data_blocks = 1 + 75 + (2 + 2 + 1) + 16;  // small, big, sparse, prealloc
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
  rewrite_state(*p.img.mem, [](InodeTable& t) { t.get(kRootIno)->dir->add("ghost", 4242, DT_REG); });
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
  rewrite_state(*p.img.mem, [&](InodeTable& t) { t.get(kRootIno)->dir->replace("hardlink", small, DT_DIR); });
  FsckReport r = p.img.check();
  CHECK(r.exit_code == kFsckProblemsLeft);
  CHECK(mentions(r.problems, "entry 'hardlink'"));
  repair_and_recheck(p.img);
  LoadedState st;
  std::string error;
  REQUIRE(load_state(*p.img.mem, st, error));
  CHECK(st.inodes.get(kRootIno)->dir->lookup("hardlink")->dtype == DT_REG);
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
    auto e = t.get(big)->map->find(10);
    REQUIRE(e);
    shared = e->pblk + (10 - e->lblk);
    t.get(sparse)->map->set(0, 2, shared, 0);
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
    first = st.inodes.get(big)->map->find(0)->pblk;
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
    t.get(big)->map->set(2, 3, sb.total_blocks + 100, 0);  // beyond the device
    t.get(sparse)->map->set(1000, 1, sb.journal_start + 5, 0);   // inside the journal
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

TEST_CASE("fsck: records the decoder refuses make the checkpoint unrecoverable", "[fsck]") {
  Populated p;
  const Ino big = ino_of(*p.img.mem, "big"), fifo = ino_of(*p.img.mem, "fifo");
  SECTION("unknown extent flags") {
    rewrite_state(*p.img.mem, [&](InodeTable& t) {
      auto e = *t.get(big)->map->find(0);
      t.get(big)->map->set(0, 1, e.pblk, 0x80);
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
    rewrite_state(*p.img.mem, [&](InodeTable& t) { t.get(kRootIno)->dir->remove("big"); });
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
      t.get(kRootIno)->dir->remove("dir");
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
      t.get(kRootIno)->dir->remove("dir");
      t.get(kRootIno)->nlink = 2;
      t.get(sub)->dir->add("loop", dir, DT_DIR);  // dir -> sub -> dir
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
    rewrite_state(*img.mem, [&](InodeTable& t) { t.get(kRootIno)->dir->remove("f"); });
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
    rewrite_state(*p.img.mem, [&](InodeTable& t) { t.get(kRootIno)->dir->remove("big"); });
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
    t.get(deeper)->dir->add("again", dir, DT_DIR);  // a cycle: dir/sub/deeper/again is dir
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
    t.get(kRootIno)->dir->remove("big");
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
  rewrite_state(*p.img.mem, [&](InodeTable& t) { t.get(sym)->target->clear(); });
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

}  // namespace
}  // namespace dhfs
