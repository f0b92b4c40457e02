#include "fs/block_usage.h"

#include <algorithm>
#include <utility>

namespace dhfs {

std::vector<BlockRun> referenced_runs(const InodeTable& inodes) {
  // Sweep the start (+1) and end (-1) of every extent in device order.
  std::vector<std::pair<BlockNo, int>> edges;
  inodes.for_each([&](const Inode& in) {
    if (!in.map()) return;
    for (const FileExtent& e : *in.map()) {
      edges.push_back({e.pblk, +1});
      edges.push_back({e.pblk + e.len, -1});
    }
  });
  std::sort(edges.begin(), edges.end());
  std::vector<BlockRun> runs;
  int depth = 0;
  for (std::size_t i = 0; i + 1 < edges.size(); ++i) {
    depth += edges[i].second;
    const BlockNo start = edges[i].first, end = edges[i + 1].first;
    if (depth <= 0 || end <= start) continue;
    const auto refs = static_cast<std::uint32_t>(depth);
    if (!runs.empty() && runs.back().extent.end() == start && runs.back().refs == refs)
      runs.back().extent.len += end - start;
    else
      runs.push_back({{start, end - start}, refs});
  }
  return runs;
}

}  // namespace dhfs
