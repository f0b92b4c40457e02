// mkfs.dhfs [-s SIZE] [-f] [-L LABEL] [-K] DEVICE|FILE
// Formats a block device or an image file (created, sparse, when -s is given).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "fs/device.h"
#include "fs/device_claim.h"
#include "fs/format.h"
#include "fs/mkfs.h"
#include "fs/unique_fd.h"
#include "tools/cli.h"

using namespace dhfs;

namespace {

void usage(int code) {
  fmt::print(code ? stderr : stdout,
             "usage: mkfs.dhfs [-s SIZE] [-f] [-L LABEL] [-K] DEVICE|FILE\n"
             "  -s SIZE   create FILE (sparse) or resize it to SIZE (e.g. 8G, 512M)\n"
             "  -f        overwrite an existing filesystem\n"
             "  -L LABEL  filesystem label (up to 63 bytes)\n"
             "  -K, --nodiscard\n"
             "            keep the device's blocks: without it, what they held is discarded\n"
             "            (TRIM/UNMAP, or holes in an image file), as mke2fs and mkfs.xfs do\n"
             "  -V, --version  the release and the on-disk format it writes\n");
  std::exit(code);
}

// Names the filesystem (or partition table) found at the start of a device,
// if any, so that nothing is overwritten by accident.
std::string existing_signature(Device& dev) {
  AlignedBuffer buf(128 * 1024);
  std::uint32_t len = static_cast<std::uint32_t>(std::min<std::uint64_t>(buf.size(), dev.size_bytes()));
  len = len / kBlockSize * kBlockSize;
  if (len == 0 || dev.read(0, buf.data(), len) < 0) return {};
  const auto* b = reinterpret_cast<const unsigned char*>(buf.data());
  auto at = [&](std::size_t off, const char* sig, std::size_t n) {
    return off + n <= len && std::memcmp(b + off, sig, n) == 0;
  };
  std::uint64_t magic;
  std::memcpy(&magic, b, 8);
  if (magic == kSuperMagic) return "dhfs filesystem";
  if (at(1080, "\x53\xef", 2)) return "ext2/3/4 filesystem";
  if (at(0, "XFSB", 4)) return "XFS filesystem";
  if (at(0x10040, "_BHRfS_M", 8)) return "btrfs filesystem";
  if (at(0, "LUKS\xba\xbe", 6)) return "LUKS volume";
  if (at(4086, "SWAPSPACE2", 10)) return "swap area";
  if (at(512, "EFI PART", 8)) return "GPT partition table";
  if (at(510, "\x55\xaa", 2)) return "DOS partition table or boot sector";
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<std::uint64_t> size;
  bool force = false;
  FormatOptions fopts;
  std::string target;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") usage(0);
    if (a == "-V" || a == "--version") cli::print_version("mkfs.dhfs");
    else if (a == "-f") force = true;
    else if (a == "-K" || a == "--nodiscard") fopts.discard = false;
    else if (a == "-s" || a == "-L") {
      if (++i >= argc) cli::die(2, "mkfs.dhfs: {} needs an argument", a);
      if (a == "-L") {
        fopts.label = argv[i];
        if (fopts.label.size() > 63) cli::die(2, "mkfs.dhfs: label longer than 63 bytes");
      } else {
        size = cli::parse_size(argv[i]);
        if (!size) cli::die(2, "mkfs.dhfs: invalid size '{}'", argv[i]);
      }
    } else if (a.starts_with("-")) {
      cli::die(2, "mkfs.dhfs: unknown option '{}'", a);
    } else if (target.empty()) {
      target = a;
    } else {
      usage(2);
    }
  }
  if (target.empty()) usage(2);
  if (size && *size < kMinDeviceBytes)
    cli::die(1, "mkfs.dhfs: size {} is too small (at least {} MiB)", *size, kMinDeviceBytes >> 20);

  struct stat st {};
  bool exists = ::stat(target.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) cli::die(1, "mkfs.dhfs: {}: {}", target, std::strerror(errno));
  if (!exists) {
    if (!size) cli::die(1, "mkfs.dhfs: {}: does not exist (give -s SIZE to create an image file)", target);
    UniqueFd fd(::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) cli::die(1, "mkfs.dhfs: {}: {}", target, std::strerror(errno));
    if (::ftruncate(fd.get(), static_cast<off_t>(*size)) != 0) {
      int err = errno;
      ::unlink(target.c_str());
      cli::die(1, "mkfs.dhfs: {}: cannot size to {} bytes: {}", target, *size, std::strerror(err));
    }
  }

  std::string error;
  auto dev = claim_device(target, false, std::chrono::seconds(0), error);
  if (!dev) cli::die(1, "mkfs.dhfs: {}", error);
  if (exists) {
    std::string sig = existing_signature(*dev);
    if (!sig.empty() && !force) cli::die(1, "mkfs.dhfs: {} contains a {}; use -f to overwrite it", target, sig);
    if (size && S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) != *size) {
      // Resize the image, then reopen to see the new size.
      dev.reset();
      if (::truncate(target.c_str(), static_cast<off_t>(*size)) != 0)
        cli::die(1, "mkfs.dhfs: {}: cannot resize: {}", target, std::strerror(errno));
      dev = claim_device(target, false, std::chrono::seconds(0), error);
      if (!dev) cli::die(1, "mkfs.dhfs: {}", error);
    } else if (size && !S_ISREG(st.st_mode)) {
      cli::die(1, "mkfs.dhfs: {}: -s applies to image files, not devices", target);
    }
  }

  Superblock sb;
  if (!format_device(*dev, fopts, &sb, error)) {
    if (!exists) ::unlink(target.c_str());  // an image file made just now is of no use (and takes space)
    cli::die(1, "mkfs.dhfs: {}", error);
  }
  fmt::print("mkfs.dhfs: {}: {} dhfs, uuid {}, journal {}, data area {}\n", target,
             cli::human_bytes(sb.total_blocks * kBlockSize), uuid_to_string(sb.uuid),
             cli::human_bytes(sb.journal_blocks * kBlockSize), cli::human_bytes(sb.data_blocks * kBlockSize));
  return 0;
}
