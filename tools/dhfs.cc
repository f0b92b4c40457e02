// dhfs DEVICE|FILE MOUNTPOINT [-f] [-d] [-o opt[,opt...]]
// The dhfs daemon: loads the filesystem, mounts it through FUSE and serves
// it until unmounted. Argument order matches what mount.fuse3 passes.
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "fs/device_claim.h"
#include "fs/filesystem.h"
#include "fs/fuse_adapter.h"
#include "fs/log.h"
#include "tools/cli.h"

using namespace dhfs;

namespace {

void usage(int code) {
  fmt::print(code ? stderr : stdout,
             "usage: dhfs DEVICE|FILE MOUNTPOINT [-f] [-d] [-o opt[,opt...]]\n"
             "  -f            stay in the foreground\n"
             "  -d            FUSE debug output (implies -f)\n"
             "  -o OPTIONS    mount options: ro, rw, noatime, relatime, strictatime, nodev, nosuid,\n"
             "                noexec, sync, dirsync, allow_other, discard, commit=SECONDS,\n"
             "                checkpoint_interval=SECONDS, region and dedup options (README,\n"
             "                \"Mount options\"; fstab-only options are accepted)\n"
             "A write-protected DEVICE or FILE is mounted read-only, with a warning.\n"
             "dhfs -V (--version) names the release and the on-disk format.\n");
  std::exit(code);
}

void append_option(std::string& list, std::string_view opt) {
  if (!list.empty()) list.push_back(',');
  list.append(opt);
}

std::string absolute(const std::string& p) {
  char* r = ::realpath(p.c_str(), nullptr);
  if (!r) return p;
  std::string s(r);
  free(r);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  std::string options;
  FuseServerOptions serve;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") usage(0);
    else if (a == "-V" || a == "--version") cli::print_version("dhfs");
    else if (a == "-f") serve.foreground = true;
    else if (a == "-d") serve.debug = serve.foreground = true;
    else if (a == "-o") {
      if (++i >= argc) cli::die(2, "dhfs: -o needs an argument");
      append_option(options, argv[i]);
    } else if (a.starts_with("-o")) {
      append_option(options, a.substr(2));
    } else if (a.starts_with("-")) {
      cli::die(2, "dhfs: unknown argument '{}' (see dhfs --help)", a);
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2) usage(2);
  const std::string device = absolute(positional[0]);
  serve.mountpoint = absolute(positional[1]);

  FsOptions fs_opts;
  std::string error;
  if (!parse_mount_options(options, fs_opts, serve.fuse_opts, error)) cli::die(2, "dhfs: {}", error);
  fs_opts.defer_start = true;

  // A FUSE mount whose daemon was killed stays until it is unmounted, and
  // answers ENOTCONN to every request; stat() may still succeed from the
  // kernel's cache, statfs() always asks. Mounting over it would hide it.
  struct statfs sfs {};
  if (::statfs(serve.mountpoint.c_str(), &sfs) != 0 && errno == ENOTCONN)
    cli::die(1, "dhfs: {}: a FUSE filesystem whose daemon died is still mounted here; umount {} first",
             serve.mountpoint, serve.mountpoint);
  struct stat st {};
  if (::stat(serve.mountpoint.c_str(), &st) != 0)
    cli::die(1, "dhfs: {}: {}", serve.mountpoint, std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) cli::die(1, "dhfs: {}: not a directory", serve.mountpoint);

  if (!fs_opts.read_only && write_protected(device)) {
    // As mount(8) does for kernel filesystems; the kernel's mount is
    // read-only too, so writers get EROFS from the VFS.
    log::warning("{}: write-protected, mounting read-only", device);
    fs_opts.read_only = true;
    serve.fuse_opts.emplace_back("ro");
  }
  auto dev = claim_device(device, fs_opts.read_only, std::chrono::seconds(30), error);
  if (!dev) cli::die(1, "dhfs: {}", error);
  auto fs = FileSystem::open(std::move(dev), fs_opts, error);
  if (!fs) cli::die(1, "dhfs: {}", error);

  serve.fsname = device;
  int rc = serve_fuse(*fs, serve);
  int persist = fs->shutdown();
  if (persist != 0) {
    log::error("{}: persisting metadata at unmount failed: {}", device, std::strerror(-persist));
    return 1;
  }
  return rc;
}
