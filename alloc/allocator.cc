#include "alloc/allocator.h"

#include <algorithm>
#include <atomic>
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

std::atomic<void (*)(std::string_view)> g_reporter{nullptr};

void report_bad_free(const char* op, const Extent& e, const char* why) {
  char line[256];
  std::snprintf(line, sizeof line, "allocator: ignoring %s of blocks [%" PRIu64 ", +%" PRIu64 "): %s", op, e.start,
                e.len, why);
  if (auto* report = g_reporter.load()) report(line);
  else std::fprintf(stderr, "dhfs: %s\n", line);
}

// Exact placement: takes blocks starting at `hint` if it is free. That is
// contiguous growth when the hint is the end of the previous extent, and it
// keeps a file's blocks in file order when writes arrive out of order (the
// hint then leaves room for the blocks in between).
std::optional<Extent> take_at(FreeSpace& fs, BlockNo hint, std::uint64_t want, std::uint64_t min_len) {
  if (hint == 0) return std::nullopt;  // 0 means "no preference"
  const auto run = fs.run_containing(hint);
  if (!run || run->end() - hint < min_len) return std::nullopt;
  const Extent taken{hint, std::min(want, run->end() - hint)};
  fs.remove(taken);
  return taken;
}

// The placement of a single allocate() inside one free set.
std::optional<Extent> take_placed(FreeSpace& fs, std::uint64_t want, std::uint64_t min_len, BlockNo hint,
                                  bool big) {
  if (auto e = take_at(fs, hint, want, min_len)) return e;
  if (big) return fs.take_best_fit(want, min_len);
  return fs.take_near(want, min_len, hint);
}

// One piece of allocate_all inside one free set, chosen to keep the piece
// count minimal.
std::optional<Extent> take_piece(FreeSpace& fs, std::uint64_t want, std::uint64_t min_len, BlockNo hint) {
  // Extending the previous piece adds no discontinuity, however short the run.
  if (auto e = take_at(fs, hint, want, min_len)) return e;
  // One run holding all the rest, placed as allocate() would place it.
  if (auto e = take_placed(fs, want, want, hint, want >= kBestFitThreshold)) return e;
  // None holds it all: taking the largest run each time leaves the fewest pieces.
  return fs.take_best_fit(want, min_len);
}

// Takes up to `want` blocks from the free `run` of `fs`: at the hint when the
// hint lies inside the run with min_len blocks after it, else at its start.
std::optional<Extent> take_in_run(FreeSpace& fs, const Extent& run, std::uint64_t want, std::uint64_t min_len,
                                  BlockNo hint) {
  BlockNo start = run.start;
  if (hint != 0 && run.contains(hint) && run.end() - hint >= min_len) start = hint;
  if (run.end() - start < min_len) return std::nullopt;
  const Extent taken{start, std::min(want, run.end() - start)};
  fs.remove(taken);
  return taken;
}

}  // namespace

void set_allocator_reporter(void (*report)(std::string_view line)) { g_reporter.store(report); }

Allocator::Allocator(Extent area) : area_(area) {
  free_.add_long_runs_to(&long_run_blocks_);
  free_.insert(area);
  free_total_ = free_.free_blocks();
}

Extent Allocator::area() const {
  std::lock_guard lock(mu_);
  return area_;
}

void Allocator::extend_area(BlockNo end) {
  std::lock_guard lock(mu_);
  if (end <= area_.end()) return;
  const Extent added{area_.end(), end - area_.end()};
  area_.len += added.len;
  give_back(added);
  free_total_ += added.len;
}

// regions_[id], created with its free set counted in long_run_blocks_.
Allocator::Region& Allocator::region_entry(RegionId id) {
  Region& r = regions_[id];
  r.free.add_long_runs_to(&long_run_blocks_);
  return r;
}

FreeSpace& Allocator::free_of(RegionId owner) { return owner == 0 ? free_ : regions_.at(owner).free; }

const FreeSpace& Allocator::free_of(RegionId owner) const {
  return owner == 0 ? free_ : regions_.at(owner).free;
}

bool Allocator::mark_used(Extent e) {
  std::lock_guard lock(mu_);
  if (!within(area_, e)) return false;
  bool all_free = true;
  slices_.for_each_piece(e, [&](const Extent& piece, RegionId owner) {
    all_free = all_free && free_of(owner).contains(piece);
  });
  if (!all_free) return false;
  slices_.for_each_piece(e, [&](const Extent& piece, RegionId owner) { free_of(owner).remove(piece); });
  free_total_ -= e.len;
  return true;
}

