// FileSystem::grow: puts more of the medium to use while mounted, as
// xfs_growfs and resize2fs do, so that a container host whose data-root
// filled up gets room by growing its volume or image file, without
// stopping dockerd.
#include <algorithm>
#include <cerrno>

#include "fs/filesystem.h"
#include "fs/log.h"
#include "fs/mkfs.h"
#include "fs/units.h"

namespace dhfs {

namespace {
// Every block a superblock can name lies below 2^50 (Superblock::decode).
constexpr std::uint64_t kMaxBlocks = 1ULL << 50;
}  // namespace

Superblock FileSystem::superblock() const {
  std::lock_guard lk(sb_mu_);
  return sb_;
}

int FileSystem::grow(std::uint64_t bytes, GrowOutcome* out) {
  if (opts_.read_only) return -EROFS;
  std::lock_guard one_at_a_time(grow_mu_);
  const Superblock now = superblock();
  out->old_bytes = out->new_bytes = now.total_blocks * kBlockSize;
  if (bytes != 0 && bytes < out->old_bytes) return -EINVAL;
  bytes -= bytes % kBlockSize;
  if (bytes / kBlockSize > kMaxBlocks) return -EFBIG;
  const int extended = dev_->extend(bytes);
  out->device_bytes = dev_->size_bytes();
  if (extended != 0) return extended;
  const std::uint64_t blocks = std::min(bytes != 0 ? bytes / kBlockSize : out->device_bytes / kBlockSize, kMaxBlocks);
  if (blocks <= now.total_blocks) return 0;

  const Superblock grown = now.grown_to(blocks);
  // The new blocks are outside the filesystem until the primary superblock
  // says otherwise, so nothing uses them yet. The backup goes first: a
  // crash before the primary is written leaves the old size (the block past
  // it is not looked at); a primary torn by the crash is found damaged, and
  // the loader then takes the backup from the end of the device, where the
  // new one is unless a size below a block device's was asked for.
  if (const int rc = preallocate_fixed_area(*dev_, grown); rc != 0 && rc != -EOPNOTSUPP) return rc;
  if (const int rc = write_superblocks(*dev_, grown); rc != 0) return rc;
  {
    std::lock_guard lk(sb_mu_);
    sb_ = grown;
  }
  total_blocks_ = grown.total_blocks;
  // Only now may anything allocate there: the old backup superblock's block
  // becomes an ordinary free block of the data area.
  alloc_->extend_area(grown.data_area().end());
  out->new_bytes = grown.total_blocks * kBlockSize;
  log::info("{}: grown from {} to {}", dev_->describe(), human_bytes(out->old_bytes), human_bytes(out->new_bytes));
  return 0;
}

}  // namespace dhfs
