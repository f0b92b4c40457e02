// RunTree: disjoint block runs ordered by start block, where every subtree
// also knows the length of its longest run. That extra field is what lets
// FreeSpace answer "the first run at or after block b with at least n blocks"
// in O(log n); an ordered std::map would have to walk past every shorter run
// in between, which on a fragmented device is most of them.
//
// It is a treap (a search tree by start, a heap by random priority): of the
// balanced trees it needs the least code, and its expected depth is O(log n).
// Internal to FreeSpace; not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <utility>

#include "alloc/extent.h"

namespace dhfs {

class RunTree {
 public:
  RunTree() = default;
  RunTree(const RunTree& other);
  RunTree& operator=(const RunTree& other);
  RunTree(RunTree&&) noexcept = default;
  RunTree& operator=(RunTree&&) noexcept = default;
  ~RunTree() = default;

  // `run` must be non-empty and no run may start at run.start yet.
  void insert(Extent run);
  // A run must start at `start`.
  void erase(BlockNo start);

  // The first run starting at or after `from` with at least `min_len` blocks.
  std::optional<Extent> first_fit(BlockNo from, std::uint64_t min_len) const;
  std::optional<Extent> first_at_or_after(BlockNo b) const { return first_fit(b, 1); }
  // The last run starting at or before `b`.
  std::optional<Extent> last_at_or_before(BlockNo b) const;

  std::size_t size() const { return size_; }
  std::uint64_t longest() const;
  // Visits runs in ascending start order.
  void for_each(const std::function<void(const Extent&)>& fn) const;

  // Checks the search order, the heap order and every subtree's longest run
  // (O(n); for tests).
  bool consistent() const;

 private:
  struct Node;
  using Link = std::unique_ptr<Node>;
  struct Node {
    Extent run;
    std::uint64_t longest;  // longest run in this subtree
    std::uint64_t priority;
    Link left;
    Link right;
  };

  static std::uint64_t longest_of(const Link& n) { return n ? n->longest : 0; }
  static void update(Node& n);
  static std::pair<Link, Link> split(Link t, BlockNo key);
  static Link merge(Link a, Link b);
  static void erase(Link& t, BlockNo start);
  static const Node* find_first_fit(const Node* n, BlockNo from, std::uint64_t min_len);
  static Link clone(const Link& n);
  static void visit(const Link& n, const std::function<void(const Extent&)>& fn);
  static bool check(const Link& n, std::uint64_t max_priority);
  std::uint64_t next_priority();

  Link root_;
  std::size_t size_ = 0;
  std::uint64_t rng_state_ = 0;
};

}  // namespace dhfs
