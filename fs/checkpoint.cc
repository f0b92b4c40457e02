#include "fs/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>

namespace dhfs {

namespace {
constexpr std::size_t kFrameBytes = 1 << 20;    // frame payload target
constexpr std::size_t kWriteBytes = 8 << 20;    // write out in pieces this large
// 1 MiB: keeps the extent list short. The allocator keeps its metadata
// reserve in runs at least this long (Allocator::take).
constexpr std::uint64_t kMinChunkBlocks = FreeSpace::kLongRun;
}  // namespace

CheckpointWriter::CheckpointWriter(Device& dev, Allocator& alloc, std::uint64_t uuid_tag)
    : dev_(dev), alloc_(alloc), uuid_tag_(uuid_tag) {}

CheckpointWriter::~CheckpointWriter() {
  if (!finished_)
    for (const Extent& e : extents_) alloc_.free_now(e);
}

int CheckpointWriter::add(const Record& r) {
  if (error_) return error_;
  RecordWriter w(frame_);
  w.add(r);
  ++frame_records_;
  if (frame_.size() >= kFrameBytes) return seal_frame();
  return 0;
}

int CheckpointWriter::add_encoded(std::span<const std::uint8_t> records, std::uint32_t count) {
  if (error_) return error_;
  frame_.insert(frame_.end(), records.begin(), records.end());
  frame_records_ += count;
  if (frame_.size() >= kFrameBytes) return seal_frame();
  return 0;
}

int CheckpointWriter::seal_frame() {
  if (frame_records_ == 0) return 0;
  FrameHeader h;
  h.uuid_tag = uuid_tag_;
  h.index = frames_++;
  h.payload_len = static_cast<std::uint32_t>(frame_.size());
  h.record_count = frame_records_;
  h.payload_checksum = checksum(frame_, h.seed());
  std::size_t at = out_.size();
  out_.resize(at + FrameHeader::kSize);
  h.encode_into(out_.data() + at);
  out_.insert(out_.end(), frame_.begin(), frame_.end());
  frame_.clear();
  frame_records_ = 0;
  if (out_.size() >= kWriteBytes) return write_out(false);
  return 0;
}

int CheckpointWriter::grow(std::uint64_t blocks) {
  while (blocks > 0) {
    if (extents_.size() >= CheckpointRoot::kMaxExtents) return error_ = -ENOSPC;
    AllocRequest req;
    req.want = std::max(blocks, kMinChunkBlocks);
    req.min_len = std::min(req.want, kMinChunkBlocks);
    req.hint = extents_.empty() ? 0 : extents_.back().end();
    req.metadata = true;
    auto e = alloc_.allocate(req);
    if (!e) return error_ = -ENOSPC;
    extents_.push_back(*e);
    capacity_bytes_ += e->len * kBlockSize;
    blocks -= std::min(blocks, e->len);
  }
  return 0;
}

// Writes whole blocks of out_ (all of it when final, padded) at the stream
// position written_bytes_, which is always block aligned.
int CheckpointWriter::write_out(bool final) {
  std::size_t bytes = final ? (out_.size() + kBlockSize - 1) / kBlockSize * kBlockSize
                            : out_.size() / kBlockSize * kBlockSize;
  if (bytes == 0) return 0;
  if (written_bytes_ + bytes > capacity_bytes_) {
    if (int rc = grow((written_bytes_ + bytes - capacity_bytes_ + kBlockSize - 1) / kBlockSize); rc) return rc;
  }
  AlignedBuffer buf(bytes);
  std::memcpy(buf.data(), out_.data(), std::min(bytes, out_.size()));
  std::vector<DeviceIo> ios;
  std::uint64_t stream_pos = written_bytes_, done = 0, ext_base = 0;
  for (const Extent& e : extents_) {
    std::uint64_t ext_bytes = e.len * kBlockSize;
    if (stream_pos < ext_base + ext_bytes && done < bytes) {
      std::uint64_t off = stream_pos - ext_base;
      std::uint64_t n = std::min(ext_bytes - off, bytes - done);
      // Keep single I/Os within 32-bit lengths.
      for (std::uint64_t part = 0; part < n; part += 64ULL << 20) {
        std::uint64_t len = std::min<std::uint64_t>(64ULL << 20, n - part);
        ios.push_back({DeviceIo::Op::Write, e.start * kBlockSize + off + part, buf.data() + done + part,
                       static_cast<std::uint32_t>(len)});
      }
      done += n;
      stream_pos += n;
    }
    ext_base += ext_bytes;
  }
  if (int rc = dev_.submit(ios); rc < 0) return error_ = rc;
  written_bytes_ += bytes;
  out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(std::min(bytes, out_.size())));
  return 0;
}

