#include "fs/region_policy.h"

#include <fmt/format.h>

namespace dhfs {

std::optional<RegionPolicy> RegionPolicy::parse(std::string_view text, std::string& error) {
  RegionPolicy p;
  p.text_ = std::string(text);
  std::size_t pos = 0;
  while (pos <= text.size() && !text.empty()) {
    std::size_t colon = text.find(':', pos);
    std::string_view item = text.substr(pos, colon == std::string_view::npos ? std::string_view::npos : colon - pos);
    pos = colon == std::string_view::npos ? text.size() + 1 : colon + 1;
    if (item.empty()) continue;
    Pattern pat;
    if (item.front() == '!') {
      pat.exclude = true;
      item.remove_prefix(1);
    }
    std::size_t s = 0;
    while (s <= item.size()) {
      std::size_t slash = item.find('/', s);
      std::string_view part = item.substr(s, slash == std::string_view::npos ? std::string_view::npos : slash - s);
      if (part.empty() || part == "." || part == "..") {
        error = fmt::format("region pattern '{}': empty, '.' or '..' component", item);
        return std::nullopt;
      }
      pat.parts.emplace_back(part);
      if (slash == std::string_view::npos) break;
      s = slash + 1;
    }
    p.depth_ = std::max(p.depth_, pat.parts.size());
    p.patterns_.push_back(std::move(pat));
  }
  return p;
}

bool RegionPolicy::match_one(const Pattern& p, const std::vector<std::string>& tail) {
  if (tail.size() < p.parts.size()) return false;
  for (std::size_t i = 0; i < p.parts.size(); ++i) {
    const std::string& want = p.parts[p.parts.size() - 1 - i];
    if (want != "*" && want != tail[i]) return false;
  }
  return true;
}

bool RegionPolicy::matches(const std::vector<std::string>& tail) const {
  bool match = false;
  for (const Pattern& p : patterns_) {
    if (!match_one(p, tail)) continue;
    if (p.exclude) return false;
    match = true;
  }
  return match;
}

}  // namespace dhfs
