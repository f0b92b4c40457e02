#include "fs/mkfs.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fmt/format.h>

#include "alloc/allocator.h"
#include "fs/checkpoint.h"
#include "fs/inode.h"

namespace dhfs {

namespace {
std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int write_block(Device& dev, BlockNo b, const std::vector<std::uint8_t>& bytes) {
  AlignedBuffer buf(kBlockSize);
  std::memcpy(buf.data(), bytes.data(), std::min<std::size_t>(bytes.size(), kBlockSize));
  return dev.write(b * kBlockSize, buf.data(), kBlockSize);
}
}  // namespace

bool format_device(Device& dev, const FormatOptions& opts, Superblock* out, std::string& error) {
  if (dev.read_only()) {
    error = fmt::format("{}: device is read-only", dev.describe());
    return false;
  }
  if (dev.size_bytes() < kMinDeviceBytes) {
    error = fmt::format("{}: too small ({} bytes; dhfs needs at least {} MiB)", dev.describe(), dev.size_bytes(),
                        kMinDeviceBytes >> 20);
    return false;
  }
  Superblock sb = Superblock::for_device(dev.size_bytes());
  sb.uuid = make_random_uuid();
  sb.created_ns = now_ns();
  sb.label = opts.label.substr(0, 63);
  Uuid salt = make_random_uuid();
  std::memcpy(&sb.salt, salt.data(), sizeof sb.salt);

  Inode root;
  root.ino = kRootIno;
  root.generation = 1;
  root.mode = S_IFDIR | 0755;
  root.nlink = 2;
  root.atime_ns = root.mtime_ns = root.ctime_ns = root.btime_ns = sb.created_ns;

  if (const int rc = preallocate_fixed_area(dev, sb); rc != 0 && rc != -EOPNOTSUPP) {
    error = fmt::format("{}: cannot reserve the {} MiB of the journal on the filesystem that holds it: {}",
                        dev.describe(), sb.data_start * kBlockSize >> 20, std::strerror(-rc));
    return false;
  }

  if (opts.discard) (void)dev.discard(sb.data_start * kBlockSize, sb.data_blocks * kBlockSize);

  Allocator alloc(sb.data_area());
  CheckpointWriter writer(dev, alloc, sb.uuid_tag());
  CheckpointRoot root_slot;
  int rc = writer.add(root.to_record());
  if (rc == 0) rc = writer.finish(root_slot);
  if (rc != 0) {
    error = fmt::format("{}: writing the initial checkpoint failed: {}", dev.describe(), std::strerror(-rc));
    return false;
  }
  root_slot.seq = 1;
  root_slot.replay_lsn = 0;
  root_slot.next_generation = 2;
  root_slot.written_ns = sb.created_ns;

  // Old contents of the fixed area must not look valid: clear slot B and
  // the start of the journal (batches also carry this filesystem's UUID).
  std::vector<std::uint8_t> zero(kBlockSize, 0);
  rc = write_block(dev, kRootSlotBlocks[1], zero);
  if (rc == 0) rc = write_block(dev, sb.journal_start, zero);
  if (rc == 0) rc = write_block(dev, kRootSlotBlocks[0], root_slot.encode());
  if (rc == 0) rc = write_superblocks(dev, sb);
  if (rc != 0) {
    error = fmt::format("{}: write failed: {}", dev.describe(), std::strerror(-rc));
    return false;
  }
  if (out) *out = sb;
  return true;
}

int write_superblocks(Device& dev, const Superblock& sb) {
  const std::vector<std::uint8_t> bytes = sb.encode();
  int rc = write_block(dev, sb.backup_block(), bytes);
  if (rc == 0) rc = dev.flush();
  if (rc == 0) rc = write_block(dev, kSuperBlock, bytes);
  return rc != 0 ? rc : dev.flush();
}

int preallocate_fixed_area(Device& dev, const Superblock& sb) {
  const int rc = dev.preallocate(0, sb.data_start * kBlockSize);
  return rc != 0 ? rc : dev.preallocate(sb.backup_block() * kBlockSize, kBlockSize);
}

}  // namespace dhfs
