#include "tests/fuzz/fuzz_support.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "fs/checkpoint.h"
#include "fs/filesystem.h"
#include "fs/journal.h"
#include "fs/mkfs.h"

namespace dhfs::fuzz {

// ------------------------------------------------------------ sparse medium

SparseMedium::SparseMedium(const SparseMedium& o) : bytes_(o.bytes_) {
  std::lock_guard lk(o.mu_);
  blocks_ = o.blocks_;
}

bool SparseMedium::present(std::uint64_t b) const {
  std::lock_guard lk(mu_);
  return blocks_.count(b) != 0;
}

std::vector<std::uint8_t> SparseMedium::block(std::uint64_t b) const {
  std::vector<std::uint8_t> out(kBlockSize, 0);
  read(b * kBlockSize, out.data(), kBlockSize);
  return out;
}

void SparseMedium::set_block(std::uint64_t b, std::span<const std::uint8_t> bytes) {
  std::vector<std::uint8_t> blk(kBlockSize, 0);
  std::memcpy(blk.data(), bytes.data(), std::min<std::size_t>(bytes.size(), kBlockSize));
  write(b * kBlockSize, blk.data(), kBlockSize);
}

void SparseMedium::read(std::uint64_t off, std::uint8_t* out, std::size_t len) const {
  std::lock_guard lk(mu_);
  while (len > 0) {
    std::uint64_t b = off / kBlockSize, in = off % kBlockSize;
    std::size_t n = std::min<std::size_t>(len, kBlockSize - in);
    auto it = blocks_.find(b);
    if (it == blocks_.end() || off >= bytes_) std::memset(out, 0, n);
    else std::memcpy(out, it->second.data() + in, n);
    off += n;
    out += n;
    len -= n;
  }
}

void SparseMedium::write(std::uint64_t off, const std::uint8_t* in, std::size_t len) {
  std::lock_guard lk(mu_);
  while (len > 0) {
    std::uint64_t b = off / kBlockSize, at = off % kBlockSize;
    std::size_t n = std::min<std::size_t>(len, kBlockSize - at);
    if (off < bytes_) {
      auto& blk = blocks_[b];
      if (blk.empty()) blk.assign(kBlockSize, 0);
      std::memcpy(blk.data() + at, in, n);
    }
    off += n;
    in += n;
    len -= n;
  }
}

int SparseMedium::submit(std::span<const DeviceIo> ios) {
  for (const DeviceIo& io : ios) {
    if (io.offset % kBlockSize || io.len % kBlockSize) std::abort();  // a caller broke the Device contract
    if (io.offset > bytes_ || bytes_ - io.offset < io.len) return -EIO;
    if (io.op == DeviceIo::Op::Read) read(io.offset, static_cast<std::uint8_t*>(io.buf), io.len);
    else write(io.offset, static_cast<const std::uint8_t*>(io.buf), io.len);
  }
  return 0;
}

int SparseDevice::submit(std::span<const DeviceIo> ios) {
  if (ro_)
    for (const DeviceIo& io : ios)
      if (io.op == DeviceIo::Op::Write) std::abort();  // a read-only user wrote
  return m_->submit(ios);
}

// ------------------------------------------------------------ re-sealing

void seal_block(std::span<std::uint8_t> block) {
  if (block.size() < kBlockSize) return;
  std::uint64_t sum = checksum(block.first(kBlockSize - 8));
  std::memcpy(block.data() + kBlockSize - 8, &sum, 8);
}

std::uint64_t seal_frames(std::span<std::uint8_t> stream) {
  std::uint64_t frames = 0;
  std::size_t pos = 0;
  while (stream.size() - pos >= FrameHeader::kSize) {
    std::string why;
    auto h = FrameHeader::decode(stream.subspan(pos, FrameHeader::kSize), why);
    if (!h || stream.size() - pos - FrameHeader::kSize < h->payload_len) break;
    h->payload_checksum = checksum(stream.subspan(pos + FrameHeader::kSize, h->payload_len), h->seed());
    h->encode_into(stream.data() + pos);
    pos += FrameHeader::kSize + h->payload_len;
    ++frames;
  }
  return frames;
}

std::uint64_t seal_journal(SparseMedium& m, BlockNo start, std::uint64_t blocks, std::uint64_t from_lsn) {
  const std::uint64_t cap = blocks * kBlockSize;
  if (cap == 0) return 0;
  auto ring_read = [&](std::uint64_t lsn, std::uint8_t* out, std::uint64_t len) {
    for (std::uint64_t i = 0; i < len;) {
      std::uint64_t pos = (lsn + i) % cap, n = std::min(len - i, cap - pos);
      m.read(start * kBlockSize + pos, out + i, n);
      i += n;
    }
  };
  auto ring_write = [&](std::uint64_t lsn, const std::uint8_t* in, std::uint64_t len) {
    for (std::uint64_t i = 0; i < len;) {
      std::uint64_t pos = (lsn + i) % cap, n = std::min(len - i, cap - pos);
      m.write(start * kBlockSize + pos, in + i, n);
      i += n;
    }
  };
  std::uint64_t batches = 0;
  for (std::uint64_t lsn = from_lsn; lsn - from_lsn < cap;) {
    std::uint8_t head[BatchHeader::kSize];
    ring_read(lsn, head, sizeof head);
    std::uint64_t magic;
    std::memcpy(&magic, head, 8);
    if (magic != kBatchMagic) break;
    BatchHeader h;
    std::memcpy(&h.uuid_tag, head + 8, 8);
    std::memcpy(&h.lsn, head + 16, 8);
    std::memcpy(&h.first_seq, head + 24, 8);
    std::memcpy(&h.txn_count, head + 32, 4);
    std::memcpy(&h.payload_len, head + 36, 4);
    if (BatchHeader::kSize + std::uint64_t{h.payload_len} > cap) break;
    std::vector<std::uint8_t> payload(h.payload_len);
    ring_read(lsn + BatchHeader::kSize, payload.data(), payload.size());
    h.payload_checksum = checksum(payload, h.lsn);
    h.encode_into(head);
    ring_write(lsn, head, sizeof head);
    ++batches;
    lsn += h.padded_bytes();
  }
  return batches;
}

// ------------------------------------------------------------ the template

namespace {

void must(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz template: %s failed\n", what);
    std::abort();
  }
}

std::span<const std::byte> bytes_of(std::string_view s) { return {reinterpret_cast<const std::byte*>(s.data()), s.size()}; }

Ino make_file(FileSystem& fs, Ino parent, const char* name, std::string_view content, std::uint64_t off = 0) {
  Attr a;
  must(fs.create(parent, name, S_IFREG | 0644, O_RDWR | O_CREAT, {0, 0}, &a) == 0, name);
  if (!content.empty()) must(fs.write(a.ino, off, bytes_of(content)) == static_cast<ssize_t>(content.size()), name);
  fs.release(a.ino);
  return a.ino;
}

Template build_template() {
  Template t;
  t.medium = std::make_shared<SparseMedium>(kMinDeviceBytes);
  std::string error;
  {
    SparseDevice dev(t.medium);
    must(format_device(dev, FormatOptions{"fuzz"}, &t.sb, error), "format");
  }
  FsOptions opts;
  opts.checkpoint_interval = std::chrono::seconds(100000);
  opts.commit_interval = std::chrono::milliseconds(100000);
  auto fs = FileSystem::open(std::make_unique<SparseDevice>(t.medium), opts, error);
  must(fs != nullptr, "open");
  const Cred root{0, 0};
  Attr d, sub, l;
  must(fs->mkdir(kRootIno, "dir", 0755, root, &d) == 0, "mkdir");
  must(fs->mkdir(d.ino, "sub", 0700, root, &sub) == 0, "mkdir sub");
  std::string text(20000, 'x');
  for (std::size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>('a' + (i * 7 + i / 13) % 26);
  Ino a = make_file(*fs, d.ino, "a", text);
  Ino sparse = make_file(*fs, kRootIno, "sparse", "tail", 5 << 20);
  must(fs->fallocate(sparse, FALLOC_FL_KEEP_SIZE, 1 << 20, 3 * kBlockSize) == 0, "fallocate");
  Ino b = make_file(*fs, sub.ino, "b", "");
  must(fs->open(b, O_RDWR) == 0, "open b");
  must(fs->copy_file_range(a, 0, b, 0, 16384) == 16384, "clone");
  fs->release(b);
  must(fs->symlink(kRootIno, "link", "dir/a", root, &l) == 0, "symlink");
  must(fs->link(a, kRootIno, "hard", &l) == 0, "link");
  must(fs->setxattr(a, "user.k", "value", 0) == 0, "setxattr");
  must(fs->mknod(kRootIno, "fifo", S_IFIFO | 0600, 0, root, &l) == 0, "mknod");
  Attr r;
  must(fs->mkdir(kRootIno, "region", 0755, root, &r) == 0, "mkdir region");
  must(fs->create_region(r.ino, 1 << 20) == 0, "create_region");
  make_file(*fs, r.ino, "in-region", text.substr(0, 9000));
  must(fs->checkpoint() == 0, "checkpoint");
  // Changes after the checkpoint live only in the journal.
  Ino c = make_file(*fs, kRootIno, "c", text.substr(100, 5000));
  must(fs->rename(kRootIno, "c", d.ino, "c2", 0, root) == 0, "rename");
  must(fs->unlink(kRootIno, "hard") == 0, "unlink");
  must(fs->setxattr(c, "user.j", std::string(300, 'j'), 0) == 0, "setxattr 2");
  must(fs->open(b, O_RDWR) == 0, "open b");
  must(fs->write(b, 4096, bytes_of("overwritten")) == 11, "cow write");
  fs->release(b);
  must(fs->syncfs() == 0, "syncfs");
  // The crash state: a copy now, before shutdown writes a last checkpoint.
  auto crash = std::make_shared<SparseMedium>(*t.medium);
  fs.reset();
  t.medium = crash;

  Superblock sb;
  {
    std::string why;
    auto blk = t.medium->block(0);
    auto s = Superblock::decode(blk, why);
    must(s.has_value(), "template superblock");
    sb = *s;
  }
  std::optional<CheckpointRoot> best;
  for (BlockNo slot : kRootSlotBlocks) {
    std::string why;
    auto blk = t.medium->block(slot);
    auto root = CheckpointRoot::decode(blk, sb.uuid_tag(), why);
    if (root && (!best || root->seq > best->seq)) best = root;
  }
  must(best.has_value(), "template root");
  t.replay_lsn = best->replay_lsn;
  std::uint64_t left = (best->stream_bytes + kBlockSize - 1) / kBlockSize;
  for (const Extent& e : best->extents)
    for (std::uint64_t i = 0; i < e.len && left > 0; ++i, --left) t.stream_blocks.push_back(e.start + i);
  t.meta_blocks = {0, 1, 2};
  for (BlockNo b2 = sb.journal_start; b2 < sb.journal_start + sb.journal_blocks; ++b2)
    if (t.medium->present(b2)) t.meta_blocks.push_back(b2);
  for (BlockNo b2 : t.stream_blocks) t.meta_blocks.push_back(b2);
  t.meta_blocks.push_back(sb.backup_block());
  std::sort(t.meta_blocks.begin(), t.meta_blocks.end());
  t.meta_blocks.erase(std::unique(t.meta_blocks.begin(), t.meta_blocks.end()), t.meta_blocks.end());
  t.sb = sb;
  return t;
}

}  // namespace

const Template& image_template() {
  static const Template t = build_template();
  return t;
}

std::uint64_t fuzz_uuid_tag() { return 0x66757a7a74616721ULL; }

}  // namespace dhfs::fuzz
