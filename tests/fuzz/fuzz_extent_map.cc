// libFuzzer target: the in-memory block map (fs/extent_map.cc) that every
// kExtentSet record of a checkpoint or journal is applied to, driven by a
// sequence of set() calls decoded from the input and compared block by
// block with a plain model over the first kWindow file blocks. Ranges the
// record decoder accepts but no real file has (holes reaching the end of
// the address space, mappings far out) are part of the mix.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <vector>

#include "fs/extent_map.h"

using namespace dhfs;

namespace {
constexpr std::uint64_t kWindow = 512;

struct Cell {
  BlockNo pblk;
  std::uint32_t flags;
};

[[noreturn]] void fail(const char* what, std::uint64_t at) {
  std::fprintf(stderr, "extent map: %s (block %llu)\n", what, static_cast<unsigned long long>(at));
  std::abort();
}

struct Input {
  const std::uint8_t* p;
  std::size_t n;
  std::uint64_t take(int bytes) {
    std::uint64_t v = 0;
    for (int i = 0; i < bytes && n > 0; ++i, ++p, --n) v |= std::uint64_t{*p} << (8 * i);
    return v;
  }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ExtentMap map;
  std::map<std::uint64_t, Cell> model;  // blocks below kWindow
  Input in{data, size};
  for (int op = 0; in.n > 0 && op < 2000; ++op) {
    const auto kind = in.take(1);
    std::uint64_t lblk = in.take(2) % kWindow, len = in.take(1) % 64 + 1;
    BlockNo pblk = (kind & 1) ? 0 : 1 + in.take(2);
    std::uint32_t flags = (kind >> 1) & 1;
    switch ((kind >> 2) % 4) {
      case 0: case 1: break;  // inside the window
      case 2:                  // a hole to the end of the address space
        pblk = 0;
        len = ~std::uint64_t{0} - lblk;
        break;
      case 3:  // far beyond the window: only self-consistency is checked
        lblk = (std::uint64_t{1} << 40) + in.take(4);
        if (pblk == 0) len = ~std::uint64_t{0} - lblk;
        else len = in.take(1) % 4 == 0 ? (std::uint64_t{1} << 32) + 5 : len;
        break;
    }
    std::vector<Segment> displaced;
    map.set(lblk, len, pblk, flags, &displaced);
    // What the model says the range held.
    std::uint64_t model_displaced = 0;
    for (auto it = model.lower_bound(lblk); it != model.end() && it->first - lblk < len;) {
      ++model_displaced;
      it = model.erase(it);
    }
    std::uint64_t in_window = 0;
    for (const Segment& s : displaced) {
      if (s.hole() || s.len == 0) fail("displaced a hole", s.lblk);
      if (s.lblk < kWindow) in_window += std::min(s.len, kWindow - s.lblk);
    }
    if (in_window != model_displaced) fail("displaced blocks differ", lblk);
    if (pblk != 0)
      for (std::uint64_t b = lblk; b < kWindow && b - lblk < len; ++b) model[b] = {pblk + (b - lblk), flags};

    // Compare the window and check the whole map for consistency.
    std::uint64_t b = 0;
    for (const Segment& s : map.segments(0, kWindow)) {
      if (s.lblk != b || s.len == 0) fail("segments not contiguous", b);
      for (std::uint64_t i = 0; i < s.len; ++i, ++b) {
        auto it = model.find(b);
        if (s.hole() != (it == model.end())) fail("hole differs", b);
        if (!s.hole() && (it->second.pblk != s.pblk + i || it->second.flags != s.flags)) fail("mapping differs", b);
      }
    }
    if (b != kWindow) fail("segments short", b);
    std::uint64_t total = 0, prev_end = 0;
    bool first = true;
    for (const FileExtent& e : map) {
      if (e.len == 0 || e.pblk == 0) fail("empty or unmapped extent", e.lblk);
      if (e.lblk + e.len < e.lblk) fail("extent wraps", e.lblk);
      if (!first && e.lblk < prev_end) fail("extents overlap", e.lblk);
      first = false;
      prev_end = e.lend();
      total += e.len;
    }
    if (total != map.mapped_blocks()) fail("mapped_blocks wrong", total);
    const std::uint64_t probe = in.take(2) % kWindow;
    auto f = map.find(probe);
    if (f.has_value() != (model.count(probe) != 0)) fail("find differs", probe);
    auto nd = map.next_data(probe);
    auto md = model.lower_bound(probe);
    if (md != model.end() && (!nd || *nd != md->first)) fail("next_data differs", probe);
    std::uint64_t mh = probe;
    while (mh < kWindow && model.count(mh)) ++mh;
    if (mh < kWindow && map.next_hole(probe) != mh) fail("next_hole differs", probe);
  }
  return 0;
}
