#include "fs/content_hash.h"

#include <algorithm>
#include <atomic>

#include "fs/xxh.h"

namespace dhfs {

namespace {
std::atomic<bool> g_colliding{false};
// Bytes waiting in all streams together: many large files written at once
// must not pin more memory than this.
std::atomic<std::size_t> g_waiting_total{0};
constexpr std::size_t kMaxWaitingTotal = 256 << 20;
}

void set_colliding_hashes_for_tests(bool on) { g_colliding.store(on); }

ContentHash hash_of(std::span<const std::byte> data) {
  if (g_colliding.load(std::memory_order_relaxed)) return {};
  XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
  return {h.low64, h.high64};
}

namespace {

ContentHash hash_of_chunk_hashes(std::span<const ContentHash> chunks) {
  std::vector<std::byte> list(chunks.size() * 16);
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    for (int b = 0; b < 8; ++b) {
      list[i * 16 + b] = static_cast<std::byte>(chunks[i].lo >> (8 * b));
      list[i * 16 + 8 + b] = static_cast<std::byte>(chunks[i].hi >> (8 * b));
    }
  }
  return hash_of(list);
}

}  // namespace

ContentHash file_hash_of(std::span<const std::byte> data) {
  std::vector<ContentHash> chunks;
  for (std::size_t off = 0; off < data.size(); off += HashStream::kChunkBytes)
    chunks.push_back(hash_of(data.subspan(off, std::min(HashStream::kChunkBytes, data.size() - off))));
  return hash_of_chunk_hashes(chunks);
}

// One chunk being filled: its XXH3 state over the bytes before `upto`, and
// pieces beyond that wait for the gap.
struct HashStream::Chunk {
  XXH3_state_t* st = XXH3_createState();
  std::size_t upto = 0;
  std::map<std::size_t, std::vector<std::byte>> waiting;  // by offset in the chunk, all beyond upto
  Chunk() {
    if (st) XXH3_128bits_reset(st);
  }
  ~Chunk() { XXH3_freeState(st); }
  Chunk(const Chunk&) = delete;
  Chunk& operator=(const Chunk&) = delete;
};

HashStream::HashStream() = default;
HashStream::~HashStream() { g_waiting_total -= waiting_bytes_; }

void HashStream::fail() {
  broken_ = true;
  open_.clear();
  done_.clear();
  g_waiting_total -= waiting_bytes_;
  waiting_bytes_ = 0;
}

void HashStream::feed(std::uint64_t off, std::span<const std::byte> data) {
  std::lock_guard lk(mu_);
  while (!broken_ && !data.empty()) {
    const std::uint64_t index = off / kChunkBytes;
    const auto at = static_cast<std::size_t>(off % kChunkBytes);
    const std::size_t n = std::min(data.size(), kChunkBytes - at);
    feed_chunk(index, at, data.first(n));
    off += n;
    data = data.subspan(n);
  }
}

void HashStream::feed_chunk(std::uint64_t index, std::size_t at, std::span<const std::byte> data) {
  if (index >= kMaxChunks) return fail();
  if (index < done_.size() && done_[index]) {  // rewrites a hashed chunk
    rewritten_ = true;
    return fail();
  }
  std::unique_ptr<Chunk>& slot = open_[index];
  if (!slot) {
    if (open_.size() > kMaxOpenChunks) return fail();  // scattered writes, not a file streaming in
    slot = std::make_unique<Chunk>();
  }
  Chunk& c = *slot;
  if (!c.st) return fail();  // (out of memory: no dedup for this file)
  if (at < c.upto) {  // rewrites hashed bytes
    rewritten_ = true;
    return fail();
  }
  if (at > c.upto) {
    // Ahead of the hashed bytes: waits, unless it overlaps a waiting write.
    auto next = c.waiting.lower_bound(at);
    if (next != c.waiting.end() && next->first < at + data.size()) return fail();
    if (next != c.waiting.begin() && std::prev(next)->first + std::prev(next)->second.size() > at) return fail();
    if (waiting_bytes_ + data.size() > kMaxWaitingBytes) return fail();
    if (g_waiting_total.fetch_add(data.size()) + data.size() > kMaxWaitingTotal) {
      g_waiting_total -= data.size();
      return fail();
    }
    c.waiting.emplace(at, std::vector<std::byte>(data.begin(), data.end()));
    waiting_bytes_ += data.size();
    return;
  }
  XXH3_128bits_update(c.st, data.data(), data.size());
  c.upto += data.size();
  // Writes that waited for this one.
  for (auto it = c.waiting.begin(); it != c.waiting.end() && it->first <= c.upto; it = c.waiting.erase(it)) {
    if (it->first < c.upto) return fail();
    XXH3_128bits_update(c.st, it->second.data(), it->second.size());
    c.upto += it->second.size();
    waiting_bytes_ -= it->second.size();
    g_waiting_total -= it->second.size();
  }
  if (c.upto < kChunkBytes) return;
  const XXH128_hash_t h = XXH3_128bits_digest(c.st);
  if (done_.size() <= index) done_.resize(index + 1);
  done_[index] = ContentHash{h.low64, h.high64};
  open_.erase(index);
}

bool HashStream::rewritten() {
  std::lock_guard lk(mu_);
  return rewritten_;
}

void HashStream::break_off() {
  std::lock_guard lk(mu_);
  fail();
}

std::optional<ContentHash> HashStream::digest(std::uint64_t size) {
  std::lock_guard lk(mu_);
  if (broken_ || waiting_bytes_ != 0) return std::nullopt;
  const std::uint64_t full = size / kChunkBytes;  // chunks that must be complete
  const auto tail = static_cast<std::size_t>(size % kChunkBytes);
  // Every chunk before the last complete, none at or past the end (bytes past size).
  if (done_.size() != full) return std::nullopt;
  std::vector<ContentHash> chunks;
  for (const std::optional<ContentHash>& h : done_) {
    if (!h) return std::nullopt;
    chunks.push_back(*h);
  }
  if (tail != 0) {
    // The short last chunk: open, filled exactly to the end of the file.
    auto last = open_.find(full);
    if (last == open_.end() || open_.size() != 1 || last->second->upto != tail) return std::nullopt;
    const XXH128_hash_t h = XXH3_128bits_digest(last->second->st);
    chunks.push_back({h.low64, h.high64});
  } else if (!open_.empty()) {
    return std::nullopt;  // bytes past size
  }
  return hash_of_chunk_hashes(chunks);
}

}  // namespace dhfs