// Blocks a request may take: data must leave the reserve untouched so that
// checkpoints can still be written on a device full of data. The reserve is
// kept from all free space, reserved for regions or not: reservations are
// soft and are reclaimed for metadata like for anything else.
std::uint64_t Allocator::grantable(bool metadata) const {
  if (metadata) return free_total_;
  return free_total_ > reserve_ ? free_total_ - reserve_ : 0;
}

// Moves the globally free `x` into region r's reservation and free space.
void Allocator::reserve_global(RegionId id, Region& r, Extent x) {
  free_.remove(x);
  slices_.add(id, x);
  r.free.insert(x);
  changed_.insert(id);
}

// Step 2 of a region request: grow a slice of r in place into the global
// free run next to it, then allocate from the grown end.
std::optional<Extent> Allocator::grow_adjacent(RegionId id, Region& r, std::uint64_t want, std::uint64_t min_len,
                                               BlockNo hint) {
  const std::uint64_t size = std::max(want, growth_);
  std::vector<Extent> candidates;
  // The slice holding the hint; a hint right after a slice (a file ending
  // where its slice ends) counts as held by it.
  for (const BlockNo b : {hint, hint - 1}) {
    if (hint == 0) break;
    if (const auto s = slices_.slice_at(b); s && s->region == id) {
      candidates.push_back(s->extent);
      break;
    }
  }
  if (const auto last = slices_.last_slice_of(id); last && (candidates.empty() || candidates[0] != *last)) {
    candidates.push_back(*last);
  }
  for (const Extent& s : candidates) {
    // At its end: the global run starting right after the slice. The
    // region's own free tail of the slice joins the grown part.
    if (const auto run = free_.run_containing(s.end())) {
      const Extent x{s.end(), std::min(size, run->len)};
      const auto tail = r.free.run_containing(s.end() - 1);
      const Extent joined{tail ? tail->start : x.start, x.end() - (tail ? tail->start : x.start)};
      if (joined.len >= min_len) {
        reserve_global(id, r, x);
        return take_in_run(r.free, joined, want, min_len, hint);
      }
    }
    // At its start: the end of the global run right before the slice.
    if (s.start > area_.start) {
      if (const auto run = free_.run_containing(s.start - 1)) {
        const std::uint64_t n = std::min(size, run->len);
        const Extent x{s.start - n, n};
        const auto head = r.free.run_containing(s.start);
        const Extent joined{x.start, x.len + (head ? head->len : 0)};
        if (joined.len >= min_len) {
          reserve_global(id, r, x);
          return take_in_run(r.free, joined, want, min_len, hint);
        }
      }
    }
  }
  return std::nullopt;
}

// Before anything else in a region request whose hint lies just beyond one
// of r's slices (in the global free run that continues it): the slice grows
// to cover the hint, so that blocks placed in file order stay in file order
// and the region does not fill the room it keeps for them with others.
std::optional<Extent> Allocator::grow_to_hint(RegionId id, Region& r, std::uint64_t want, std::uint64_t min_len,
                                              BlockNo hint) {
  if (hint == 0) return std::nullopt;
  const auto run = free_.run_containing(hint);
  if (!run || run->end() - hint < min_len || run->start <= area_.start) return std::nullopt;
  const auto s = slices_.slice_at(run->start - 1);
  if (!s || s->region != id) return std::nullopt;
  const BlockNo end = std::min(run->end(), hint + std::max(want, growth_));
  reserve_global(id, r, {run->start, end - run->start});
  return take_at(r.free, hint, want, min_len);
}

// Step 3 of a region request: a new slice from global free space.
std::optional<Extent> Allocator::grow_new_slice(RegionId id, Region& r, std::uint64_t want, std::uint64_t min_len,
                                                BlockNo hint) {
  const std::uint64_t size = std::max(want, growth_);
  const auto run = free_.find_best_fit(size, min_len);
  if (!run) return std::nullopt;
  const Extent x{run->start, std::min(size, run->len)};
  reserve_global(id, r, x);
  // x may have joined a free run of r that it touches.
  const Extent joined = *r.free.run_containing(x.start);
  return take_in_run(r.free, joined, want, min_len, hint >= x.start ? hint : x.start);
}

