// dhfsctl [--json] SUBCOMMAND PATH ...
// Asks the dhfs daemon serving PATH about its state, through ioctls on PATH
// (see fs/control.h).
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "fs/control.h"
#include "fs/device_claim.h"
#include "fs/format.h"
#include "fs/unique_fd.h"
#include "tools/cli.h"

using namespace dhfs;

namespace {

void usage(int code) {
  fmt::print(code ? stderr : stdout,
             "usage: dhfsctl [--json] COMMAND PATH\n"
             "  df PATH                       logical, physical and shared bytes of the filesystem\n"
             "  regions PATH                  every container region: root, reserved, used, shared\n"
             "  region show DIR               the region DIR allocates from\n"
             "  region create DIR [--size N]  make DIR the root of a new region (N: e.g. 256M)\n"
             "  frag FILE                     extents of FILE and how much of it lies in its region\n"
             "  sync PATH                     make everything done so far durable (the kernel does\n"
             "                                not forward sync(1) to FUSE file systems)\n"
             "  dedup PATH                    deduplicate every file below PATH against all stored\n"
             "                                files (byte-verified); progress on a terminal, summary\n"
             "  requests PATH                 FUSE requests the daemon answered since it mounted, by\n"
             "                                kind: count and the daemon's time (mean, max, total)\n"
             "  grow PATH [--size N]          grow the filesystem, mounted, to N (an image file is\n"
             "                                extended) or to all of its device (after lvextend or\n"
             "                                losetup -c); root only\n"
             "PATH is any path inside a mounted dhfs. dhfsctl -V (--version) names the release.\n");
  std::exit(code);
}

UniqueFd open_path(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) cli::die(1, "dhfsctl: {}: {}", path, std::strerror(errno));
  return fd;
}

// ENOTTY or ENOSYS: the filesystem holding PATH does not know the request.
// A dhfs mount that does not is served by a daemon older than this dhfsctl
// (an ioctl's number includes the size of its argument, so a request whose
// reply grew is new to an older daemon as well).
[[noreturn]] void die_unknown_request(const std::string& path) {
  if (mount_type_of(path) == "fuse.dhfs")
    cli::die(1,
             "dhfsctl: {}: the dhfs daemon serving this mount is older than this dhfsctl and does not know "
             "the command; unmount and mount again to run the installed dhfs",
             path);
  cli::die(1, "dhfsctl: {}: not on a dhfs filesystem", path);
}

// Issues a dhfs ioctl on PATH; any failure ends the program with one line.
void ioctl_or_die(const std::string& path, unsigned long request, void* arg) {
  UniqueFd fd = open_path(path);
  if (::ioctl(fd.get(), request, arg) == 0) return;
  int err = errno;
  if (err == ENOTTY || err == ENOSYS) die_unknown_request(path);
  if (err == ENODATA) cli::die(1, "dhfsctl: {}: not inside a container region", path);
  cli::die(1, "dhfsctl: {}: {}", path, std::strerror(err));
}

template <typename T>
T query(const std::string& path, unsigned long request) {
  T out{};
  ioctl_or_die(path, request, &out);
  return out;
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", c);
    else out += c;
  }
  return out + "\"";
}

