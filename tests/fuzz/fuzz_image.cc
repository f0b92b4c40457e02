// libFuzzer target: a whole image. The input overwrites the metadata
// blocks of a small valid image (fuzz_support.h image_template(): the
// superblock and its backup, both root slots, the used journal blocks and
// the checkpoint stream, in device order, 4096 bytes each; a short input
// leaves the rest as it was). Then, as a mount and fsck.dhfs would:
//   1. FileSystem::open read-only (nothing may be written), and a walk of
//      the whole tree: readdir, getattr, readlink, xattrs, file contents;
//   2. fsck without repair (must not write either);
//   3. with control bit 1: fsck with repair, and after a repair that left
//      no problem, a second fsck must find the image clean and a mount
//      must succeed.
// Input: one control byte, then the blocks. Control bit 0: re-seal the
// checksums of every structure whose magic is in place (superblocks, root
// slots, journal batches from the template's replay position, checkpoint
// frames), so that the fuzzer reaches the checks behind them.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fs/filesystem.h"
#include "fs/fsck.h"
#include "fs/inode.h"
#include "tests/fuzz/fuzz_support.h"

using namespace dhfs;

namespace {

[[noreturn]] void fail(const std::string& what, const FsckReport* rep = nullptr) {
  std::fprintf(stderr, "fuzz_image: %s\n", what.c_str());
  if (rep) {
    std::fprintf(stderr, "  exit %d unrecoverable %d reason %s\n", rep->exit_code, rep->unrecoverable,
                 rep->reason.c_str());
    for (const auto& p : rep->problems) std::fprintf(stderr, "  problem: %s\n", p.c_str());
    for (const auto& p : rep->repaired) std::fprintf(stderr, "  repaired: %s\n", p.c_str());
  }
  std::abort();
}

// Visits the tree from the root as the kernel would, bounded.
void walk(FileSystem& fs) {
  int budget = 2000;
  AlignedBuffer scratch;
  std::function<void(Ino, int)> visit = [&](Ino dir, int depth) {
    if (depth > 16 || fs.opendir(dir) != 0) return;
    std::vector<std::pair<std::string, Ino>> kids;
    fs.readdir(dir, 0, false, [&](const DirListEntry& e, const Attr*) {
      if (e.name != "." && e.name != "..") kids.emplace_back(std::string(e.name), e.ino);
      return budget-- > 0;
    });
    fs.releasedir(dir);
    for (const auto& [name, ino] : kids) {
      Attr a;
      if (fs.lookup(dir, name, &a) != 0) continue;
      std::string s;
      fs.listxattr(a.ino, &s);
      if (S_ISLNK(a.mode)) fs.readlink(a.ino, &s);
      if (S_ISREG(a.mode) && fs.open(a.ino, O_RDONLY) == 0) {
        std::uint64_t limit = std::min<std::uint64_t>(a.size, 8 << 20);
        for (std::uint64_t off = 0; off < limit; off += 1 << 20) {
          std::span<const std::byte> out;
          if (fs.read(a.ino, off, 1 << 20, scratch, &out) != 0) break;
        }
        (void)fs.lseek(a.ino, 0, SEEK_DATA);
        (void)fs.lseek(a.ino, 0, SEEK_HOLE);
        fs.release(a.ino);
      }
      if (S_ISDIR(a.mode)) visit(a.ino, depth + 1);
      fs.forget(a.ino, 1);
    }
  };
  Attr root;
  if (fs.getattr(kRootIno, &root) == 0) visit(kRootIno, 0);
  (void)fs.stats();
  (void)fs.region_reports();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t ctrl = data[0];
  const fuzz::Template& t = fuzz::image_template();
  auto medium = std::make_shared<fuzz::SparseMedium>(*t.medium);
  std::size_t at = 1;
  for (std::uint64_t b : t.meta_blocks) {
    if (at >= size) break;
    std::size_t n = std::min<std::size_t>(kBlockSize, size - at);
    medium->write(b * kBlockSize, data + at, n);
    at += n;
  }
  if (ctrl & 1) {
    for (std::uint64_t b : {std::uint64_t{0}, t.sb.backup_block(), std::uint64_t{1}, std::uint64_t{2}}) {
      auto blk = medium->block(b);
      std::uint64_t magic;
      std::memcpy(&magic, blk.data(), 8);
      if (magic == kSuperMagic || magic == kRootSlotMagic) {
        fuzz::seal_block(blk);
        medium->set_block(b, blk);
      }
    }
    fuzz::seal_journal(*medium, t.sb.journal_start, t.sb.journal_blocks, t.replay_lsn);
    std::vector<std::uint8_t> stream;
    for (std::uint64_t b : t.stream_blocks) {
      auto blk = medium->block(b);
      stream.insert(stream.end(), blk.begin(), blk.end());
    }
    fuzz::seal_frames(stream);
    for (std::size_t i = 0; i < t.stream_blocks.size(); ++i)
      medium->set_block(t.stream_blocks[i], std::span<const std::uint8_t>(stream).subspan(i * kBlockSize, kBlockSize));
  }

  {  // 1. a read-only mount
    FsOptions opts;
    opts.read_only = true;
    opts.defer_start = true;
    std::string error;
    auto fs = FileSystem::open(std::make_unique<fuzz::SparseDevice>(medium, /*read_only=*/true), opts, error);
    if (fs) walk(*fs);
    else if (error.empty()) fail("mount refused without a reason");
  }
  {  // 2. fsck -n
    fuzz::SparseDevice dev(medium, /*read_only=*/true);
    Checker check(dev, FsckOptions{false});
    FsckReport rep = check.run();
    if (rep.wrote) fail("fsck -n wrote", &rep);
  }
  if (ctrl & 2) {  // 3. fsck with repair, then it must be clean
    fuzz::SparseDevice dev(medium);
    FsckReport rep = Checker(dev, FsckOptions{true}).run();
    if (rep.exit_code == kFsckClean || rep.exit_code == kFsckRepaired) {
      fuzz::SparseDevice dev2(medium, /*read_only=*/true);
      FsckReport again = Checker(dev2, FsckOptions{false}).run();
      if (again.exit_code != kFsckClean) {
        std::fprintf(stderr, "first run:\n");
        for (const auto& p : rep.problems) std::fprintf(stderr, "  problem: %s\n", p.c_str());
        for (const auto& p : rep.repaired) std::fprintf(stderr, "  repaired: %s\n", p.c_str());
        fail("fsck after a successful repair is not clean", &again);
      }
      FsOptions opts;
      opts.defer_start = true;
      std::string error;
      auto fs = FileSystem::open(std::make_unique<fuzz::SparseDevice>(medium), opts, error);
      if (!fs) fail("mount after a successful repair failed: " + error);
      walk(*fs);
    }
  }
  return 0;
}
