// dhfsctl SUBCOMMAND PATH ... [--json]
// Asks the dhfs daemon serving PATH about its state.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "fs/control.h"
#include "fs/format.h"
#include "fs/unique_fd.h"
#include "tools/cli.h"

using namespace dhfs;

namespace {

void usage(int code) {
  fmt::print(code ? stderr : stdout,
             "usage: dhfsctl [--json] df PATH\n"
             "       dhfsctl sync PATH\n"
             "  df PATH     space of the dhfs filesystem holding PATH\n"
             "  sync PATH   make everything done on that filesystem durable (sync(1) is not\n"
             "              forwarded to FUSE file systems by the kernel)\n");
  std::exit(code);
}

UniqueFd open_path(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) cli::die(1, "dhfsctl: {}: {}", path, std::strerror(errno));
  return fd;
}

// Issues a dhfs ioctl on PATH; any failure ends the program with one line.
void ioctl_or_die(const std::string& path, unsigned long request, void* arg) {
  UniqueFd fd = open_path(path);
  if (::ioctl(fd.get(), request, arg) == 0) return;
  int err = errno;
  if (err == ENOTTY || err == EINVAL || err == ENOSYS) cli::die(1, "dhfsctl: {}: not on a dhfs filesystem", path);
  cli::die(1, "dhfsctl: {}: {}", path, std::strerror(err));
}

template <typename T>
T query(const std::string& path, unsigned long request) {
  T out{};
  ioctl_or_die(path, request, &out);
  return out;
}

int cmd_df(const std::string& path, bool json) {
  auto s = query<ControlStats>(path, DHFS_IOC_STATS);
  Uuid u;
  std::memcpy(u.data(), s.uuid, 16);
  const std::uint64_t bs = s.block_size;
  const std::uint64_t total = s.total_blocks * bs, free = s.free_blocks * bs, avail = s.available_blocks * bs;
  const std::uint64_t physical = s.allocated_blocks * bs, meta = s.metadata_blocks * bs;
  if (json) {
    fmt::print(
        "{{\"uuid\":\"{}\",\"block_size\":{},\"size_bytes\":{},\"free_bytes\":{},\"available_bytes\":{},"
        "\"inodes\":{},\"logical_bytes\":{},\"physical_bytes\":{},\"metadata_bytes\":{}}}\n",
        uuid_to_string(u), bs, total, free, avail, s.inodes, s.logical_bytes, physical, meta);
    return 0;
  }
  fmt::print("filesystem    {}\n", uuid_to_string(u));
  fmt::print("size          {}\n", cli::human_bytes(total));
  fmt::print("used          {}\n", cli::human_bytes(total - free));
  fmt::print("available     {}\n", cli::human_bytes(avail));
  fmt::print("inodes        {}\n", s.inodes);
  fmt::print("logical data  {}   (sum of file sizes)\n", cli::human_bytes(s.logical_bytes));
  fmt::print("physical data {}   (blocks holding file data)\n", cli::human_bytes(physical));
  fmt::print("metadata      {}   (journal and checkpoint)\n", cli::human_bytes(meta));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") json = true;
    else if (a == "-h" || a == "--help") usage(0);
    else args.push_back(a);
  }
  if (args.empty()) usage(2);
  if (args[0] == "df" && args.size() == 2) return cmd_df(args[1], json);
  if (args[0] == "sync" && args.size() == 2) {
    ioctl_or_die(args[1], DHFS_IOC_SYNC, nullptr);
    return 0;
  }
  fmt::print(stderr, "dhfsctl: unknown command '{}'\n", args[0]);
  usage(2);
}