int cmd_df(const std::string& path, bool json) {
  auto s = query<ControlStats>(path, DHFS_IOC_STATS);
  Uuid u;
  std::memcpy(u.data(), s.uuid, 16);
  const std::uint64_t bs = s.block_size;
  const std::uint64_t total = s.total_blocks * bs, free = s.free_blocks * bs, avail = s.available_blocks * bs;
  const std::uint64_t referenced = s.allocated_blocks * bs;
  const std::uint64_t physical = (s.allocated_blocks - s.saved_blocks) * bs;
  const std::uint64_t shared = s.shared_blocks * bs, saved = s.saved_blocks * bs, meta = s.metadata_blocks * bs;
  const double ratio = physical ? static_cast<double>(s.logical_bytes) / static_cast<double>(physical) : 1.0;
  if (json) {
    fmt::print(
        "{{\"uuid\":\"{}\",\"block_size\":{},\"size_bytes\":{},\"used_bytes\":{},\"free_bytes\":{},"
        "\"available_bytes\":{},\"inodes\":{},\"logical_bytes\":{},\"referenced_bytes\":{},\"physical_bytes\":{},"
        "\"shared_bytes\":{},\"saved_bytes\":{},\"dedup_ratio\":{:.3f},\"metadata_bytes\":{},\"regions\":{},"
        "\"packed_files\":{},\"packed_bytes\":{},\"pack_blocks\":{},\"pack_unused_bytes\":{}}}\n",
        uuid_to_string(u), bs, total, total - free, free, avail, s.inodes, s.logical_bytes, referenced, physical,
        shared, saved, ratio, meta, s.regions, s.packed_files, s.packed_bytes, s.pack_blocks, s.pack_unused_bytes);
    return 0;
  }
  fmt::print("filesystem     {}\n", uuid_to_string(u));
  fmt::print("size           {}\n", cli::human_bytes(total));
  fmt::print("used           {}\n", cli::human_bytes(total - free));
  fmt::print("available      {}\n", cli::human_bytes(avail));
  fmt::print("inodes         {}\n", s.inodes);
  fmt::print("logical data   {}   (sum of file sizes)\n", cli::human_bytes(s.logical_bytes));
  fmt::print("physical data  {}   (device blocks holding file data)\n", cli::human_bytes(physical));
  fmt::print("shared data    {}   (blocks referenced by several files; sharing saves {})\n",
             cli::human_bytes(shared), cli::human_bytes(saved));
  fmt::print("packed files   {} holding {} in {} blocks   (small files sharing blocks, counted in shared data;\n"
             "               {} of those blocks unused: removed files' bytes, open blocks' free ends)\n",
             s.packed_files, cli::human_bytes(s.packed_bytes), s.pack_blocks,
             cli::human_bytes(s.pack_unused_bytes));
  fmt::print("dedup ratio    {:.2f}   (logical / physical)\n", ratio);
  fmt::print("metadata       {}   (journal and checkpoint)\n", cli::human_bytes(meta));
  fmt::print("regions        {}\n", s.regions);
  return 0;
}

std::string region_json(const ControlRegion& r) {
  return fmt::format(
      "{{\"id\":{},\"root\":{},\"root_ino\":{},\"reserved_bytes\":{},\"used_bytes\":{},\"shared_bytes\":{},"
      "\"reclaimed_bytes\":{},\"slices\":{}}}",
      r.id, json_string(r.root_path), r.root_ino, r.reserved_blocks * kBlockSize, r.used_blocks * kBlockSize,
      r.shared_blocks * kBlockSize, r.reclaimed_blocks * kBlockSize, r.slices);
}

void print_region_row(const ControlRegion& r) {
  fmt::print("{:>6} {:>10} {:>10} {:>10} {:>10} {:>6}  {}\n", r.id, cli::human_bytes(r.reserved_blocks * kBlockSize),
             cli::human_bytes(r.used_blocks * kBlockSize), cli::human_bytes(r.shared_blocks * kBlockSize),
             cli::human_bytes(r.reclaimed_blocks * kBlockSize), r.slices, r.root_path);
}

void print_region_header() {
  fmt::print("{:>6} {:>10} {:>10} {:>10} {:>10} {:>6}  {}\n", "region", "reserved", "used", "shared", "reclaimed",
             "slices", "root");
}

int cmd_regions(const std::string& path, bool json) {
  std::vector<ControlRegion> all;
  ControlRegionList list{};
  do {
    std::uint32_t cursor = list.cursor;
    list = ControlRegionList{};
    list.cursor = cursor;
    ioctl_or_die(path, DHFS_IOC_REGIONS, &list);
    all.insert(all.end(), list.regions, list.regions + list.count);
  } while (list.cursor != 0);
  if (json) {
    std::string items;
    for (const auto& r : all) items += (items.empty() ? "" : ",") + region_json(r);
    fmt::print("{{\"regions\":[{}]}}\n", items);
    return 0;
  }
  print_region_header();
  for (const auto& r : all) print_region_row(r);
  return 0;
}

int cmd_region_show(const std::string& path, bool json) {
  auto r = query<ControlRegion>(path, DHFS_IOC_REGION_SHOW);
  if (json) {
    fmt::print("{}\n", region_json(r));
    return 0;
  }
  print_region_header();
  print_region_row(r);
  return 0;
}

