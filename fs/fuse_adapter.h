// The FUSE adapter: serves a FileSystem through the libfuse low-level API.
// It only translates requests and replies; all semantics live in the core.
#pragma once

#include <string>
#include <vector>

#include "fs/filesystem.h"

namespace dhfs {

struct FuseServerOptions {
  std::string mountpoint;
  std::string fsname;                  // shown as the mount source
  std::vector<std::string> fuse_opts;  // forwarded mount options
  bool foreground = false;
  bool debug = false;
  unsigned max_threads = 16;
};

// Mounts `fs`, daemonizes unless foreground, starts the core's background
// threads, serves requests until unmounted or signalled, and unmounts.
// Returns 0, or 1 after printing one line to stderr.
int serve_fuse(FileSystem& fs, const FuseServerOptions& opts);

}  // namespace dhfs
