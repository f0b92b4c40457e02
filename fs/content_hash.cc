#include "fs/content_hash.h"

#include <xxhash.h>

#include <atomic>

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

struct HashStream::State {
  XXH3_state_t* st = XXH3_createState();
  State() {
    if (st) XXH3_128bits_reset(st);
  }
  ~State() { XXH3_freeState(st); }
  State(const State&) = delete;
  State& operator=(const State&) = delete;
};

HashStream::HashStream() : state_(std::make_unique<State>()) {
  if (!state_->st) broken_ = true;  // (out of memory: no dedup for this file)
}
HashStream::~HashStream() { g_waiting_total -= waiting_bytes_; }

void HashStream::fail() {
  broken_ = true;
  waiting_.clear();
  g_waiting_total -= waiting_bytes_;
  waiting_bytes_ = 0;
}

void HashStream::feed(std::uint64_t off, std::span<const std::byte> data) {
  std::lock_guard lk(mu_);
  if (broken_ || data.empty()) return;
  if (off < upto_) return fail();  // rewrites hashed bytes
  if (off > upto_) {
    // Ahead of the hashed bytes: waits, unless it overlaps a waiting write.
    auto next = waiting_.lower_bound(off);
    if (next != waiting_.end() && next->first < off + data.size()) return fail();
    if (next != waiting_.begin() && std::prev(next)->first + std::prev(next)->second.size() > off) return fail();
    if (waiting_bytes_ + data.size() > kMaxWaitingBytes) return fail();
    if (g_waiting_total.fetch_add(data.size()) + data.size() > kMaxWaitingTotal) {
      g_waiting_total -= data.size();
      return fail();
    }
    waiting_.emplace(off, std::vector<std::byte>(data.begin(), data.end()));
    waiting_bytes_ += data.size();
    return;
  }
  XXH3_128bits_update(state_->st, data.data(), data.size());
  upto_ += data.size();
  // Writes that waited for this one.
  for (auto it = waiting_.begin(); it != waiting_.end() && it->first <= upto_; it = waiting_.erase(it)) {
    if (it->first < upto_) return fail();
    XXH3_128bits_update(state_->st, it->second.data(), it->second.size());
    upto_ += it->second.size();
    waiting_bytes_ -= it->second.size();
    g_waiting_total -= it->second.size();
  }
}

void HashStream::break_off() {
  std::lock_guard lk(mu_);
  fail();
}

std::optional<ContentHash> HashStream::digest(std::uint64_t size) {
  std::lock_guard lk(mu_);
  if (broken_ || upto_ != size || !waiting_.empty()) return std::nullopt;
  if (g_colliding.load(std::memory_order_relaxed)) return ContentHash{};
  XXH128_hash_t h = XXH3_128bits_digest(state_->st);
  return ContentHash{h.low64, h.high64};
}

}  // namespace dhfs
