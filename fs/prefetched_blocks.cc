#include "fs/prefetched_blocks.h"

#include <algorithm>
#include <cstring>

namespace dhfs {

PrefetchedBlocks::Read::Read(PrefetchedBlocks& owner, Extent blocks) : owner_(owner), blocks_(blocks) {
  if (blocks.len == 0 || blocks.len * kBlockSize > owner.max_bytes_) return;
  {
    std::lock_guard lk(owner.mu_);
    // Only the blocks between the kept runs around it are read: runs never
    // overlap, and blocks read once are not read again while kept.
    BlockNo from = blocks.start, to = blocks.end();
    auto it = owner.runs_.upper_bound(from);
    if (it != owner.runs_.end()) to = std::min<BlockNo>(to, it->first);
    if (it != owner.runs_.begin()) from = std::max<BlockNo>(from, std::prev(it)->first + std::prev(it)->second.len);
    if (from >= to) return;
    blocks_ = blocks = {from, to - from};
    for (const Extent& r : owner.reading_)
      if (r.overlaps(blocks)) return;
    owner.reading_.push_back(blocks);
    owner.idle_.store(false);
    since_ = owner.seq_;
    buf_ = owner.buffer_for(blocks.len * kBlockSize);
  }
  wanted_ = true;
}

PrefetchedBlocks::Read::~Read() {
  if (!wanted_) return;
  std::lock_guard lk(owner_.mu_);
  auto& r = owner_.reading_;
  r.erase(std::find(r.begin(), r.end(), blocks_));
  owner_.settle_if_idle();
}

void PrefetchedBlocks::Read::keep() {
  if (!wanted_ || done_) return;
  done_ = true;
  PrefetchedBlocks& o = owner_;
  std::lock_guard lk(o.mu_);
  // Every write logged after since_ must be in the log, and none may touch
  // the blocks.
  if (o.seq_ > since_ && (o.log_.empty() || o.log_.front().first > since_ + 1)) return;
  for (const auto& [seq, e] : o.log_)
    if (seq > since_ && e.overlaps(blocks_)) return;
  o.drop_overlapping(blocks_);
  o.lru_.push_back(blocks_.start);
  o.runs_.emplace(blocks_.start, Run{blocks_.len, std::move(buf_), std::prev(o.lru_.end())});
  o.bytes_ += blocks_.len * kBlockSize;
  while (o.bytes_ > o.max_bytes_ && !o.lru_.empty()) o.drop(o.runs_.find(o.lru_.front()));
}

bool PrefetchedBlocks::take(BlockNo start, std::uint64_t n, std::byte* dst) {
  if (idle_.load()) return false;
  std::lock_guard lk(mu_);
  auto it = runs_.upper_bound(start);
  if (it == runs_.begin()) return false;
  --it;
  if (it->first + it->second.len < start + n) return false;
  std::memcpy(dst, it->second.data.data() + (start - it->first) * kBlockSize, n * kBlockSize);
  return true;
}

BlockNo PrefetchedBlocks::kept_end(BlockNo b) const {
  if (idle_.load()) return b;
  std::lock_guard lk(mu_);
  auto it = runs_.upper_bound(b);
  if (it == runs_.begin()) return b;
  --it;
  return it->first + it->second.len > b ? it->first + it->second.len : b;
}

void PrefetchedBlocks::writing(Extent e) {
  if (idle_.load()) return;
  std::lock_guard lk(mu_);
  drop_overlapping(e);
  if (!reading_.empty()) {
    log_.emplace_back(++seq_, e);
    if (log_.size() > kLogEntries) log_.pop_front();
  }
  settle_if_idle();
}

void PrefetchedBlocks::forget(Extent e) {
  if (idle_.load()) return;
  std::lock_guard lk(mu_);
  drop_overlapping(e);
  settle_if_idle();
}

std::size_t PrefetchedBlocks::kept_bytes() const {
  std::lock_guard lk(mu_);
  return bytes_;
}

void PrefetchedBlocks::drop_overlapping(Extent e) {
  auto it = runs_.upper_bound(e.start);
  if (it != runs_.begin() && std::prev(it)->first + std::prev(it)->second.len > e.start) --it;
  while (it != runs_.end() && it->first < e.end()) drop(it++);
}

void PrefetchedBlocks::drop(std::map<BlockNo, Run>::iterator run) {
  bytes_ -= run->second.len * kBlockSize;
  lru_.erase(run->second.age);
  if (spare_bytes_ + run->second.data.size() <= max_bytes_) {
    spare_bytes_ += run->second.data.size();
    spare_.push_back(std::move(run->second.data));
  }
  runs_.erase(run);
}

void PrefetchedBlocks::settle_if_idle() {
  if (!reading_.empty() || !runs_.empty()) return;
  idle_.store(true);
  log_.clear();  // only reads under way look at it
  spare_.clear();
  spare_bytes_ = 0;
}

bool PrefetchedBlocks::compare_kept(BlockNo start, std::span<const std::byte> data) {
  if (idle_.load() || data.empty()) return false;
  const std::uint64_t n = (data.size() + kBlockSize - 1) / kBlockSize;
  std::lock_guard lk(mu_);
  auto it = runs_.upper_bound(start);
  if (it == runs_.begin()) return false;
  --it;
  const BlockNo end = it->first + it->second.len;
  if (end < start + n) return false;
  if (std::memcmp(it->second.data.data() + (start - it->first) * kBlockSize, data.data(), data.size()) != 0)
    return false;
  if (start + n == end) {
    drop(it);
    settle_if_idle();
  }
  return true;
}

AlignedBuffer PrefetchedBlocks::buffer_for(std::size_t bytes) {
  for (auto it = spare_.begin(); it != spare_.end(); ++it)
    if (it->size() >= bytes) {
      AlignedBuffer b = std::move(*it);
      spare_bytes_ -= b.size();
      spare_.erase(it);
      return b;
    }
  return AlignedBuffer::uninitialized(bytes);
}

BlockReader::BlockReader(Device& dev, PrefetchedBlocks& blocks)
    : dev_(dev), blocks_(blocks), thread_([this](std::stop_token stop) { run(stop); }) {}

BlockReader::~BlockReader() {
  thread_.request_stop();
  cv_.notify_all();
}

void BlockReader::request(Extent e) {
  {
    std::lock_guard lk(mu_);
    if (queue_.size() >= kMaxQueued || std::find(queue_.begin(), queue_.end(), e) != queue_.end()) return;
    queue_.push_back(e);
  }
  cv_.notify_one();
}

void BlockReader::run(std::stop_token stop) {
  for (;;) {
    Extent e;
    {
      std::unique_lock lk(mu_);
      if (!cv_.wait(lk, stop, [&] { return !queue_.empty(); })) return;
      e = queue_.front();
      queue_.pop_front();
    }
    PrefetchedBlocks::Read read(blocks_, e);
    if (!read.wanted()) continue;
    const Extent b = read.blocks();
    const DeviceIo io = DeviceIo::blocks(DeviceIo::Op::Read, b.start, read.buffer(), b.len);
    if (dev_.submit({&io, 1}) == 0) read.keep();  // a failed read ahead is only a miss later
  }
}

int WatchedDevice::submit(std::span<const DeviceIo> ios) {
  auto report = [&] {
    for (const DeviceIo& io : ios)
      if (io.op == DeviceIo::Op::Write) blocks_.writing({io.offset / kBlockSize, io.len / kBlockSize});
  };
  report();
  const int rc = inner_->submit(ios);
  report();  // a read that began meanwhile may have seen the old bytes
  return rc;
}

int WatchedDevice::discard(std::uint64_t offset, std::uint64_t len) {
  // What the blocks read now is undefined: nothing read ahead of them may
  // be served later, as after a write.
  const Extent blocks{offset / kBlockSize, len / kBlockSize};
  blocks_.writing(blocks);
  const int rc = inner_->discard(offset, len);
  blocks_.writing(blocks);
  return rc;
}

}  // namespace dhfs
