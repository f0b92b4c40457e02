// Small helpers shared by the command-line tools.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <fmt/format.h>
#include <optional>
#include <string>
#include <string_view>

#include "fs/format.h"
#include "fs/units.h"

namespace dhfs::cli {

using dhfs::human_bytes;
using dhfs::parse_size;

// `TOOL -V` / `--version`: the release (the CMake project's version) and
// the on-disk format version this build reads and writes.
[[noreturn]] inline void print_version(std::string_view tool) {
  fmt::print("{} {} (dhfs on-disk format {})\n", tool, DHFS_VERSION, kFormatVersion);
  std::exit(0);
}

template <typename... Args>
[[noreturn]] void die(int code, fmt::format_string<Args...> f, Args&&... args) {
  fmt::print(stderr, f, std::forward<Args>(args)...);
  fmt::print(stderr, "\n");
  std::exit(code);
}

}  // namespace dhfs::cli
