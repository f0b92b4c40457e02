// RegionPolicy: which directories become container region roots by
// themselves, and how much a new region reserves.
//
// Patterns are matched against the last components of a new directory's
// path: "overlay2/*" matches any directory created directly in a directory
// named overlay2 (docker's overlay2 layers and container layers),
// "vfs/dir/*" docker's vfs driver, "snapshots/*" containerd's overlayfs
// snapshotter. A pattern starting with '!' excludes: docker keeps its short
// symlinks in overlay2/l, which holds no data, and its image metadata in
// image/overlay2/{layerdb,imagedb,distribution} (small JSON and digest files;
// "overlay2/*" alone would make each of them a region with a reservation).
// Patterns are separated by ':' in the option string (',' separates mount
// options).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dhfs {

inline constexpr std::string_view kDefaultRegionPatterns = "overlay2/*:!overlay2/l:!image/overlay2/*:vfs/dir/*:snapshots/*";
inline constexpr std::uint64_t kDefaultRegionBytes = 64ULL << 20;
// The copy-on-write unit unless the cow_unit option says otherwise. Chosen
// from bench/ (1 GiB clone, 25% random 4 KiB overwrites, then a cold read;
// bench/results/2026-11-28-vm-clone-1g-cow-units): since copied blocks are
// placed side by side in file order and a read merges nearby pieces, 4 KiB
// keeps the clone's cold read at about 0.88x an unshared file's (median of
// 5; single runs vary from 0.63x to 1.11x on the VM) and writes more than
// twice as fast as 32 or 64 KiB (35-39k overwrites/s, about 0.7-0.85x:
// their first write to a unit needs the rest of the unit, read ahead).
inline constexpr std::uint64_t kDefaultCowUnitBytes = 4ULL << 10;

class RegionPolicy {
 public:
  // Parses "a/*:!a/l:..." (empty string: no automatic regions). Returns
  // nullopt with `error` for a malformed list.
  static std::optional<RegionPolicy> parse(std::string_view patterns, std::string& error);

  // `path_tail` holds the last components of the new directory's path,
  // innermost first: {name, parent's name, grandparent's name, ...}; it has
  // depth() entries, or fewer near the root.
  bool matches(const std::vector<std::string>& path_tail) const;
  std::size_t depth() const { return depth_; }
  const std::string& text() const { return text_; }

 private:
  struct Pattern {
    bool exclude = false;
    std::vector<std::string> parts;  // outermost first, "*" matches any name
  };
  static bool match_one(const Pattern& p, const std::vector<std::string>& tail);

  std::vector<Pattern> patterns_;
  std::size_t depth_ = 0;
  std::string text_;
};

}  // namespace dhfs