// Takes unused reservation back from a region under pressure: from the
// region with the most unused reservation that has a run of min_len, best
// fit inside it, from the end of that run (a region allocates from the start
// of its runs, so its next writes stay contiguous). With for_region != 0 the
// blocks join that region's reservation; either way they are handed out.
std::optional<Extent> Allocator::reclaim(RegionId for_region, std::uint64_t want, std::uint64_t min_len) {
  Region* victim = nullptr;
  RegionId victim_id = 0;
  for (auto& [id, r] : regions_) {
    if (id == for_region || r.free.largest() < min_len) continue;
    if (!victim || r.free.free_blocks() > victim->free.free_blocks()) {
      victim = &r;
      victim_id = id;
    }
  }
  if (!victim) return std::nullopt;
  const auto run = victim->free.find_best_fit(want, min_len);
  if (!run) return std::nullopt;
  const std::uint64_t n = std::min(want, run->len);
  return reclaim_from(victim_id, *victim, {run->end() - n, n}, for_region);
}

// Takes the free `x` out of region victim_id's reservation, for for_region
// (0: global space).
Extent Allocator::reclaim_from(RegionId victim_id, Region& victim, Extent x, RegionId for_region) {
  victim.free.remove(x);
  slices_.remove(x);
  victim.reclaimed += x.len;
  changed_.insert(victim_id);
  if (for_region != 0) {
    slices_.add(for_region, x);
    changed_.insert(for_region);
  }
  return x;
}

// A checkpoint stream is made of free runs of at least FreeSpace::kLongRun
// blocks (at most 250 of them, FORMAT.md §6.2), so the metadata reserve is
// only of use in such runs. A data extent that would leave fewer blocks in
// long runs than the reserve is taken instead from the short runs, or else
// from the head of a long run, no more than keeps the reserve in long runs.
// (On a full device whose free space is single blocks between files, no
// checkpoint could be written otherwise.)
std::optional<Extent> Allocator::take(RegionId region, std::uint64_t want, std::uint64_t min_len, BlockNo hint,
                                      bool big, bool piece, bool metadata) {
  if (metadata) return take_any(0, want, min_len, hint, big, piece);
  const std::uint64_t before = long_run_blocks_;
  const auto e = take_any(region, want, min_len, hint, big, piece);
  if (!e) return e;
  const std::uint64_t after = long_run_blocks_;
  if (after >= before || after >= reserve_) return e;
  give_back(*e);
  const auto short_piece = take_from_sets(region, [&](const FreeSpace& f) -> std::optional<Extent> {
    const auto run = f.find_short_fit(want, min_len);
    if (!run) return std::nullopt;
    return Extent{run->start, std::min(want, run->len)};
  });
  if (short_piece) return short_piece;
  const std::uint64_t long_blocks = long_run_blocks_;
  if (long_blocks <= reserve_) return std::nullopt;
  const std::uint64_t most = std::min(want, long_blocks - reserve_);
  if (most < min_len) return std::nullopt;
  return take_from_sets(region, [&](const FreeSpace& f) -> std::optional<Extent> {
    const auto run = f.find_best_fit(most + FreeSpace::kLongRun, min_len + FreeSpace::kLongRun);
    if (!run) return std::nullopt;
    return Extent{run->start, std::min(most, run->len - FreeSpace::kLongRun)};
  });
}

// Takes the extent `pick` chooses in the first free set where it chooses
// one: the region's own, global space, then other regions' unused
// reservations (reclaimed as reclaim() does).
std::optional<Extent> Allocator::take_from_sets(RegionId region,
                                                const std::function<std::optional<Extent>(const FreeSpace&)>& pick) {
  const auto it = region == 0 ? regions_.end() : regions_.find(region);
  Region* const own = it == regions_.end() ? nullptr : &it->second;
  const RegionId owner = own ? region : 0;
  if (own) {
    if (const auto x = pick(own->free)) {
      own->free.remove(*x);
      return x;
    }
  }
  if (const auto x = pick(free_)) {
    if (own) {
      reserve_global(owner, *own, *x);
      own->free.remove(*x);
    } else {
      free_.remove(*x);
    }
    return x;
  }
  for (auto& [id, r] : regions_) {
    if (id == owner) continue;
    if (const auto x = pick(r.free)) return reclaim_from(id, r, *x, owner);
  }
  return std::nullopt;
}

