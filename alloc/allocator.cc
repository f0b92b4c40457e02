#include "alloc/allocator.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

namespace dhfs {

namespace {

// From this size on a request is a bulk (sequential) write: one big run
// somewhere is worth more to it than a small gap close to the hint.
constexpr std::uint64_t kBestFitThreshold = 256;

bool within(const Extent& area, const Extent& e) {
  return e.start >= area.start && e.start <= area.end() && e.len <= area.end() - e.start;
}

void report_bad_free(const char* op, const Extent& e, const char* why) {
  std::fprintf(stderr, "dhfs: allocator: ignoring %s of blocks [%" PRIu64 ", +%" PRIu64 "): %s\n", op,
               e.start, e.len, why);
}

}  // namespace

Allocator::Allocator(Extent area) : area_(area) { free_.insert(area); }

bool Allocator::mark_used(Extent e) {
  std::lock_guard lock(mu_);
  return within(area_, e) && free_.remove(e);
}

// Blocks a request may take: data must leave the reserve untouched so that
// checkpoints can still be written on a device full of data.
std::uint64_t Allocator::grantable(bool metadata) const {
  const std::uint64_t free = free_.free_blocks();
  if (metadata) return free;
  return free > reserve_ ? free - reserve_ : 0;
}

// Contiguous growth: takes from the free run that starts exactly at `hint`.
std::optional<Extent> Allocator::take_at(BlockNo hint, std::uint64_t want, std::uint64_t min_len) {
  if (hint == 0) return std::nullopt;  // 0 means "no preference"
  const auto run = free_.run_containing(hint);
  if (!run || run->start != hint || run->len < min_len) return std::nullopt;
  const Extent taken{hint, std::min(want, run->len)};
  free_.remove(taken);
  return taken;
}

std::optional<Extent> Allocator::take_placed(std::uint64_t want, std::uint64_t min_len, BlockNo hint,
                                             bool big) {
  if (auto e = take_at(hint, want, min_len)) return e;
  if (big) return free_.take_best_fit(want, min_len);
  return free_.take_near(want, min_len, hint);
}

std::optional<Extent> Allocator::allocate(const AllocRequest& req) {
  if (req.want == 0) return std::nullopt;
  const std::uint64_t min_len = std::clamp<std::uint64_t>(req.min_len, 1, req.want);
  std::lock_guard lock(mu_);
  // Near the reserve a shorter extent is still fine as long as it has min_len.
  const std::uint64_t want = std::min(req.want, grantable(req.metadata));
  if (want < min_len) return std::nullopt;
  return take_placed(want, min_len, req.hint, req.want >= kBestFitThreshold);
}

// One piece of allocate_all, chosen to keep the piece count minimal.
std::optional<Extent> Allocator::take_piece(std::uint64_t want, std::uint64_t min_len, BlockNo hint) {
  // Extending the previous piece adds no discontinuity, however short the run.
  if (auto e = take_at(hint, want, min_len)) return e;
  // One run holding all the rest, placed as allocate() would place it.
  if (auto e = take_placed(want, want, hint, want >= kBestFitThreshold)) return e;
  // None holds it all: taking the largest run each time leaves the fewest pieces.
  return free_.take_best_fit(want, min_len);
}

bool Allocator::allocate_all(const AllocRequest& req, std::vector<Extent>& out) {
  if (req.want == 0) return true;
  std::lock_guard lock(mu_);
  // Checking the total first means only fragmentation (min_len) can fail below.
  if (req.want > grantable(req.metadata)) return false;
  std::vector<Extent> pieces;
  std::uint64_t remaining = req.want;
  BlockNo hint = req.hint;
  while (remaining > 0) {
    const auto piece = take_piece(remaining, std::clamp<std::uint64_t>(req.min_len, 1, remaining), hint);
    if (!piece) {
      for (const Extent& p : pieces) free_.insert(p);  // all or nothing
      return false;
    }
    pieces.push_back(*piece);
    remaining -= piece->len;
    hint = piece->end();
  }
  out.insert(out.end(), pieces.begin(), pieces.end());
  return true;
}

// Why freeing `e` would be a bug, or nullptr if it is fine. Free and pending
// space never overlap, and a block in neither is in use.
const char* Allocator::check_free(Extent e) const {
  if (!within(area_, e)) return "not inside the device area";
  if (free_.intersects(e)) return "some of it is already free";
  if (pending_space_.intersects(e)) return "some of it already waits for a journal commit";
  return nullptr;
}

void Allocator::free_now(Extent e) {
  if (e.empty()) return;
  const char* bad = nullptr;
  {
    std::lock_guard lock(mu_);
    bad = check_free(e);
    if (!bad) free_.insert(e);
  }
  if (bad) report_bad_free("free_now", e, bad);  // outside the lock: stderr may block
}

void Allocator::free_after(Extent e, std::uint64_t seq) {
  if (e.empty()) return;
  const char* bad = nullptr;
  {
    std::lock_guard lock(mu_);
    bad = check_free(e);
    if (!bad && durable_seq_ && seq <= *durable_seq_) {
      free_.insert(e);  // the transaction is durable already
    } else if (!bad) {
      pending_.emplace(seq, e);
      pending_space_.insert(e);
    }
  }
  if (bad) report_bad_free("free_after", e, bad);
}

void Allocator::mark_durable(std::uint64_t seq) {
  std::lock_guard lock(mu_);
  durable_seq_ = std::max(durable_seq_.value_or(0), seq);
  // mark_durable(seq) covers every transaction up to `seq`, whatever order
  // their frees were recorded in; the multimap is sorted by seq.
  const auto last = pending_.upper_bound(seq);
  for (auto it = pending_.begin(); it != last; ++it) {
    pending_space_.remove(it->second);
    free_.insert(it->second);
  }
  pending_.erase(pending_.begin(), last);
}

void Allocator::set_metadata_reserve(std::uint64_t blocks) {
  std::lock_guard lock(mu_);
  reserve_ = blocks;
}

std::uint64_t Allocator::free_blocks() const {
  std::lock_guard lock(mu_);
  return free_.free_blocks();
}

std::uint64_t Allocator::pending_blocks() const {
  std::lock_guard lock(mu_);
  return pending_space_.free_blocks();
}

std::uint64_t Allocator::available_blocks() const {
  std::lock_guard lock(mu_);
  return grantable(false);
}

std::size_t Allocator::free_extent_count() const {
  std::lock_guard lock(mu_);
  return free_.extent_count();
}

std::vector<Extent> Allocator::free_extents() const {
  std::lock_guard lock(mu_);
  std::vector<Extent> out;
  out.reserve(free_.extent_count());
  free_.for_each([&](const Extent& e) { out.push_back(e); });
  return out;
}

}  // namespace dhfs
