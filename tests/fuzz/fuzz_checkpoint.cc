// libFuzzer target: checkpoint streams (fs/checkpoint.cc read_checkpoint,
// FrameHeader::decode) with every record applied as mount applies them
// (fs/loader.cc). The stream is laid out over two extents of a small
// device. Input: one control byte, one frame count, then the stream.
// Control bit 0: re-seal every frame checksum (fuzz_support.h) and expect
// the number of frames found that way; bits 1..3: where the stream is split
// between its two extents; bit 4: the second extent reaches past the end of
// the device.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "fs/checkpoint.h"
#include "fs/format.h"
#include "fs/loader.h"
#include "tests/fuzz/fuzz_support.h"

using namespace dhfs;

namespace {
constexpr std::uint64_t kDeviceBlocks = 80;
constexpr std::size_t kMaxStream = 64 * kBlockSize;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t ctrl = data[0], frames = data[1];
  std::vector<std::uint8_t> stream(data + 2, data + std::min(size, kMaxStream + 2));
  const std::uint64_t tag = fuzz::fuzz_uuid_tag();

  CheckpointRoot root;
  root.uuid_tag = tag;
  root.stream_bytes = stream.size();
  root.frame_count = frames;
  if (ctrl & 1) root.frame_count = fuzz::seal_frames(stream);
  const std::uint64_t blocks = (stream.size() + kBlockSize - 1) / kBlockSize;
  const std::uint64_t first = std::min<std::uint64_t>(blocks, (ctrl >> 1) & 7);
  root.extents.push_back({2, first});
  root.extents.push_back({2 + first + 3, std::max<std::uint64_t>(blocks - first, 1) + ((ctrl & 16) ? 20 : 0)});

  auto medium = std::make_shared<fuzz::SparseMedium>(kDeviceBlocks * kBlockSize);
  medium->write(2 * kBlockSize, stream.data(), std::min<std::size_t>(stream.size(), first * kBlockSize));
  if (stream.size() > first * kBlockSize)
    medium->write((2 + first + 3) * kBlockSize, stream.data() + first * kBlockSize, stream.size() - first * kBlockSize);

  fuzz::SparseDevice dev(medium, /*read_only=*/true);
  MetaState st;
  bound_to_device(st, Superblock::for_device(kMinDeviceBytes));  // as the loader does
  std::string why;
  bool ok = read_checkpoint(
      dev, root, tag,
      [&](const Record& r) {
        if (!apply_record(st, r)) {
          why = "record for a missing inode";
          return false;
        }
        return true;
      },
      why);
  if (!ok && why.empty()) {
    std::fprintf(stderr, "checkpoint refused without a reason\n");
    std::abort();
  }
  return 0;
}