// One extent for `region` (0: global space) following the policy in the
// header; `piece` selects allocate_all's piece placement over allocate's.
std::optional<Extent> Allocator::take_any(RegionId region, std::uint64_t want, std::uint64_t min_len, BlockNo hint,
                                          bool big, bool piece) {
  const auto it = region == 0 ? regions_.end() : regions_.find(region);
  if (it == regions_.end()) {
    auto e = piece ? take_piece(free_, want, min_len, hint) : take_placed(free_, want, min_len, hint, big);
    if (e) return e;
    return reclaim(0, want, min_len);
  }
  Region& r = it->second;
  auto e = take_at(r.free, hint, want, min_len);
  if (e || (e = grow_to_hint(region, r, want, min_len, hint))) return e;
  e = piece ? take_piece(r.free, want, min_len, hint) : take_placed(r.free, want, min_len, hint, big);
  if (e) return e;
  if ((e = grow_adjacent(region, r, want, min_len, hint))) return e;
  if ((e = grow_new_slice(region, r, want, min_len, hint))) return e;
  return reclaim(region, want, min_len);
}

std::optional<Extent> Allocator::allocate(const AllocRequest& req) {
  if (req.want == 0) return std::nullopt;
  const std::uint64_t min_len = std::clamp<std::uint64_t>(req.min_len, 1, req.want);
  std::lock_guard lock(mu_);
  // Near the reserve a shorter extent is still fine as long as it has min_len.
  const std::uint64_t want = std::min(req.want, grantable(req.metadata));
  if (want < min_len) return std::nullopt;
  const auto e = take(req.region, want, min_len, req.hint, req.want >= kBestFitThreshold, false, req.metadata);
  if (e) free_total_ -= e->len;
  return e;
}

bool Allocator::allocate_all(const AllocRequest& req, std::vector<Extent>& out) {
  if (req.want == 0) return true;
  std::lock_guard lock(mu_);
  // Checking the total first means only fragmentation (min_len, or the
  // reserve's long runs: see take) can fail below.
  if (req.want > grantable(req.metadata)) return false;
  std::vector<Extent> pieces;
  std::uint64_t remaining = req.want;
  BlockNo hint = req.hint;
  while (remaining > 0) {
    const auto piece = take(req.region, remaining, std::clamp<std::uint64_t>(req.min_len, 1, remaining), hint,
                            remaining >= kBestFitThreshold, true, req.metadata);
    if (!piece) {
      for (const Extent& p : pieces) give_back(p);  // all or nothing
      return false;
    }
    pieces.push_back(*piece);
    remaining -= piece->len;
    hint = piece->end();
  }
  free_total_ -= req.want;
  out.insert(out.end(), pieces.begin(), pieces.end());
  return true;
}

// Returns the blocks of `e` (in use) to the free set of whoever reserves
// each of them. Does not count them; callers adjust free_total_.
void Allocator::give_back(Extent e) {
  slices_.for_each_piece(e, [&](const Extent& piece, RegionId owner) { free_of(owner).insert(piece); });
}

// Why freeing `e` would be a bug, or nullptr if it is fine. Free and pending
// space never overlap, and a block in neither is in use.
const char* Allocator::check_free(Extent e) const {
  if (!within(area_, e)) return "not inside the device area";
  bool free = false;
  slices_.for_each_piece(e, [&](const Extent& piece, RegionId owner) {
    free = free || free_of(owner).intersects(piece);
  });
  if (free) return "some of it is already free";
  if (pending_space_.intersects(e)) return "some of it already waits for a journal commit";
  return nullptr;
}

