// UnsharedBlocks: blocks whose reference count fell to one in a change that
// is not durable yet. A crash would bring their sharing back, so until the
// journal has that change on the device they are still written around
// (copied on write), never in place (see FileSystem::for_unshared_runs).
//
// Every copy-on-write of a clone's block adds one (the other file's block
// loses a reference), and they leave only when the journal's commit is
// durable: during 25% random 4 KiB overwrites of a 1 GiB clone that is tens
// of thousands of entries at once, looked up by every write and stamped by
// every commit. So entries are kept by start block (a lookup costs a tree
// search) and by commit (stamping and dropping touch only the entries
// concerned). A plain list scanned each time made those overwrites
// CPU-bound in the daemon.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "alloc/extent.h"

namespace dhfs {

class UnsharedBlocks {
 public:
  // `e` lost its other references in the change being made (not committed).
  void add(Extent e);
  // The change(s) added since the last call were committed as `seq`.
  void committed(std::uint64_t seq);
  // The journal is durable up to `seq`: entries committed up to it leave.
  void durable(std::uint64_t seq);
  // The entries overlapping `e`, clipped to it, by start block (they may
  // overlap each other).
  std::vector<Extent> overlapping(Extent e) const;
  std::size_t size() const;

 private:
  mutable std::mutex mu_;
  std::multimap<BlockNo, std::uint64_t> by_start_;  // start -> length, every entry
  std::uint64_t longest_ = 0;                       // of the entries since the set was last empty
  std::vector<Extent> pending_;                     // not committed yet
  std::deque<std::pair<std::uint64_t, std::vector<Extent>>> committed_;  // by sequence number
};

}  // namespace dhfs
