#include "fs/fuse_bdi.h"

#include <fstream>
#include <sstream>

namespace dhfs {

namespace {
// Mount points in mountinfo escape space, tab, newline and backslash as
// three octal digits.
std::string escape_mountinfo(const std::string& path) {
  std::string out;
  for (char c : path) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\\') {
      const auto u = static_cast<unsigned char>(c);
      out += '\\';
      out += static_cast<char>('0' + ((u >> 6) & 7));
      out += static_cast<char>('0' + ((u >> 3) & 7));
      out += static_cast<char>('0' + (u & 7));
    } else {
      out += c;
    }
  }
  return out;
}
}  // namespace

std::string mount_device_id(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  const std::string want = escape_mountinfo(mountpoint);
  std::string line, found;
  while (std::getline(in, line)) {
    // id parent maj:min root mount-point ...
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    if (fields >> id >> parent >> dev >> root >> point && point == want) found = dev;
  }
  return found;
}

namespace {
bool write_bdi_attr(const std::string& device_id, const std::string& attr, unsigned value) {
  if (device_id.empty()) return false;
  std::ofstream out("/sys/class/bdi/" + device_id + "/" + attr);
  out << value << '\n';
  out.flush();
  return static_cast<bool>(out);
}
}  // namespace

bool set_readahead_kb(const std::string& device_id, unsigned kb) {
  return write_bdi_attr(device_id, "read_ahead_kb", kb);
}

bool lift_dirty_limit(const std::string& device_id) {
  // In this order: max_ratio above 1 is refused while strict_limit is on
  // only on some kernels, never the other way round.
  return write_bdi_attr(device_id, "strict_limit", 0) && write_bdi_attr(device_id, "max_ratio", 100);
}

}  // namespace dhfs
