// Inputs found by the fuzz targets of tests/fuzz/ that once crashed a parser
// or the loader, kept here (inline, a few bytes each) so that they stay
// fixed in every build, not only in the clang fuzz build.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fs/format.h"
#include "fs/loader.h"
#include "fs/records.h"

namespace dhfs {
namespace {

std::vector<std::uint8_t> from_hex(std::string_view hex) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

// Decodes `bytes` and applies every record; returns how many applied.
int apply_all(MetaState& st, const std::vector<std::uint8_t>& bytes) {
  std::string why;
  int applied = 0;
  bool ok = decode_records(
      bytes,
      [&](const Record& r) {
        if (apply_record(st, r)) ++applied;
        return true;
      },
      why);
  REQUIRE(ok);
  return applied;
}

}  // namespace

TEST_CASE("fuzz regression: an inode record with number 2^32 is refused, not a 32 GiB inode table",
          "[fuzz][loader]") {
  // fuzz_records crash-a2455406: a well-formed directory inode record whose
  // number (2^32, within kMaxIno) made apply_record resize the inode table
  // to 2^32 slots (out of memory).
  const auto bytes = from_hex(
      "0154000000" "0000000001000000" "0000000000000000" "ed410000" "00000000" "00000000" "03000000"
      "00000000" "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000000"
      "0000000000000000" "00000000" "00000000");
  REQUIRE(bytes.size() == 89);
  MetaState st;
  bound_to_device(st, Superblock::for_device(kMinDeviceBytes));
  CHECK(apply_all(st, bytes) == 0);
  CHECK(st.inodes.end() <= 2);
  CHECK(st.inodes.count() == 0);
}

TEST_CASE("max_inode_number: what the device can describe, never beyond kMaxIno", "[fuzz][loader]") {
  const Superblock small = Superblock::for_device(kMinDeviceBytes);
  CHECK(max_inode_number(small) == kMinDeviceBytes / 89);
  // A valid inode at the bound still applies.
  MetaState st;
  st.max_ino = max_inode_number(small);
  InodeRec at;
  at.ino = st.max_ino;
  at.mode = 0100644;
  at.nlink = 1;
  CHECK(apply_record(st, at));
  InodeRec beyond = at;
  beyond.ino = st.max_ino + 1;
  CHECK_FALSE(apply_record(st, beyond));
  Superblock huge = Superblock::for_device(1ULL << 50);
  CHECK(max_inode_number(huge) == kMaxIno);
}

TEST_CASE("fuzz regression: an extent record mapping 2^50 blocks is refused, not split into 2^18 extents",
          "[fuzz][loader]") {
  // fuzz_records: a checksum-valid payload of 4 KiB (one inode record and a
  // hundred extent records like this one) took over 2 GiB and a minute to
  // apply. Record: type 5, length 36, ino 5, lblk 0, len 2^50, pblk 1.
  const auto inode = from_hex(
      "0154000000" "0500000000000000" "0100000000000000" "a4810000" "00000000" "00000000" "01000000"
      "00000000" "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000000"
      "0000000000000000" "00000000" "00000000");
  const auto extent = from_hex("0524000000" "0500000000000000" "0000000000000000" "0000000000000400"
                               "0100000000000000" "00000000");
  REQUIRE(extent.size() == 41);
  const Superblock sb = Superblock::for_device(kMinDeviceBytes);
  MetaState st;
  bound_to_device(st, sb);
  CHECK(apply_all(st, inode) == 1);
  CHECK(apply_all(st, extent) == 0);
  REQUIRE(st.inodes.get(5) != nullptr);
  CHECK(st.inodes.get(5)->map()->extent_count() == 0);
  // The longest mapping the device allows still applies (as one extent).
  ExtentSetRec whole{5, 0, sb.total_blocks, 1, 0};
  CHECK(apply_record(st, whole));
  CHECK(st.inodes.get(5)->map()->extent_count() == 1);
}

}  // namespace dhfs
