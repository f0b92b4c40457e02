// libFuzzer target: the fixed one-block structures of fs/format.cc, the
// superblock (Superblock::decode, check_geometry) and the checkpoint root
// slot (CheckpointRoot::decode). Input: one control byte, then the block.
// Control bit 0: put the magic in place and re-seal the checksum, so that
// the field checks behind them are reached; bit 1: decode as a root slot
// instead of a superblock. A structure that decodes must survive
// encode/decode unchanged.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fs/format.h"
#include "tests/fuzz/fuzz_support.h"

using namespace dhfs;

namespace {
[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "%s\n", what);
  std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t ctrl = data[0];
  // The block as read from the device (a short input leaves zeros), and
  // the input as it is (decoders must also cope with short spans).
  std::vector<std::uint8_t> raw(data + 1, data + size);
  std::vector<std::uint8_t> block(kBlockSize, 0);
  if (!raw.empty()) std::memcpy(block.data(), raw.data(), std::min(raw.size(), block.size()));
  const bool root_slot = ctrl & 2;
  if (ctrl & 1) {
    std::uint64_t magic = root_slot ? kRootSlotMagic : kSuperMagic;
    std::memcpy(block.data(), &magic, 8);
    fuzz::seal_block(block);
  }
  std::string why;
  if (!root_slot) {
    (void)Superblock::decode(raw, why);
    auto sb = Superblock::decode(block, why);
    if (!sb) {
      if (why.empty()) fail("superblock refused without a reason");
      return 0;
    }
    std::string why2;
    (void)sb->check_geometry(std::uint64_t{ctrl} << 20, why2);
    (void)sb->check_geometry(sb->total_blocks * kBlockSize, why2);
    (void)sb->uuid_tag();
    auto enc = sb->encode();
    auto again = Superblock::decode(enc, why2);
    if (!again || again->encode() != enc) fail("superblock does not survive encode/decode");
    if (sb->data_start + sb->data_blocks != sb->backup_block() || sb->journal_start + sb->journal_blocks != sb->data_start)
      fail("accepted superblock with overlapping areas");
  } else {
    // The slot's own tag field, so that the checks after it are reached.
    std::uint64_t tag;
    std::memcpy(&tag, block.data() + 16, 8);
    (void)CheckpointRoot::decode(raw, tag, why);
    auto root = CheckpointRoot::decode(block, tag, why);
    if (!root) {
      if (why.empty()) fail("root slot refused without a reason");
      return 0;
    }
    std::string why2;
    auto enc = root->encode();
    auto again = CheckpointRoot::decode(enc, tag, why2);
    if (!again || again->encode() != enc) fail("root slot does not survive encode/decode");
    if (root->extents.size() > CheckpointRoot::kMaxExtents) fail("accepted too many extents");
  }
  return 0;
}