int cmd_region_create(const std::string& path, std::uint64_t bytes, bool json) {
  ControlRegionCreate req{bytes};
  ioctl_or_die(path, DHFS_IOC_REGION_CREATE, &req);
  return cmd_region_show(path, json);
}

int cmd_frag(const std::string& path, bool json) {
  auto f = query<ControlFrag>(path, DHFS_IOC_FRAG);
  const double mean = f.extents ? static_cast<double>(f.mapped_blocks * kBlockSize) / static_cast<double>(f.extents) : 0;
  const double in_region = f.mapped_blocks ? static_cast<double>(f.in_region_blocks) / static_cast<double>(f.mapped_blocks) : 0;
  if (json) {
    fmt::print(
        "{{\"path\":{},\"size_bytes\":{},\"extents\":{},\"mapped_bytes\":{},\"mean_extent_bytes\":{:.0f},"
        "\"shared_bytes\":{},\"region\":{},\"in_region_fraction\":{:.4f}}}\n",
        json_string(path), f.size, f.extents, f.mapped_blocks * kBlockSize, mean, f.shared_blocks * kBlockSize,
        f.region, in_region);
    return 0;
  }
  fmt::print("file             {}\n", path);
  fmt::print("size             {}\n", cli::human_bytes(f.size));
  fmt::print("extents          {}\n", f.extents);
  fmt::print("mean extent      {}\n", cli::human_bytes(static_cast<std::uint64_t>(mean)));
  fmt::print("shared           {}\n", cli::human_bytes(f.shared_blocks * kBlockSize));
  if (f.region)
    fmt::print("in its region    {:.1f}%   (region {})\n", 100 * in_region, f.region);
  else
    fmt::print("in its region    -   (not in a region)\n");
  return 0;
}

// Regular files below `root` on the same filesystem, symlinks not followed.
std::vector<std::string> files_below(const std::string& root) {
  namespace fs = std::filesystem;
  struct stat top{};
  if (::lstat(root.c_str(), &top) != 0) cli::die(1, "dhfsctl: {}: {}", root, std::strerror(errno));
  std::vector<std::string> files;
  if (S_ISREG(top.st_mode)) return {root};
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec), end;
  if (ec) cli::die(1, "dhfsctl: {}: {}", root, ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    struct stat st{};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    if (st.st_dev != top.st_dev) {
      if (S_ISDIR(st.st_mode)) it.disable_recursion_pending();  // another filesystem mounted here
      continue;
    }
    if (S_ISREG(st.st_mode)) files.push_back(it->path().string());
  }
  if (ec) cli::die(1, "dhfsctl: walking {}: {}", root, ec.message());
  return files;
}