int CheckpointWriter::finish(CheckpointRoot& root) {
  if (error_) return error_;
  if (int rc = seal_frame(); rc) return rc;
  std::uint64_t stream_bytes = written_bytes_ + out_.size();
  if (int rc = write_out(true); rc) return rc;
  if (int rc = dev_.flush(); rc) return error_ = rc;
  root.uuid_tag = uuid_tag_;
  root.stream_bytes = stream_bytes;
  root.frame_count = frames_;
  root.extents = extents_;
  finished_ = true;
  return 0;
}

bool read_checkpoint(Device& dev, const CheckpointRoot& root, std::uint64_t uuid_tag,
                     const std::function<bool(const Record&)>& fn, std::string& why) {
  // Read the stream extent by extent, in pieces, and parse frames as they
  // become complete.
  std::vector<std::uint8_t> stream;
  std::uint64_t frame_index = 0;
  std::size_t parsed = 0;
  auto parse_ready = [&](bool at_end) -> bool {
    while (true) {
      if (stream.size() - parsed < FrameHeader::kSize) break;
      std::span<const std::uint8_t> rest(stream.data() + parsed, stream.size() - parsed);
      auto h = FrameHeader::decode(rest.first(FrameHeader::kSize), why);
      if (!h) return false;
      if (h->uuid_tag != uuid_tag || h->index != frame_index) {
        why = fmt::format("checkpoint frame {} out of place", frame_index);
        return false;
      }
      if (rest.size() < FrameHeader::kSize + h->payload_len) break;
      auto payload = rest.subspan(FrameHeader::kSize, h->payload_len);
      if (checksum(payload, h->seed()) != h->payload_checksum) {
        why = fmt::format("checkpoint frame {} checksum mismatch", frame_index);
        return false;
      }
      std::uint32_t records = 0;
      bool ok = decode_records(
          payload,
          [&](const Record& r) {
            ++records;
            return fn(r);
          },
          why);
      if (!ok) {
        if (why.empty()) why = fmt::format("checkpoint frame {} does not apply", frame_index);
        return false;
      }
      if (records != h->record_count) {
        why = fmt::format("checkpoint frame {} record count mismatch", frame_index);
        return false;
      }
      parsed += FrameHeader::kSize + h->payload_len;
      ++frame_index;
    }
    if (parsed > (16u << 20)) {
      stream.erase(stream.begin(), stream.begin() + static_cast<std::ptrdiff_t>(parsed));
      parsed = 0;
    }
    (void)at_end;
    return true;
  };

  std::uint64_t remaining = root.stream_bytes;
  // Reads of up to 8 MiB; a small stream needs a small (zero-filled) buffer.
  AlignedBuffer buf(std::clamp<std::uint64_t>((remaining + kBlockSize - 1) / kBlockSize * kBlockSize, kBlockSize,
                                              8 << 20));
  for (const Extent& e : root.extents) {
    if (e.start == 0 || e.end() < e.start) {
      why = "checkpoint extent out of range";
      return false;
    }
    std::uint64_t ext_bytes = std::min(remaining, e.len * kBlockSize);
    for (std::uint64_t off = 0; off < ext_bytes; off += buf.size()) {
      std::uint64_t n = std::min<std::uint64_t>(buf.size(), ext_bytes - off);
      std::uint64_t io = (n + kBlockSize - 1) / kBlockSize * kBlockSize;
      if (e.start * kBlockSize + off + io > dev.size_bytes()) {
        why = "checkpoint extent beyond the device";
        return false;
      }
      if (int rc = dev.read(e.start * kBlockSize + off, buf.data(), static_cast<std::uint32_t>(io)); rc < 0) {
        why = fmt::format("checkpoint read failed: {}", std::strerror(-rc));
        return false;
      }
      const auto* p = reinterpret_cast<const std::uint8_t*>(buf.data());
      stream.insert(stream.end(), p, p + n);
      if (!parse_ready(false)) return false;
    }
    remaining -= ext_bytes;
    if (remaining == 0) break;
  }
  if (remaining != 0 || !parse_ready(true) || parsed != stream.size() || frame_index != root.frame_count) {
    if (why.empty()) why = "checkpoint stream incomplete";
    return false;
  }
  return true;
}

}  // namespace dhfs
