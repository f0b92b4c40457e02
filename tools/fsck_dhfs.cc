// fsck.dhfs [-n] [-y] [-v] [-b BLOCK] DEVICE|FILE
// Checks a dhfs filesystem and, unless -n is given, repairs it (fs/fsck.h).
// Exit codes as e2fsck: 0 clean, 1 repaired, 4 problems left, 8 operational
// error, 16 usage error.
#include <charconv>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

#include "fs/device.h"
#include "fs/device_claim.h"
#include "fs/fsck.h"
#include "tools/cli.h"

using namespace dhfs;

namespace {

constexpr int kUsageError = 16;

void usage(int code) {
  fmt::print(code ? stderr : stdout,
             "usage: fsck.dhfs [-n] [-y] [-v] [-b BLOCK] DEVICE|FILE\n"
             "  -n   check only: open read-only and change nothing\n"
             "  -y   repair every problem found (the default; -p and -a are accepted as well)\n"
             "  -v   also print notes (checkpoint slots, journal replay, orphans)\n"
             "  -b BLOCK  if block 0 is damaged, take the backup superblock from BLOCK: the\n"
             "            filesystem's size in 4 KiB blocks minus 1 (needed only where the\n"
             "            device is larger than the filesystem and that size is not in block 0)\n"
             "  -V   the release and the on-disk format it reads\n"
             "exit status: 0 clean, 1 problems repaired, 4 problems left, 8 operational error, 16 usage\n");
  std::exit(code);
}

BlockNo parse_block(const std::string& s) {
  BlockNo b = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), b);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size())
    cli::die(kUsageError, "fsck.dhfs: -b needs a block number, not '{}'", s);
  return b;
}

std::string plural(std::uint64_t n, const char* one, const char* many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

}  // namespace

int main(int argc, char** argv) {
  bool check_only = false, yes = false, verbose = false;
  std::optional<BlockNo> backup_block;
  std::string target;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") usage(0);
    if (a == "-V" || a == "--version") cli::print_version("fsck.dhfs");
    if (a == "-b") {
      if (i + 1 == argc) cli::die(kUsageError, "fsck.dhfs: -b needs a block number");
      backup_block = parse_block(argv[++i]);
      continue;
    }
    if (a.size() > 1 && a[0] == '-') {
      for (char c : a.substr(1)) {
        switch (c) {
          case 'n': check_only = true; break;
          case 'y':
          case 'p':
          case 'a': yes = true; break;
          case 'v': verbose = true; break;
          case 'f': break;  // every run is a full check
          default: cli::die(kUsageError, "fsck.dhfs: unknown option '-{}' (see fsck.dhfs --help)", c);
        }
      }
    } else if (target.empty()) {
      target = a;
    } else {
      cli::die(kUsageError, "fsck.dhfs: more than one device given ('{}' and '{}')", target, a);
    }
  }
  if (target.empty()) usage(kUsageError);
  if (check_only && yes) cli::die(kUsageError, "fsck.dhfs: -n and -y exclude each other");

  std::string error;
  // A daemon that was just killed may hold the device for a moment longer
  // (its in-flight I/O is torn down asynchronously): wait briefly.
  auto dev = claim_device(target, check_only, std::chrono::seconds(2), error);
  if (!dev) cli::die(kFsckOperationalError, "fsck.dhfs: {}", error);

  FsckOptions opts;
  opts.repair = !check_only;
  opts.backup_block = backup_block;
  FsckReport rep = Checker(*dev, opts).run();

  for (const auto& p : rep.problems) fmt::print("{}: {}\n", target, p);
  for (const auto& r : rep.repaired) fmt::print("{}: repaired: {}\n", target, r);
  if (verbose)
    for (const auto& n : rep.info) fmt::print("{}: note: {}\n", target, n);
  std::fflush(stdout);

  if (rep.operational_error) cli::die(kFsckOperationalError, "fsck.dhfs: {}: {}", target, rep.reason);
  if (rep.unrecoverable)
    cli::die(kFsckProblemsLeft, "fsck.dhfs: {}: cannot be repaired: {}", target, rep.reason);

  std::string state;
  if (rep.problems.empty()) {
    state = "clean";
  } else {
    std::uint64_t fixed = rep.problems.size() - rep.problems_left;
    state = fmt::format("{}, {} repaired", plural(rep.problems.size(), "problem", "problems"), fixed);
    if (check_only) state += " (checked with -n: nothing was changed)";
  }
  std::string extra;
  if (rep.orphans) extra = fmt::format(", {}", plural(rep.orphans, "orphan", "orphans"));
  fmt::print("fsck.dhfs: {}: {}, {}, {}, {} used, {} free{}: {}\n", target,
             plural(rep.inodes, "inode", "inodes"), plural(rep.directories, "directory", "directories"),
             plural(rep.extents, "extent", "extents"), plural(rep.blocks_used, "block", "blocks"),
             rep.free_blocks, extra, state);
  return rep.exit_code;
}
