// FileSystem::trim and online discard: give free space of the data area
// back to the medium. A sparse image file that containers filled once keeps
// its host's space until then, however much was deleted since, and a thin
// volume or an SSD keeps the blocks mapped.
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fs/filesystem.h"
#include "fs/log.h"
#include "fs/periodic_task.h"

namespace dhfs {

namespace {
// Free space is taken out of the allocator one window at a time while it is
// discarded, so a writer can miss at most this much of it meanwhile.
constexpr std::uint64_t kTrimWindowBlocks = 16384;  // 64 MiB
// How often online discard looks for released space: frees of the same
// second coalesce, and a block freed and written again at once is not
// discarded in between.
constexpr std::chrono::milliseconds kDiscardPeriod{1000};
}  // namespace

int FileSystem::discard_free_in(Extent window, std::uint64_t min_len, std::uint64_t* discarded) {
  // Taken under trim_mu_, so that a writer that found no space while they
  // are out of the allocator knows to wait for them.
  std::vector<Extent> runs;
  {
    std::lock_guard lk(trim_mu_);
    runs = alloc_->take_for_trim(window, min_len);
    for (const Extent& run : runs) trim_held_ += run.len;
  }
  int rc = 0;
  for (const Extent& run : runs) {
    if (rc == 0) rc = dev_->discard(run.start * kBlockSize, run.len * kBlockSize);
    if (rc == 0) *discarded += run.len * kBlockSize;
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
  return rc;
}

int FileSystem::trim(std::uint64_t start, std::uint64_t len, std::uint64_t min_bytes, std::uint64_t* trimmed) {
  if (opts_.read_only) return -EROFS;
  if (const int rc = syncfs(); rc != 0) return rc;
  const Extent area = alloc_->area();
  const std::uint64_t first = std::max(start / kBlockSize, area.start);
  const std::uint64_t end_byte = len > UINT64_MAX - start ? UINT64_MAX : start + len;
  const std::uint64_t end = std::min(end_byte / kBlockSize, area.end());
  const std::uint64_t min_len = std::max<std::uint64_t>(1, (min_bytes + kBlockSize - 1) / kBlockSize);
  for (BlockNo at = first; at < end; at += kTrimWindowBlocks)
    if (const int rc = discard_free_in({at, std::min(kTrimWindowBlocks, end - at)}, min_len, trimmed); rc != 0)
      return rc;
  return 0;
}

int FileSystem::discard_released(std::uint64_t* discarded) {
  for (const Extent& e : alloc_->take_released())
    for (BlockNo at = e.start; at < e.end(); at += kTrimWindowBlocks)
      if (const int rc = discard_free_in({at, std::min(kTrimWindowBlocks, e.end() - at)}, 1, discarded); rc != 0)
        return rc;
  return 0;
}

void FileSystem::start_discarder() {
  alloc_->note_released(true);
  discarder_ = std::make_unique<PeriodicTask>(kDiscardPeriod, [this] {
    std::uint64_t discarded = 0;
    const int rc = discard_released(&discarded);
    if (rc == 0) return;
    // Said once: the medium will not change its mind while mounted.
    alloc_->note_released(false);
    log::warning("{}: online discard failed: {}; it is off until the next mount (fstrim also gives space back)",
                 dev_->describe(), std::strerror(-rc));
  });
}

}  // namespace dhfs
