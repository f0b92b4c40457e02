#include "alloc/free_space.h"

#include <algorithm>
#include <iterator>
#include <limits>

namespace dhfs {

namespace {

// An extent whose end does not fit in a BlockNo cannot describe real blocks;
// accepting it would make end() wrap and break every comparison below.
bool wraps(const Extent& e) { return e.len > std::numeric_limits<BlockNo>::max() - e.start; }

}  // namespace

FreeSpace::FreeSpace(const FreeSpace& other)
    : by_start_(other.by_start_),
      by_len_(other.by_len_),
      free_blocks_(other.free_blocks_),
      long_run_blocks_(other.long_run_blocks_) {}

FreeSpace& FreeSpace::operator=(const FreeSpace& other) {
  if (this == &other) return *this;
  if (tally_) *tally_ += other.long_run_blocks_ - long_run_blocks_;
  by_start_ = other.by_start_;
  by_len_ = other.by_len_;
  free_blocks_ = other.free_blocks_;
  long_run_blocks_ = other.long_run_blocks_;
  return *this;
}

FreeSpace::~FreeSpace() {
  if (tally_) *tally_ -= long_run_blocks_;
}

void FreeSpace::add_long_runs_to(std::uint64_t* tally) {
  if (tally == tally_) return;
  if (tally_) *tally_ -= long_run_blocks_;
  tally_ = tally;
  if (tally_) *tally_ += long_run_blocks_;
}

void FreeSpace::add_run(BlockNo start, std::uint64_t len) {
  by_start_.insert({start, len});
  by_len_.emplace(len, start);
  free_blocks_ += len;
  if (len >= kLongRun) {
    long_run_blocks_ += len;
    if (tally_) *tally_ += len;
  }
}

void FreeSpace::drop_run(const Extent& run) {
  by_start_.erase(run.start);
  by_len_.erase({run.len, run.start});
  free_blocks_ -= run.len;
  if (run.len >= kLongRun) {
    long_run_blocks_ -= run.len;
    if (tally_) *tally_ -= run.len;
  }
}

// Takes the first `want` blocks of the free `run`; the rest stays free.
Extent FreeSpace::take_from(const Extent& run, std::uint64_t want) {
  const std::uint64_t n = std::min(want, run.len);
  drop_run(run);
  if (n < run.len) add_run(run.start + n, run.len - n);
  return {run.start, n};
}

bool FreeSpace::insert(Extent e) {
  if (e.empty()) return true;
  if (wraps(e) || intersects(e)) return false;
  BlockNo start = e.start;
  std::uint64_t len = e.len;
  // Coalescing keeps "one run per gap", which both the hint logic (a run
  // starting right at a file's end) and best fit rely on.
  if (auto prev = by_start_.last_at_or_before(e.start); prev && prev->end() == e.start) {
    drop_run(*prev);
    start = prev->start;
    len += prev->len;
  }
  if (auto next = by_start_.first_at_or_after(e.end()); next && next->start == e.end()) {
    drop_run(*next);
    len += next->len;
  }
  add_run(start, len);
  return true;
}

bool FreeSpace::remove(Extent e) {
  if (e.empty()) return true;
  if (!contains(e)) return false;
  const Extent run = *run_containing(e.start);
  drop_run(run);
  if (run.start < e.start) add_run(run.start, e.start - run.start);
  if (e.end() < run.end()) add_run(e.end(), run.end() - e.end());
  return true;
}

bool FreeSpace::contains(Extent e) const {
  if (e.empty()) return true;
  if (wraps(e)) return false;
  // Runs are coalesced, so a fully free extent lies inside a single run.
  const auto run = run_containing(e.start);
  return run && run->end() >= e.end();
}

bool FreeSpace::intersects(Extent e) const {
  if (e.empty()) return false;
  if (wraps(e)) e.len = std::numeric_limits<BlockNo>::max() - e.start;
  // Either a run starts before `e` and reaches into it, or one starts inside.
  const auto prev = by_start_.last_at_or_before(e.start);
  if (prev && prev->end() > e.start) return true;
  const auto next = by_start_.first_at_or_after(e.start);
  return next && next->start < e.end();
}

std::optional<Extent> FreeSpace::take_near(std::uint64_t want, std::uint64_t min_len, BlockNo hint) {
  if (want == 0) return std::nullopt;
  min_len = std::clamp<std::uint64_t>(min_len, 1, want);
  // A run starting exactly at `hint` is the first run at or after it, so the
  // forward search already prefers it whenever it is long enough.
  auto run = by_start_.first_fit(hint, min_len);
  if (!run) run = by_start_.first_fit(0, min_len);  // wrap to the beginning
  if (!run) return std::nullopt;
  return take_from(*run, want);
}

// Best fit among the runs shorter than `limit`: the smallest that holds all
// of `want`, else the longest, provided it has min_len (lowest start among
// equals either way).
std::optional<Extent> FreeSpace::best_fit_below(std::uint64_t want, std::uint64_t min_len, std::uint64_t limit) const {
  if (want == 0) return std::nullopt;
  min_len = std::clamp<std::uint64_t>(min_len, 1, want);
  const auto end = by_len_.lower_bound({limit, 0});  // the runs shorter than limit come before
  auto it = by_len_.lower_bound({want, 0});
  if (want >= limit || it == end) {
    if (end == by_len_.begin()) return std::nullopt;
    it = by_len_.lower_bound({std::prev(end)->first, 0});
    if (it->first < min_len) return std::nullopt;
  }
  return Extent{it->second, it->first};
}

std::optional<Extent> FreeSpace::find_best_fit(std::uint64_t want, std::uint64_t min_len) const {
  return best_fit_below(want, min_len, std::numeric_limits<std::uint64_t>::max());
}

std::optional<Extent> FreeSpace::find_short_fit(std::uint64_t want, std::uint64_t min_len) const {
  return best_fit_below(want, min_len, kLongRun);
}

std::optional<Extent> FreeSpace::take_best_fit(std::uint64_t want, std::uint64_t min_len) {
  const auto run = find_best_fit(want, min_len);
  if (!run) return std::nullopt;
  return take_from(*run, want);
}

std::vector<Extent> FreeSpace::runs_within(Extent range) const {
  std::vector<Extent> out;
  if (range.empty()) return out;
  if (wraps(range)) range.len = std::numeric_limits<BlockNo>::max() - range.start;
  std::optional<Extent> run = by_start_.last_at_or_before(range.start);
  if (!run || run->end() <= range.start) run = by_start_.first_at_or_after(range.start);
  while (run && run->start < range.end()) {
    const BlockNo start = std::max(run->start, range.start);
    const BlockNo end = std::min(run->end(), range.end());
    out.push_back({start, end - start});
    if (run->end() >= range.end()) break;
    run = by_start_.first_at_or_after(run->end());
  }
  return out;
}

std::optional<Extent> FreeSpace::run_containing(BlockNo b) const {
  const auto run = by_start_.last_at_or_before(b);
  if (!run || !run->contains(b)) return std::nullopt;
  return run;
}

std::uint64_t FreeSpace::largest() const { return by_len_.empty() ? 0 : by_len_.rbegin()->first; }

void FreeSpace::for_each(const std::function<void(const Extent&)>& fn) const { by_start_.for_each(fn); }

bool FreeSpace::consistent() const {
  bool ok = by_start_.consistent() && by_start_.size() == by_len_.size() &&
            by_start_.longest() == largest();
  std::uint64_t sum = 0, long_sum = 0;
  std::optional<Extent> prev;
  for_each([&](const Extent& run) {
    // Strictly separated: touching runs should have been merged.
    ok = ok && !run.empty() && !wraps(run) && (!prev || prev->end() < run.start) &&
         by_len_.count({run.len, run.start}) == 1;
    sum += run.len;
    if (run.len >= kLongRun) long_sum += run.len;
    prev = run;
  });
  return ok && sum == free_blocks_ && long_sum == long_run_blocks_;
}

}  // namespace dhfs