void Allocator::free_now(Extent e) {
  if (e.empty()) return;
  const char* bad = nullptr;
  {
    std::lock_guard lock(mu_);
    bad = check_free(e);
    if (!bad) {
      give_back(e);
      free_total_ += e.len;
    }
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
      give_back(e);  // the transaction is durable already
      free_total_ += e.len;
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
  // their frees were recorded in; the multimap is sorted by seq. The owner
  // is looked up now: the region may have been released meanwhile.
  const auto last = pending_.upper_bound(seq);
  for (auto it = pending_.begin(); it != last; ++it) {
    pending_space_.remove(it->second);
    give_back(it->second);
    free_total_ += it->second.len;
    if (note_released_) released_.push_back(it->second);
  }
  pending_.erase(pending_.begin(), last);
}

void Allocator::note_released(bool on) {
  std::lock_guard lock(mu_);
  note_released_ = on;
  if (!on) released_.clear();
}

std::vector<Extent> Allocator::take_released() {
  std::vector<Extent> notes;
  {
    std::lock_guard lock(mu_);
    notes.swap(released_);
  }
  // A block freed, used again and freed again is noted twice: sort, then
  // merge what overlaps or touches.
  std::sort(notes.begin(), notes.end(), [](const Extent& a, const Extent& b) { return a.start < b.start; });
  std::vector<Extent> out;
  for (const Extent& e : notes) {
    if (!out.empty() && e.start <= out.back().end()) {
      out.back().len = std::max(out.back().end(), e.end()) - out.back().start;
    } else {
      out.push_back(e);
    }
  }
  return out;
}

void Allocator::set_metadata_reserve(std::uint64_t blocks) {
  std::lock_guard lock(mu_);
  reserve_ = blocks;
}

bool Allocator::create_region(RegionId id, std::uint64_t blocks) {
  std::lock_guard lock(mu_);
  if (id == 0 || regions_.count(id)) return false;
  Region& r = region_entry(id);
  changed_.insert(id);
  // The first pick is the smallest run holding everything; when none does,
  // each pick is the largest run left, which leaves the fewest slices.
  std::uint64_t remaining = blocks;
  while (remaining > 0) {
    const auto x = free_.take_best_fit(remaining, 1);
    if (!x) break;  // soft: less than asked for
    slices_.add(id, *x);
    r.free.insert(*x);
    remaining -= x->len;
  }
  return true;
}

void Allocator::load_region(RegionId id, const std::vector<Extent>& reserved) {
  if (id == 0) return;
  std::lock_guard lock(mu_);
  Region& r = region_entry(id);
  // Normalize: ascending and coalesced, as take_changed_regions reports it.
  std::vector<Extent> slices;
  for (const Extent& e : reserved) {
    if (!e.empty()) slices.push_back(e);
  }
  std::sort(slices.begin(), slices.end(), [](const Extent& a, const Extent& b) { return a.start < b.start; });
  std::vector<Extent> merged;
  for (const Extent& e : slices) {
    // Ends that wrap past 2^64 cannot be real; clip them (the area clip below cuts them anyway).
    Extent s = e;
    if (s.len > UINT64_MAX - s.start) s.len = UINT64_MAX - s.start;
    if (!merged.empty() && s.start <= merged.back().end()) {
      merged.back().len = std::max(merged.back().end(), s.end()) - merged.back().start;
    } else {
      merged.push_back(s);
    }
  }
  bool dirty = merged != reserved;
  for (Extent s : merged) {
    // Clip to the area.
    const BlockNo start = std::max(s.start, area_.start);
    const BlockNo end = std::min(s.end(), area_.end());
    if (start >= end) {
      dirty = true;
      continue;
    }
    if (start != s.start || end != s.end()) dirty = true;
    s = {start, end - start};
    bool foreign = false;
    std::vector<Extent> gaps;  // the parts no region holds yet
    slices_.for_each_piece(s, [&](const Extent& piece, RegionId owner) {
      if (owner == 0) gaps.push_back(piece);
      else if (owner != id) foreign = true;
    });
    if (foreign) {
      dirty = true;
      continue;
    }
    for (const Extent& g : gaps) {
      slices_.add(id, g);
      // Blocks already marked used stay used; free ones join the region.
      for (const Extent& f : free_.runs_within(g)) {
        free_.remove(f);
        r.free.insert(f);
      }
    }
  }
  if (dirty) changed_.insert(id);
}

void Allocator::release_region(RegionId id) {
  std::lock_guard lock(mu_);
  const auto it = regions_.find(id);
  if (id == 0 || it == regions_.end()) return;
  slices_.remove_region(id);
  // Once the slices are gone these blocks are outside every slice: global.
  it->second.free.for_each([&](const Extent& e) { free_.insert(e); });
  regions_.erase(it);
  changed_.erase(id);
}

void Allocator::set_region_growth(std::uint64_t blocks) {
  std::lock_guard lock(mu_);
  growth_ = blocks;
}

RegionInfo Allocator::info(RegionId id, const Region& r) const {
  RegionInfo out;
  out.id = id;
  out.reserved = slices_.slices_of(id);
  out.reserved_blocks = slices_.reserved_blocks(id);
  out.free_blocks = r.free.free_blocks();
  out.reclaimed_blocks = r.reclaimed;
  return out;
}

std::vector<RegionInfo> Allocator::regions() const {
  std::lock_guard lock(mu_);
  std::vector<RegionInfo> out;
  out.reserve(regions_.size());
  for (const auto& [id, r] : regions_) out.push_back(info(id, r));
  return out;
}

std::optional<RegionInfo> Allocator::region(RegionId id) const {
  std::lock_guard lock(mu_);
  const auto it = regions_.find(id);
  if (it == regions_.end()) return std::nullopt;
  return info(id, it->second);
}

RegionId Allocator::region_of(BlockNo b) const {
  std::lock_guard lock(mu_);
  return slices_.owner(b);
}

std::vector<RegionInfo> Allocator::take_changed_regions() {
  std::lock_guard lock(mu_);
  std::vector<RegionInfo> out;
  for (const RegionId id : changed_) {
    if (const auto it = regions_.find(id); it != regions_.end()) out.push_back(info(id, it->second));
  }
  changed_.clear();
  return out;
}

std::uint64_t Allocator::free_blocks() const {
  std::lock_guard lock(mu_);
  return free_total_;
}

std::uint64_t Allocator::pending_blocks() const {
  std::lock_guard lock(mu_);
  return pending_space_.free_blocks();
}

std::uint64_t Allocator::available_blocks() const {
  std::lock_guard lock(mu_);
  return grantable(false);
}

std::size_t Allocator::free_extent_count() const { return free_extents().size(); }

std::vector<Extent> Allocator::take_for_trim(Extent window, std::uint64_t min_len) {
  std::vector<Extent> taken;
  std::lock_guard lock(mu_);
  auto take_from = [&](FreeSpace& set) {
    for (const Extent& run : set.runs_within(window)) {
      // A run the window cuts counts with its full length.
      if (run.len < min_len && set.run_containing(run.start)->len < min_len) continue;
      set.remove(run);
      free_total_ -= run.len;
      taken.push_back(run);
    }
  };
  take_from(free_);
  for (auto& [id, r] : regions_) take_from(r.free);
  std::sort(taken.begin(), taken.end(), [](const Extent& a, const Extent& b) { return a.start < b.start; });
  return taken;
}

std::vector<Extent> Allocator::free_extents() const {
  std::vector<Extent> all;
  {
    std::lock_guard lock(mu_);
    all.reserve(free_.extent_count());
    free_.for_each([&](const Extent& e) { all.push_back(e); });
    for (const auto& [id, r] : regions_) r.free.for_each([&](const Extent& e) { all.push_back(e); });
  }
  std::sort(all.begin(), all.end(), [](const Extent& a, const Extent& b) { return a.start < b.start; });
  std::vector<Extent> out;
  out.reserve(all.size());
  for (const Extent& e : all) {
    if (!out.empty() && out.back().end() == e.start) {
      out.back().len += e.len;
    } else {
      out.push_back(e);
    }
  }
  return out;
}

bool Allocator::consistent() const {
  std::lock_guard lock(mu_);
  bool ok = free_.consistent() && pending_space_.consistent() && slices_.consistent();
  std::uint64_t total = free_.free_blocks(), long_total = free_.long_run_blocks();
  // Global free space lies outside every slice.
  free_.for_each([&](const Extent& e) {
    ok = ok && within(area_, e);
    slices_.for_each_piece(e, [&](const Extent&, RegionId owner) { ok = ok && owner == 0; });
    ok = ok && !pending_space_.intersects(e);
  });
  for (const auto& [id, r] : regions_) {
    ok = ok && id != 0 && r.free.consistent();
    total += r.free.free_blocks();
    long_total += r.free.long_run_blocks();
    // A region's free space lies inside its own slices.
    r.free.for_each([&, id = id](const Extent& e) {
      slices_.for_each_piece(e, [&](const Extent&, RegionId owner) { ok = ok && owner == id; });
      ok = ok && !pending_space_.intersects(e);
    });
  }
  // Every slice is inside the area and belongs to a live region.
  slices_.for_each([&](const RegionMap::Slice& s) {
    ok = ok && within(area_, s.extent) && regions_.count(s.region) == 1;
  });
  pending_space_.for_each([&](const Extent& e) { ok = ok && within(area_, e); });
  return ok && total == free_total_ && long_total == long_run_blocks_;
}

}  // namespace dhfs
