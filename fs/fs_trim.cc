// FileSystem::trim: gives the free space of the data area back to the
// medium (fstrim). A sparse image file that containers filled once keeps
// its host's space until then, however much was deleted since.
#include <algorithm>
#include <cerrno>

#include "fs/filesystem.h"

namespace dhfs {

namespace {
// Free space is taken out of the allocator one window at a time while it is
// discarded, so a writer can miss at most this much of it meanwhile.
constexpr std::uint64_t kTrimWindowBlocks = 16384;  // 64 MiB
}  // namespace

int FileSystem::trim(std::uint64_t start, std::uint64_t len, std::uint64_t min_bytes, std::uint64_t* trimmed) {
  if (opts_.read_only) return -EROFS;
  if (const int rc = syncfs(); rc != 0) return rc;
  const Extent area = alloc_->area();
  const std::uint64_t first = std::max(start / kBlockSize, area.start);
  const std::uint64_t end_byte = len > UINT64_MAX - start ? UINT64_MAX : start + len;
  const std::uint64_t end = std::min(end_byte / kBlockSize, area.end());
  const std::uint64_t min_len = std::max<std::uint64_t>(1, (min_bytes + kBlockSize - 1) / kBlockSize);
  for (BlockNo at = first; at < end; at += kTrimWindowBlocks) {
    const Extent window{at, std::min(kTrimWindowBlocks, end - at)};
    // Taken under trim_mu_, so that a writer that found no space while
    // they are out of the allocator knows to wait for them.
    std::vector<Extent> runs;
    {
      std::lock_guard lk(trim_mu_);
      runs = alloc_->take_for_trim(window, min_len);
      for (const Extent& run : runs) trim_held_ += run.len;
    }
    int rc = 0;
    for (const Extent& run : runs) {
      if (rc == 0) rc = dev_->discard(run.start * kBlockSize, run.len * kBlockSize);
      if (rc == 0) *trimmed += run.len * kBlockSize;
    }
    {
      std::lock_guard lk(trim_mu_);
      for (const Extent& run : runs) {
        alloc_->free_now(run);
        trim_held_ -= run.len;
      }
      ++trim_given_back_;
    }
    trim_cv_.notify_all();
    if (rc != 0) return rc;
  }
  return 0;
}

}  // namespace dhfs