// A progress bar on stderr, redrawn at most ten times a second.
class ProgressBar {
 public:
  explicit ProgressBar(std::size_t total) : total_(total), on_(::isatty(STDERR_FILENO)) {}
  ~ProgressBar() {
    if (on_ && drawn_) fmt::print(stderr, "\n");
  }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void update(std::size_t done, std::uint64_t saved, bool last = false) {
    if (!on_) return;
    auto now = std::chrono::steady_clock::now();
    if (!last && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    drawn_ = true;
    constexpr std::size_t kWidth = 30;
    const std::size_t filled = total_ ? done * kWidth / total_ : kWidth;
    fmt::print(stderr, "\rdedup [{}{}] {:3}%  {}/{} files  {} saved", std::string(filled, '#'),
               std::string(kWidth - filled, '-'), total_ ? done * 100 / total_ : 100, done, total_,
               cli::human_bytes(saved));
  }

 private:
  std::size_t total_;
  bool on_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_draw_;
};

int cmd_dedup(const std::string& path, bool json) {
  query<ControlStats>(path, DHFS_IOC_STATS);  // a clear error if PATH is not on dhfs
  const std::vector<std::string> files = files_below(path);
  std::uint64_t scanned = 0, hashed = 0, duplicates = 0, shared = 0, saved = 0, bytes = 0, errors = 0;
  std::string first_error;
  ProgressBar bar(files.size());
  for (const std::string& f : files) {
    UniqueFd fd(::open(f.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    ControlDedup d{};
    if (!fd || ::ioctl(fd.get(), DHFS_IOC_DEDUP, &d) != 0) {
      if (errno != ENOENT) {  // (removed meanwhile: nothing to do)
        if (first_error.empty()) first_error = fmt::format("{}: {}", f, std::strerror(errno));
        ++errors;
      }
    } else {
      ++scanned;
      bytes += d.size;
      hashed += d.hashed;
      duplicates += d.duplicate;
      shared += d.shared;
      saved += d.freed_blocks * kBlockSize;
    }
    bar.update(scanned + errors, saved);
  }
  bar.update(scanned + errors, saved, true);
  if (json) {
    fmt::print("{{\"files_scanned\":{},\"bytes_scanned\":{},\"files_hashed\":{},\"duplicates\":{},"
               "\"newly_shared\":{},\"bytes_saved\":{},\"errors\":{}}}\n",
               scanned, bytes, hashed, duplicates, shared, saved, errors);
  } else {
    fmt::print("files scanned     {} ({})\n", scanned, cli::human_bytes(bytes));
    fmt::print("duplicates found  {} (newly shared: {})\n", duplicates, shared);
    fmt::print("bytes saved       {}\n", cli::human_bytes(saved));
    if (errors) fmt::print("errors            {} (first: {})\n", errors, first_error);
  }
  if (errors) {
    fmt::print(stderr, "dhfsctl: {} files could not be deduplicated; first: {}\n", errors, first_error);
    return 1;
  }
  return 0;
}

// The name of a FUSE opcode as linux/fuse.h spells it, without "FUSE_".
std::string opcode_name(std::uint32_t op) {
  static constexpr const char* kNames[] = {
      nullptr,     "LOOKUP",    "FORGET",      "GETATTR",   "SETATTR",     "READLINK",     "SYMLINK",
      nullptr,     "MKNOD",     "MKDIR",       "UNLINK",    "RMDIR",       "RENAME",       "LINK",
      "OPEN",      "READ",      "WRITE",       "STATFS",    "RELEASE",     nullptr,        "FSYNC",
      "SETXATTR",  "GETXATTR",  "LISTXATTR",   "REMOVEXATTR", "FLUSH",     "INIT",         "OPENDIR",
      "READDIR",   "RELEASEDIR", "FSYNCDIR",   "GETLK",     "SETLK",       "SETLKW",       "ACCESS",
      "CREATE",    "INTERRUPT", "BMAP",        "DESTROY",   "IOCTL",       "POLL",         "NOTIFY_REPLY",
      "BATCH_FORGET", "FALLOCATE", "READDIRPLUS", "RENAME2", "LSEEK",      "COPY_FILE_RANGE", "SETUPMAPPING",
      "REMOVEMAPPING", "SYNCFS",  "TMPFILE",     "STATX",       "COPY_FILE_RANGE_64"};
  if (op < std::size(kNames) && kNames[op]) return kNames[op];
  return fmt::format("opcode {}", op);
}

int cmd_requests(const std::string& path, bool json) {
  auto r = query<ControlRequests>(path, DHFS_IOC_REQUESTS);
  std::vector<ControlRequestKind> kinds(r.kinds, r.kinds + std::min<std::size_t>(r.count, std::size(r.kinds)));
  std::sort(kinds.begin(), kinds.end(), [](const auto& a, const auto& b) { return a.total_ns > b.total_ns; });
  std::uint64_t count = 0, total_ns = 0;
  for (const auto& k : kinds) {
    count += k.count;
    total_ns += k.total_ns;
  }
  if (json) {
    std::vector<std::string> items;
    for (const auto& k : kinds)
      items.push_back(fmt::format("{{\"request\":{},\"opcode\":{},\"count\":{},\"total_ns\":{},\"max_ns\":{}}}",
                                  json_string(opcode_name(k.opcode)), k.opcode, k.count, k.total_ns, k.max_ns));
    fmt::print("{{\"count\":{},\"total_ns\":{},\"requests\":[{}]}}\n", count, total_ns, fmt::join(items, ","));
    return 0;
  }
  fmt::print("{:<16} {:>10} {:>10} {:>10} {:>10}\n", "request", "count", "mean us", "max us", "total s");
  auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1e3; };
  auto mean_us = [&](std::uint64_t ns, std::uint64_t n) { return n ? us(ns) / static_cast<double>(n) : 0.0; };
  for (const auto& k : kinds)
    fmt::print("{:<16} {:>10} {:>10.1f} {:>10.1f} {:>10.3f}\n", opcode_name(k.opcode), k.count,
               mean_us(k.total_ns, k.count), us(k.max_ns), static_cast<double>(k.total_ns) / 1e9);
  fmt::print("{:<16} {:>10} {:>10.1f} {:>10} {:>10.3f}\n", "all", count, mean_us(total_ns, count), "",
             static_cast<double>(total_ns) / 1e9);
  fmt::print("(the daemon's time, from reading a request to handing over its reply; the rest of a\n"
             " request's time is its trip through the kernel. FORGET and INTERRUPT count with no time.)\n");
  return 0;
}

int cmd_grow(const std::string& path, std::uint64_t bytes, bool json) {
  ControlGrow g{bytes, 0, 0, 0};
  UniqueFd fd = open_path(path);
  if (::ioctl(fd.get(), DHFS_IOC_GROW, &g) != 0) {
    const int err = errno;
    if (err == EINVAL && bytes != 0) {
      const std::uint64_t size = query<ControlStats>(path, DHFS_IOC_STATS).filesystem_blocks * kBlockSize;
      if (bytes < size)
        cli::die(1, "dhfsctl: {}: the filesystem is {}; dhfs grows but cannot shrink", path, cli::human_bytes(size));
    }
    if (err == EFBIG)
      cli::die(1, "dhfsctl: {}: the device is smaller than {}; grow it first (lvextend, losetup -c)", path,
               bytes ? cli::human_bytes(bytes) : "that");
    if (err == EPERM) cli::die(1, "dhfsctl: {}: only root can grow a filesystem", path);
    if (err == ENOTTY || err == ENOSYS) die_unknown_request(path);
    cli::die(1, "dhfsctl: {}: {}", path, std::strerror(err));
  }
  if (json) {
    fmt::print("{{\"old_bytes\":{},\"new_bytes\":{},\"device_bytes\":{}}}\n", g.old_bytes, g.new_bytes,
               g.device_bytes);
  } else if (g.new_bytes == g.old_bytes) {
    fmt::print("{}: already {}; the device has {}\n", path, cli::human_bytes(g.old_bytes),
               cli::human_bytes(g.device_bytes));
  } else {
    fmt::print("{}: grown from {} to {}\n", path, cli::human_bytes(g.old_bytes), cli::human_bytes(g.new_bytes));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::optional<std::uint64_t> size;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") json = true;
    else if (a == "-h" || a == "--help") usage(0);
    else if (a == "-V" || a == "--version") cli::print_version("dhfsctl");
    else if (a == "--size") {
      if (++i >= argc) cli::die(2, "dhfsctl: --size needs an argument");
      size = cli::parse_size(argv[i]);
      if (!size) cli::die(2, "dhfsctl: invalid size '{}'", argv[i]);
    } else if (a.starts_with("-")) cli::die(2, "dhfsctl: unknown option '{}'", a);
    else args.push_back(a);
  }
  if (args.empty()) usage(2);
  const std::string& cmd = args[0];
  if (cmd == "df" && args.size() == 2) return cmd_df(args[1], json);
  if (cmd == "regions" && args.size() == 2) return cmd_regions(args[1], json);
  if (cmd == "frag" && args.size() == 2) return cmd_frag(args[1], json);
  if (cmd == "region" && args.size() == 3 && args[1] == "show") return cmd_region_show(args[2], json);
  if (cmd == "region" && args.size() == 3 && args[1] == "create") return cmd_region_create(args[2], size.value_or(0), json);
  if (cmd == "dedup" && args.size() == 2) return cmd_dedup(args[1], json);
  if (cmd == "requests" && args.size() == 2) return cmd_requests(args[1], json);
  if (cmd == "grow" && args.size() == 2) return cmd_grow(args[1], size.value_or(0), json);
  if (cmd == "sync" && args.size() == 2) {
    ioctl_or_die(args[1], DHFS_IOC_SYNC, nullptr);
    return 0;
  }
  fmt::print(stderr, "dhfsctl: unknown command or wrong arguments: {}\n", fmt::join(args, " "));
  usage(2);
}
