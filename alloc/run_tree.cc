#include "alloc/run_tree.h"

#include <algorithm>
#include <utility>

namespace dhfs {

RunTree::RunTree(const RunTree& other)
    : root_(clone(other.root_)), size_(other.size_), rng_state_(other.rng_state_) {}

RunTree& RunTree::operator=(const RunTree& other) {
  if (this != &other) {
    root_ = clone(other.root_);
    size_ = other.size_;
    rng_state_ = other.rng_state_;
  }
  return *this;
}

// splitmix64: cheap, well mixed, and deterministic so that test failures
// reproduce. The priorities only need to be independent of the keys.
std::uint64_t RunTree::next_priority() {
  std::uint64_t z = (rng_state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void RunTree::update(Node& n) {
  n.longest = std::max({n.run.len, longest_of(n.left), longest_of(n.right)});
}

// Splits `t` into the runs starting before `key` and the others.
std::pair<RunTree::Link, RunTree::Link> RunTree::split(Link t, BlockNo key) {
  if (!t) return {};
  if (t->run.start < key) {
    auto [lo, hi] = split(std::move(t->right), key);
    t->right = std::move(lo);
    update(*t);
    return {std::move(t), std::move(hi)};
  }
  auto [lo, hi] = split(std::move(t->left), key);
  t->left = std::move(hi);
  update(*t);
  return {std::move(lo), std::move(t)};
}

// Joins two treaps where every run of `a` starts before every run of `b`.
RunTree::Link RunTree::merge(Link a, Link b) {
  if (!a) return b;
  if (!b) return a;
  if (a->priority > b->priority) {
    a->right = merge(std::move(a->right), std::move(b));
    update(*a);
    return a;
  }
  b->left = merge(std::move(a), std::move(b->left));
  update(*b);
  return b;
}

void RunTree::insert(Extent run) {
  auto node = std::make_unique<Node>(Node{run, run.len, next_priority(), nullptr, nullptr});
  auto [lo, hi] = split(std::move(root_), run.start);
  root_ = merge(merge(std::move(lo), std::move(node)), std::move(hi));
  ++size_;
}

void RunTree::erase(Link& t, BlockNo start) {
  if (t->run.start == start) {
    t = merge(std::move(t->left), std::move(t->right));
    return;
  }
  erase(start < t->run.start ? t->left : t->right, start);
  update(*t);
}

void RunTree::erase(BlockNo start) {
  erase(root_, start);
  --size_;
}

// Runs before `from` are passed on the right; a subtree whose longest run is
// too short is skipped whole. Once the search enters a subtree lying wholly at
// or after `from` whose longest run fits, it is sure to succeed there, so it
// follows a single path down: O(depth) overall.
const RunTree::Node* RunTree::find_first_fit(const Node* n, BlockNo from, std::uint64_t min_len) {
  if (!n || n->longest < min_len) return nullptr;
  if (n->run.start < from) return find_first_fit(n->right.get(), from, min_len);
  if (const Node* left = find_first_fit(n->left.get(), from, min_len)) return left;
  if (n->run.len >= min_len) return n;
  return find_first_fit(n->right.get(), from, min_len);
}

std::optional<Extent> RunTree::first_fit(BlockNo from, std::uint64_t min_len) const {
  const Node* n = find_first_fit(root_.get(), from, std::max<std::uint64_t>(min_len, 1));
  if (!n) return std::nullopt;
  return n->run;
}

std::optional<Extent> RunTree::last_at_or_before(BlockNo b) const {
  std::optional<Extent> found;
  const Node* n = root_.get();
  while (n) {
    if (n->run.start <= b) {
      found = n->run;
      n = n->right.get();
    } else {
      n = n->left.get();
    }
  }
  return found;
}

std::uint64_t RunTree::longest() const { return longest_of(root_); }

RunTree::Link RunTree::clone(const Link& n) {
  if (!n) return nullptr;
  return std::make_unique<Node>(Node{n->run, n->longest, n->priority, clone(n->left), clone(n->right)});
}

void RunTree::visit(const Link& n, const std::function<void(const Extent&)>& fn) {
  if (!n) return;
  visit(n->left, fn);
  fn(n->run);
  visit(n->right, fn);
}

void RunTree::for_each(const std::function<void(const Extent&)>& fn) const { visit(root_, fn); }

bool RunTree::check(const Link& n, std::uint64_t max_priority) {
  if (!n) return true;
  const bool ok = n->priority <= max_priority && !n->run.empty() &&
                  n->longest == std::max({n->run.len, longest_of(n->left), longest_of(n->right)});
  return ok && check(n->left, n->priority) && check(n->right, n->priority);
}

bool RunTree::consistent() const {
  std::size_t count = 0;
  bool ascending = true;
  std::optional<BlockNo> prev;
  for_each([&](const Extent& run) {
    ascending = ascending && (!prev || *prev < run.start);
    prev = run.start;
    ++count;
  });
  return ascending && count == size_ && check(root_, UINT64_MAX);
}

}  // namespace dhfs
