// UnsharedBlocks: the set of blocks whose sharing ended in a change not yet
// durable, against a plain list that does what it must do.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "fs/unshared_blocks.h"
#include "tests/unit/model_steps.h"

using dhfs::BlockNo;
using dhfs::Extent;
using dhfs::UnsharedBlocks;

namespace {

// Which blocks of `e` the entries cover, one flag per block.
std::vector<bool> covered(const std::vector<Extent>& entries, Extent e) {
  std::vector<bool> out(e.len, false);
  for (const Extent& x : entries)
    for (BlockNo b = std::max(x.start, e.start); b < std::min(x.end(), e.end()); ++b) out[b - e.start] = true;
  return out;
}

}  // namespace

TEST_CASE("unshared blocks: entries stay until their commit is durable", "[unshared]") {
  UnsharedBlocks u;
  u.add({100, 4});
  u.add({10, 1});
  CHECK(u.overlapping({0, 1000}) == std::vector<Extent>{{10, 1}, {100, 4}});
  CHECK(u.overlapping({102, 10}) == std::vector<Extent>{{102, 2}});  // clipped
  CHECK(u.overlapping({104, 10}).empty());
  u.durable(50);  // not committed yet: stays
  CHECK(u.size() == 2);
  u.committed(7);
  u.add({102, 8});  // overlaps an entry of the commit before
  CHECK(u.overlapping({99, 12}) == std::vector<Extent>{{100, 4}, {102, 8}});
  u.committed(9);
  u.durable(8);
  CHECK(u.size() == 1);
  CHECK(u.overlapping({0, 1000}) == std::vector<Extent>{{102, 8}});
  u.durable(9);
  CHECK(u.size() == 0);
  CHECK(u.overlapping({0, 1000}).empty());
  u.committed(10);  // nothing pending: nothing happens
  CHECK(u.size() == 0);
}

TEST_CASE("unshared blocks: random adds, commits and durable points match a list", "[unshared][random]") {
  std::mt19937_64 rng(0x7a11);
  UnsharedBlocks u;
  struct Entry {
    Extent e;
    std::uint64_t seq;  // 0: not committed
  };
  std::vector<Entry> model;
  std::uint64_t seq = 0, durable = 0;
  const int steps = dhfs::test::model_steps(20000);
  for (int step = 0; step < steps; ++step) {
    const int op = static_cast<int>(rng() % 10);
    if (op < 6) {
      const Extent e{rng() % 2000, 1 + rng() % (rng() % 8 == 0 ? 300 : 8)};
      u.add(e);
      model.push_back({e, 0});
    } else if (op < 8) {
      ++seq;
      u.committed(seq);
      for (Entry& m : model)
        if (m.seq == 0) m.seq = seq;
    } else if (op < 9 && durable < seq) {
      durable += 1 + rng() % (seq - durable);
      u.durable(durable);
      std::erase_if(model, [&](const Entry& m) { return m.seq != 0 && m.seq <= durable; });
    } else {
      const Extent q{rng() % 2100, 1 + rng() % 400};
      std::vector<Extent> want;
      for (const Entry& m : model) want.push_back(m.e);
      const std::vector<Extent> got = u.overlapping(q);
      INFO("step " << step << " query [" << q.start << ", " << q.end() << ")");
      CHECK(covered(got, q) == covered(want, q));
      CHECK(std::is_sorted(got.begin(), got.end(), [](const Extent& x, const Extent& y) { return x.start < y.start; }));
      for (const Extent& g : got) CHECK((g.len > 0 && g.start >= q.start && g.end() <= q.end()));
    }
    REQUIRE(u.size() == model.size());
  }
}
