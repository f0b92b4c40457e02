// Writes the seed corpus of every fuzz target (valid structures, built by
// the encoders of fs/ and by the core API) into DIR/<target>/. Run by the
// build; nothing binary is kept in the repository.
//   make_seeds DIR
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "fs/format.h"
#include "fs/journal.h"
#include "fs/records.h"
#include "tests/fuzz/fuzz_support.h"

using namespace dhfs;
using Bytes = std::vector<std::uint8_t>;

namespace {

std::string g_dir;

void put(const std::string& target, const std::string& name, const Bytes& b) {
  std::string d = g_dir + "/" + target;
  ::mkdir(g_dir.c_str(), 0755);
  ::mkdir(d.c_str(), 0755);
  std::ofstream f(d + "/" + name, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (!f) {
    std::fprintf(stderr, "make_seeds: cannot write %s/%s\n", d.c_str(), name.c_str());
    std::exit(1);
  }
}

Bytes cat(std::initializer_list<std::uint8_t> head, const Bytes& body) {
  Bytes out(head);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

// A small, consistent set of records: root, a directory, a file with two
// extents (one unwritten), a symlink, xattrs, a shared range, a region, a
// setting.
Bytes sample_records(int variant) {
  Bytes out;
  RecordWriter w(out);
  w.add(InodeRec{.ino = 1, .generation = 1, .mode = S_IFDIR | 0755, .nlink = 3});
  w.add(InodeRec{.ino = 2, .generation = 2, .mode = S_IFDIR | 0700, .nlink = 2, .flags = 1, .region = 1});
  w.add(InodeRec{.ino = 3, .generation = 3, .mode = S_IFREG | 0644, .nlink = 2, .size = 40000});
  w.add(InodeRec{.ino = 4, .generation = 4, .mode = S_IFLNK | 0777, .nlink = 1, .size = 5, .symlink = "d/f.x"});
  w.add(DirentSetRec{1, 2, 4, "d"});
  w.add(DirentSetRec{2, 3, 8, "f"});
  w.add(DirentSetRec{1, 3, 8, "hard"});
  w.add(DirentSetRec{1, 4, 10, "sym"});
  w.add(ExtentSetRec{3, 0, 4, 5000, 0});
  w.add(ExtentSetRec{3, 6, 3, 6000, kExtentUnwritten});
  w.add(XattrSetRec{3, "user.a", "value"});
  w.add(RefcountSetRec{5000, 2, 2});
  w.add(RegionSetRec{1, 2, 0, {{7000, 256}}});
  w.add(ConfigSetRec{"cow_unit", "65536"});
  if (variant > 0) {
    w.add(DirentDelRec{1, "hard"});
    w.add(XattrDelRec{3, "user.a"});
    w.add(ExtentSetRec{3, 2, 5, 0, 0});
    w.add(RegionDelRec{1});
    w.add(InodeFreeRec{4});
  }
  return out;
}

void seeds_records() {
  put("records", "state", sample_records(0));
  put("records", "changes", sample_records(1));
}

void seeds_superblock() {
  Superblock sb = Superblock::for_device(256ULL << 20);
  sb.uuid = make_random_uuid();
  sb.salt = 42;
  sb.label = "seed";
  auto enc = sb.encode();
  put("superblock", "superblock", cat({0}, Bytes(enc.begin(), enc.end())));
  put("superblock", "superblock-resealed", cat({1}, Bytes(enc.begin(), enc.end())));
  // Grown past the journal's sizing rule: JOURNAL_FIXED and its own checks.
  auto grown = sb.grown_to((3ULL << 30) / kBlockSize).encode();
  put("superblock", "superblock-grown", cat({0}, Bytes(grown.begin(), grown.end())));
  CheckpointRoot root;
  root.seq = 7;
  root.uuid_tag = sb.uuid_tag();
  root.replay_lsn = 8 * kBlockSize;
  root.stream_bytes = 5000;
  root.frame_count = 1;
  root.extents = {{4200, 1}, {4300, 2}};
  auto r = root.encode();
  put("superblock", "root-slot", cat({2}, Bytes(r.begin(), r.end())));
  put("superblock", "root-slot-resealed", cat({3}, Bytes(r.begin(), r.end())));
}

// A 16-block ring holding `batches` batches from position 0.
Bytes ring(int batches) {
  Bytes out(16 * kBlockSize, 0);
  std::uint64_t lsn = 0;
  for (int i = 0; i < batches; ++i) {
    Bytes payload = sample_records(i % 2);
    BatchHeader h;
    h.uuid_tag = fuzz::fuzz_uuid_tag();
    h.lsn = lsn;
    h.first_seq = 1 + i;
    h.txn_count = 1;
    h.payload_len = static_cast<std::uint32_t>(payload.size());
    h.payload_checksum = checksum(payload, lsn);
    h.encode_into(out.data() + lsn);
    std::memcpy(out.data() + lsn + BatchHeader::kSize, payload.data(), payload.size());
    lsn += h.padded_bytes();
  }
  out.resize(lsn + kBlockSize);  // and one empty block: the end of the log
  return out;
}

void seeds_journal() {
  put("journal", "three-batches", cat({0, 0}, ring(3)));
  put("journal", "three-batches-resealed", cat({1, 0}, ring(3)));
  put("journal", "one-batch-stop-at-damage", cat({3, 0}, ring(1)));
}

Bytes frames(int count) {
  Bytes out;
  for (int i = 0; i < count; ++i) {
    Bytes payload = sample_records(i % 2);
    FrameHeader h;
    h.uuid_tag = fuzz::fuzz_uuid_tag();
    h.index = static_cast<std::uint64_t>(i);
    h.payload_len = static_cast<std::uint32_t>(payload.size());
    h.record_count = i % 2 ? 19 : 14;
    h.payload_checksum = checksum(payload, h.seed());
    std::size_t at = out.size();
    out.resize(at + FrameHeader::kSize);
    h.encode_into(out.data() + at);
    out.insert(out.end(), payload.begin(), payload.end());
  }
  return out;
}

void seeds_checkpoint() {
  put("checkpoint", "one-frame", cat({0, 1}, frames(1)));
  put("checkpoint", "two-frames-resealed", cat({1 | (1 << 1), 2}, frames(2)));
}

void seeds_ops() {
  Bytes ops;
  for (int i = 0; i < 600; ++i) ops.push_back(static_cast<std::uint8_t>((i * 37 + i / 7) & 0xff));
  put("extent_map", "mixed", ops);
  put("directory", "mixed", ops);
}

void seeds_image() {
  const fuzz::Template& t = fuzz::image_template();
  Bytes blocks;
  for (std::uint64_t b : t.meta_blocks) {
    auto blk = t.medium->block(b);
    blocks.insert(blocks.end(), blk.begin(), blk.end());
  }
  put("image", "template", cat({0}, blocks));
  put("image", "template-resealed", cat({1}, blocks));
  put("image", "template-repair", cat({3}, blocks));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds DIR\n");
    return 2;
  }
  g_dir = argv[1];
  seeds_records();
  seeds_superblock();
  seeds_journal();
  seeds_checkpoint();
  seeds_ops();
  seeds_image();
  return 0;
}
