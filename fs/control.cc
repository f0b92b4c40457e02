#include "fs/control.h"

#include <linux/fs.h>  // FITRIM, struct fstrim_range

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fs/filesystem.h"
#include "fs/request_stats.h"

namespace dhfs {

namespace {

template <typename T>
void put(std::vector<std::byte>& out, const T& v) {
  out.resize(sizeof v);
  std::memcpy(out.data(), &v, sizeof v);
}

ControlRegion to_control(const RegionReport& r) {
  ControlRegion c{};
  c.id = r.id;
  c.slices = r.slices;
  c.root_ino = r.root;
  c.reserved_blocks = r.reserved_blocks;
  c.used_blocks = r.used_blocks;
  c.shared_blocks = r.shared_blocks;
  c.reclaimed_blocks = r.reclaimed_blocks;
  std::string path = r.root_path;
  if (path.size() >= sizeof c.root_path) path = "..." + path.substr(path.size() - (sizeof c.root_path - 4));
  std::memcpy(c.root_path, path.c_str(), path.size() + 1);
  return c;
}

}  // namespace

int serve_control(FileSystem& fs, const RequestStats* requests, std::uint64_t ino, unsigned cmd, bool admin,
                  std::span<const std::byte> in, std::vector<std::byte>& out) {
  switch (cmd) {
    case FITRIM: {
      if (!admin) return -EPERM;
      fstrim_range range{};
      if (in.size() < sizeof range) return -EINVAL;
      std::memcpy(&range, in.data(), sizeof range);
      // As ext4: a range that starts past the end of the filesystem is an error.
      if (range.start >= fs.superblock().total_blocks * kBlockSize) return -EINVAL;
      std::uint64_t trimmed = 0;
      if (int rc = fs.trim(range.start, range.len, range.minlen, &trimmed); rc) return rc;
      range.len = trimmed;
      put(out, range);
      return 0;
    }
    case DHFS_IOC_STATS: {
      FsStats s = fs.stats();
      ControlStats c{};
      c.version = kControlVersion;
      c.block_size = kBlockSize;
      c.total_blocks = s.total_blocks;
      c.free_blocks = s.free_blocks;
      c.available_blocks = s.available_blocks;
      c.inodes = s.inodes;
      c.logical_bytes = s.logical_bytes;
      c.allocated_blocks = s.allocated_blocks;
      c.metadata_blocks = s.metadata_blocks;
      c.shared_blocks = s.shared_blocks;
      c.saved_blocks = s.saved_blocks;
      c.regions = s.regions;
      c.packed_files = s.packed_files;
      c.packed_bytes = s.packed_bytes;
      c.pack_blocks = s.pack_blocks;
      c.pack_unused_bytes = s.pack_unused_bytes;
      const Superblock sb = fs.superblock();
      c.filesystem_blocks = sb.total_blocks;
      std::memcpy(c.uuid, sb.uuid.data(), 16);
      put(out, c);
      return 0;
    }
    case DHFS_IOC_GROW: {
      if (!admin) return -EPERM;
      ControlGrow req{};
      if (in.size() < sizeof req) return -EINVAL;
      std::memcpy(&req, in.data(), sizeof req);
      GrowOutcome g;
      if (int rc = fs.grow(req.bytes, &g); rc) return rc;
      req.old_bytes = g.old_bytes;
      req.new_bytes = g.new_bytes;
      req.device_bytes = g.device_bytes;
      put(out, req);
      return 0;
    }
    case DHFS_IOC_SYNC:
      out.clear();
      return fs.syncfs();
    case DHFS_IOC_REGIONS: {
      ControlRegionList req{};
      std::memcpy(&req, in.data(), std::min(in.size(), sizeof req));
      auto all = fs.region_reports();
      ControlRegionList reply{};
      reply.version = kControlVersion;
      reply.total = static_cast<std::uint32_t>(all.size());
      for (const RegionReport& r : all) {
        if (r.id < req.cursor) continue;
        if (reply.count == std::size(reply.regions)) {
          reply.cursor = r.id;
          break;
        }
        reply.regions[reply.count++] = to_control(r);
      }
      put(out, reply);
      return 0;
    }
    case DHFS_IOC_REGION_SHOW: {
      RegionReport r;
      if (int rc = fs.region_report(ino, &r); rc) return rc;
      put(out, to_control(r));
      return 0;
    }
    case DHFS_IOC_REGION_CREATE: {
      ControlRegionCreate req{};
      std::memcpy(&req, in.data(), std::min(in.size(), sizeof req));
      out.clear();
      return fs.create_region(ino, req.bytes);
    }
    case DHFS_IOC_FRAG: {
      FragReport f;
      if (int rc = fs.frag_report(ino, &f); rc) return rc;
      ControlFrag c{};
      c.size = f.size;
      c.extents = f.extents;
      c.mapped_blocks = f.mapped_blocks;
      c.shared_blocks = f.shared_blocks;
      c.in_region_blocks = f.in_region_blocks;
      c.region = f.region;
      put(out, c);
      return 0;
    }
    case DHFS_IOC_DEDUP: {
      DedupOutcome d;
      if (int rc = fs.dedup_file(ino, &d); rc) return rc;
      ControlDedup c{};
      c.size = d.size;
      c.freed_blocks = d.freed_blocks;
      c.hashed = d.hashed;
      c.duplicate = d.duplicate;
      c.shared = d.shared;
      put(out, c);
      return 0;
    }
    case DHFS_IOC_REQUESTS: {
      if (!requests) break;
      ControlRequests c{};
      c.version = kControlVersion;
      const auto kinds = requests->snapshot();
      static_assert(std::size(ControlRequests{}.kinds) >= RequestStats::kOpcodes);
      for (std::size_t op = 0; op < kinds.size(); ++op) {
        if (kinds[op].count == 0) continue;
        c.kinds[c.count++] = {static_cast<std::uint32_t>(op), 0, kinds[op].count, kinds[op].total_ns,
                              kinds[op].max_ns};
      }
      put(out, c);
      return 0;
    }
  }
  return -ENOTTY;
}

}  // namespace dhfs
