// libFuzzer target: journal replay (fs/journal.cc Journal::replay and
// BatchHeader::decode) over a 16-block ring, with the records of every
// replayed batch decoded and applied as mount does (fs/loader.cc).
// Input: two control bytes, then the ring's bytes. Control byte 0, bit 0:
// re-seal the checksums of every batch found from the replay position
// (fuzz_support.h), so that replay goes past them; bit 1: fsck's
// stop-at-damage mode. Control byte 1: the replay position (block in the
// ring and lap).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "fs/journal.h"
#include "fs/format.h"
#include "fs/loader.h"
#include "fs/records.h"
#include "tests/fuzz/fuzz_support.h"

using namespace dhfs;

namespace {
constexpr std::uint64_t kRingBlocks = 16;
constexpr BlockNo kRingStart = 1;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t ctrl = data[0], pos = data[1];
  data += 2;
  size -= 2;
  auto medium = std::make_shared<fuzz::SparseMedium>((kRingStart + kRingBlocks + 1) * kBlockSize);
  medium->write(kRingStart * kBlockSize, data, std::min<std::size_t>(size, kRingBlocks * kBlockSize));
  const JournalGeometry geo{kRingStart, kRingBlocks, fuzz::fuzz_uuid_tag()};
  const std::uint64_t from = ((pos >> 4) * kRingBlocks + (pos & 15)) * kBlockSize;
  if (ctrl & 1) fuzz::seal_journal(*medium, kRingStart, kRingBlocks, from);

  fuzz::SparseDevice dev(medium, /*read_only=*/true);
  MetaState st;
  bound_to_device(st, Superblock::for_device(kMinDeviceBytes));  // as the loader does
  ReplayStats stats;
  std::string why;
  bool ok = Journal::replay(
      dev, geo, from,
      [&](std::span<const std::uint8_t> payload) {
        if (payload.size() > max_batch_bytes(geo.capacity())) std::abort();
        return decode_records(
            payload,
            [&](const Record& r) {
              apply_record(st, r);
              return true;
            },
            why);
      },
      stats, why, (ctrl & 2) ? ReplayMode::kStopAtDamage : ReplayMode::kStrict);
  if (!ok && why.empty()) {
    std::fprintf(stderr, "replay failed without a reason\n");
    std::abort();
  }
  if (ok) {
    if (stats.end_lsn < from || stats.end_lsn % kBlockSize != 0 ||
        stats.end_lsn - from > geo.capacity() + max_batch_bytes(geo.capacity())) {
      std::fprintf(stderr, "replay ended at an impossible position %llu (from %llu)\n",
                   static_cast<unsigned long long>(stats.end_lsn), static_cast<unsigned long long>(from));
      std::abort();
    }
  }
  return 0;
}
