// Helpers of the mounted tests that talk to dhfsctl (its --json output is
// flat enough to read without a JSON library) and small file helpers the
// region and sharing tests share.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fixture.h"

namespace dhfs_test {

std::string dhfsctl();

// The value of "key" in a flat JSON object (numbers and plain strings);
// empty if absent.
std::string json_field(const std::string& json, const std::string& key);
// The same as a number; the test fails if it is absent.
std::uint64_t json_u64(const std::string& json, const std::string& key);

RunResult ctl(const std::vector<std::string>& args);
// `dhfsctl --json ARGS`; the test fails unless it exits 0.
std::string ctl_json(const std::vector<std::string>& args);
// `dhfsctl sync ROOT`: everything written so far is durable.
void ctl_sync(const MountedFs& fs);

// `dhfsctl --json df`.
struct Df {
  std::uint64_t physical = 0, saved = 0, shared = 0, logical = 0;
};
Df df(const MountedFs& fs);

// Writes `data` to a new file through the mount and fsyncs it.
void write_durable(const std::string& path, std::string_view data);
// mkdir -p of a path relative to the mount.
void mkdirs(const MountedFs& fs, const std::string& rel);
// sync, then drop the page cache, dentries and inodes.
void drop_caches();

}  // namespace dhfs_test
