// ExtentMap: the block map of one file, file block -> device block, as a
// sorted set of non-overlapping extents. Unmapped ranges are holes.
//
// A tree, not a sorted array: a clone after random copy-on-write holds one
// extent per few blocks (a 1 GiB clone with 25% of its blocks rewritten has
// ~65k), and inserting into an array that long moved megabytes per write
// while the metadata lock was held.
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "alloc/extent.h"

namespace dhfs {

struct FileExtent {
  std::uint64_t lblk = 0;   // first file block
  BlockNo pblk = 0;         // first device block
  std::uint32_t len = 0;    // blocks
  std::uint32_t flags = 0;  // kExtentUnwritten, ...

  std::uint64_t lend() const { return lblk + len; }
  friend bool operator==(const FileExtent&, const FileExtent&) = default;
};

// A piece of a file range: either mapped (pblk != 0) or a hole (pblk == 0).
struct Segment {
  std::uint64_t lblk = 0;
  std::uint64_t len = 0;
  BlockNo pblk = 0;
  std::uint32_t flags = 0;
  bool hole() const { return pblk == 0; }
};

class ExtentMap {
  using Tree = std::map<std::uint64_t, FileExtent>;  // key: the extent's lblk

 public:
  // Iterates the extents in file order.
  class const_iterator {
   public:
    using iterator_category = std::bidirectional_iterator_tag;
    using value_type = FileExtent;
    using difference_type = std::ptrdiff_t;
    using pointer = const FileExtent*;
    using reference = const FileExtent&;
    const_iterator() = default;
    explicit const_iterator(Tree::const_iterator it) : it_(it) {}
    reference operator*() const { return it_->second; }
    pointer operator->() const { return &it_->second; }
    const_iterator& operator++() {
      ++it_;
      return *this;
    }
    const_iterator& operator--() {
      --it_;
      return *this;
    }
    friend bool operator==(const const_iterator&, const const_iterator&) = default;

   private:
    Tree::const_iterator it_;
  };

  // Maps [lblk, lblk+len) to device blocks starting at pblk, or unmaps it
  // when pblk == 0. What the range mapped before is appended to `displaced`
  // (if given) as mapped segments.
  void set(std::uint64_t lblk, std::uint64_t len, BlockNo pblk, std::uint32_t flags,
           std::vector<Segment>* displaced = nullptr);

  // Splits [lblk, lblk+len) into consecutive mapped segments and holes.
  std::vector<Segment> segments(std::uint64_t lblk, std::uint64_t len) const;

  // The mapped extent holding `lblk`, if any.
  std::optional<FileExtent> find(std::uint64_t lblk) const;
  // The mapped extent holding the block just before `lblk` (allocation hint).
  std::optional<FileExtent> find_before(std::uint64_t lblk) const;
  // The first extent that ends after `lblk` (holds it or follows it).
  const_iterator first_ending_after(std::uint64_t lblk) const { return const_iterator(ending_after(lblk)); }

  // First mapped block >= lblk (SEEK_DATA), or nullopt.
  std::optional<std::uint64_t> next_data(std::uint64_t lblk) const;
  // First unmapped block >= lblk (SEEK_HOLE).
  std::uint64_t next_hole(std::uint64_t lblk) const;

  std::uint64_t mapped_blocks() const { return mapped_blocks_; }
  std::size_t extent_count() const { return tree().size(); }
  const_iterator begin() const { return const_iterator(tree().begin()); }
  const_iterator end() const { return const_iterator(tree().end()); }
  std::vector<FileExtent> extents() const { return {begin(), end()}; }  // a copy
  bool empty() const { return tree().empty(); }
  void clear() {
    tree_.reset();
    mapped_blocks_ = 0;
  }

 private:
  // The tree exists only while the file has extents: most files of an
  // image are empty or small, and an empty std::map costs 48 bytes.
  const Tree& tree() const;
  Tree& writable_tree();
  Tree::const_iterator ending_after(std::uint64_t lblk) const;
  Tree::iterator ending_after(std::uint64_t lblk);
  void insert_merged(FileExtent e);

  std::unique_ptr<Tree> tree_;
  std::uint64_t mapped_blocks_ = 0;
};

}  // namespace dhfs
