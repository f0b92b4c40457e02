#include "fs/fuse_adapter.h"

#include <fuse_lowlevel.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>
#include <fmt/format.h>

#include "fs/control.h"
#include "fs/fuse_bdi.h"
#include "fs/fuse_ring.h"
#include "fs/kernel_channel.h"
#include "fs/log.h"
#include "fs/uring.h"

namespace dhfs {

namespace {

// dhfs is the only writer of its files: the kernel may cache names and
// attributes for as long as it likes.
constexpr double kTimeout = 86400.0;

// How long a /dev/fuse reader waits before each read once the ring serves
// requests (see channel_read).
constexpr std::chrono::milliseconds kForgetBatchPause{1};

// What every request handler reaches through the session's userdata.
struct ServerContext {
  FileSystem* fs = nullptr;
  fuse_session* se = nullptr;  // for notifications to the kernel
  KernelChannel channel;       // sees every request and reply on /dev/fuse
  const FuseRing* ring = nullptr;  // set before the loop starts
};

ServerContext& context_of(fuse_req_t req) { return *static_cast<ServerContext*>(fuse_req_userdata(req)); }
FileSystem& fs_of(fuse_req_t req) { return *context_of(req).fs; }

Cred cred_of(fuse_req_t req) {
  const fuse_ctx* c = fuse_req_ctx(req);
  return {c->uid, c->gid};
}

// Whether the process behind `req` holds capability `cap` (CapEff in
// /proc). Requests the kernel makes on its own (pid 0: overlayfs copying
// up) are privileged; a process that cannot be inspected is not.
bool caller_has_capability(fuse_req_t req, int cap) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  if (ctx->pid == 0) return true;
  std::ifstream status(fmt::format("/proc/{}/status", ctx->pid));
  for (std::string line; std::getline(status, line);)
    if (line.starts_with("CapEff:")) return (std::strtoull(line.c_str() + 7, nullptr, 16) >> cap) & 1;
  return false;
}

// Whether `gid` is the caller's group or one of its supplementary groups.
bool caller_in_group(fuse_req_t req, std::uint32_t gid) {
  if (fuse_req_ctx(req)->gid == gid) return true;
  std::vector<gid_t> groups(32);
  int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
  if (n > static_cast<int>(groups.size())) {  // it returns how many there are
    groups.resize(static_cast<std::size_t>(n));
    n = fuse_req_getgroups(req, n, groups.data());
  }
  for (int i = 0; i < std::min(n, static_cast<int>(groups.size())); ++i)
    if (groups[static_cast<std::size_t>(i)] == gid) return true;
  return false;
}

// The SetAttr kill bits for a request where the kernel asked for setuid and
// setgid to be cleared (see KernelChannel), 0 if it did not. Linux clears a
// setgid bit without group execute too when the caller is outside the
// file's group and lacks CAP_FSETID; only the adapter knows the caller, and
// only such files pay for the look into /proc.
std::uint32_t kill_bits_for(fuse_req_t req, fuse_ino_t ino) {
  if (!KernelChannel::current_request().kill_suidgid) return 0;
  std::uint32_t bits = SetAttr::kKillSuidgid;
  Attr a;
  if (fs_of(req).getattr(ino, &a) == 0 && (a.mode & S_ISGID) && !(a.mode & S_IXGRP) &&
      !caller_in_group(req, a.gid) && !caller_has_capability(req, CAP_FSETID))
    bits |= SetAttr::kKillSgid;
  return bits;
}

timespec to_ts(std::int64_t ns) { return {ns / 1000000000LL, ns % 1000000000LL}; }
std::int64_t from_ts(const timespec& t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

struct stat to_stat(const Attr& a) {
  struct stat st {};
  st.st_ino = a.ino;
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_rdev = a.rdev;
  st.st_size = static_cast<off_t>(a.size);
  st.st_blocks = static_cast<blkcnt_t>(a.blocks);
  st.st_blksize = kBlockSize;
  st.st_atim = to_ts(a.atime_ns);
  st.st_mtim = to_ts(a.mtime_ns);
  st.st_ctim = to_ts(a.ctime_ns);
  return st;
}

fuse_entry_param to_entry(const Attr& a) {
  fuse_entry_param e{};
  e.ino = a.ino;
  e.generation = a.generation;
  e.attr = to_stat(a);
  e.attr_timeout = kTimeout;
  e.entry_timeout = kTimeout;
  return e;
}

void reply_entry_or_err(fuse_req_t req, int rc, const Attr& a) {
  if (rc < 0) {
    fuse_reply_err(req, -rc);
    return;
  }
  fuse_entry_param e = to_entry(a);
  fuse_reply_entry(req, &e);
}

void reply_status(fuse_req_t req, int rc) { fuse_reply_err(req, rc < 0 ? -rc : 0); }

// ------------------------------------------------------------------- init

void op_init(void* userdata, fuse_conn_info* conn) {
  auto want = [&](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  want(FUSE_CAP_WRITEBACK_CACHE);
  want(FUSE_CAP_READDIRPLUS);
  want(FUSE_CAP_READDIRPLUS_AUTO);
  want(FUSE_CAP_PARALLEL_DIROPS);
  want(FUSE_CAP_ASYNC_READ);
  want(FUSE_CAP_ATOMIC_O_TRUNC);
  want(FUSE_CAP_EXPORT_SUPPORT);
  want(FUSE_CAP_IOCTL_DIR);
  // The kernel applies the umask; locks are handled by the kernel locally
  // (one kernel, one mount). Clearing setuid/setgid is negotiated apart
  // (FUSE_HANDLE_KILLPRIV_V2, see KernelChannel), not with libfuse's v1 flag.
  conn->want &= ~(FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_DONT_MASK | FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
  static_cast<ServerContext*>(userdata)->fs->set_kernel_write_times(conn->want & FUSE_CAP_WRITEBACK_CACHE);
  conn->max_write = 1 << 20;
  conn->max_readahead = 1 << 20;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  conn->time_gran = 1;
}

// ------------------------------------------------------------------ names

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Attr a;
  int rc = fs_of(req).lookup(parent, name, &a);
  if (rc == -ENOENT) {
    // Cache the miss too: only this filesystem creates names.
    fuse_entry_param e{};
    e.entry_timeout = kTimeout;
    fuse_reply_entry(req, &e);
    return;
  }
  reply_entry_or_err(req, rc, a);
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  fs_of(req).forget(ino, n);
  fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) fs_of(req).forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Attr a;
  int rc = fs_of(req).getattr(ino, &a);
  if (rc < 0) {
    fuse_reply_err(req, -rc);
    return;
  }
  struct stat st = to_stat(a);
  fuse_reply_attr(req, &st, kTimeout);
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* st, int to_set, fuse_file_info*) {
  SetAttr sa;
  if (to_set & FUSE_SET_ATTR_MODE) sa.valid |= SetAttr::kMode, sa.mode = st->st_mode;
  if (to_set & FUSE_SET_ATTR_UID) sa.valid |= SetAttr::kUid, sa.uid = st->st_uid;
  if (to_set & FUSE_SET_ATTR_GID) sa.valid |= SetAttr::kGid, sa.gid = st->st_gid;
  if (to_set & FUSE_SET_ATTR_SIZE) sa.valid |= SetAttr::kSize, sa.size = static_cast<std::uint64_t>(st->st_size);
  if (to_set & FUSE_SET_ATTR_ATIME_NOW) sa.valid |= SetAttr::kAtimeNow;
  else if (to_set & FUSE_SET_ATTR_ATIME) sa.valid |= SetAttr::kAtime, sa.atime_ns = from_ts(st->st_atim);
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) sa.valid |= SetAttr::kMtimeNow;
  else if (to_set & FUSE_SET_ATTR_MTIME) sa.valid |= SetAttr::kMtime, sa.mtime_ns = from_ts(st->st_mtim);
  if (to_set & FUSE_SET_ATTR_CTIME) sa.valid |= SetAttr::kCtime, sa.ctime_ns = from_ts(st->st_ctim);
  sa.valid |= kill_bits_for(req, ino);
  Attr a;
  int rc = fs_of(req).setattr(ino, sa, &a);
  if (rc < 0) {
    fuse_reply_err(req, -rc);
    return;
  }
  struct stat out = to_stat(a);
  fuse_reply_attr(req, &out, kTimeout);
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  std::string target;
  int rc = fs_of(req).readlink(ino, &target);
  if (rc < 0) fuse_reply_err(req, -rc);
  else fuse_reply_readlink(req, target.c_str());
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  Attr a;
  int rc = fs_of(req).mknod(parent, name, mode, static_cast<std::uint32_t>(rdev), cred_of(req), &a);
  reply_entry_or_err(req, rc, a);
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  Attr a;
  int rc = fs_of(req).mkdir(parent, name, mode, cred_of(req), &a);
  reply_entry_or_err(req, rc, a);
}

void op_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  Attr a;
  int rc = fs_of(req).symlink(parent, name, target, cred_of(req), &a);
  reply_entry_or_err(req, rc, a);
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  Attr a;
  int rc = fs_of(req).link(ino, newparent, newname, &a);
  reply_entry_or_err(req, rc, a);
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  reply_status(req, fs_of(req).unlink(parent, name));
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  reply_status(req, fs_of(req).rmdir(parent, name));
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
               unsigned flags) {
  reply_status(req, fs_of(req).rename(parent, name, newparent, newname, flags, cred_of(req)));
}

void op_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  reply_status(req, fs_of(req).access(ino, mask, cred_of(req)));
}

// ------------------------------------------------------------------ files

// Clears setuid/setgid where the kernel asked for it (an unprivileged
// caller's write or O_TRUNC open).
int kill_suidgid_if_asked(fuse_req_t req, fuse_ino_t ino) {
  SetAttr sa;
  sa.valid = kill_bits_for(req, ino);
  if (!sa.valid) return 0;
  Attr ignored;
  return fs_of(req).setattr(ino, sa, &ignored);
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  FileSystem::OpenAdvice advice;
  int rc = fs_of(req).open(ino, fi->flags, &advice);
  if (rc == 0 && (fi->flags & O_TRUNC)) rc = kill_suidgid_if_asked(req, ino);
  if (rc < 0) {
    fuse_reply_err(req, -rc);
    return;
  }
  fi->keep_cache = 1;  // nobody else changes the file behind the page cache
  fi->direct_io = advice.direct_io;
  fuse_reply_open(req, fi);
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  Attr a;
  int rc = fs_of(req).create(parent, name, mode, fi->flags, cred_of(req), &a);
  if (rc < 0) {
    fuse_reply_err(req, -rc);
    return;
  }
  fi->keep_cache = 1;
  fuse_entry_param e = to_entry(a);
  fuse_reply_create(req, &e, fi);
}

void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  fs_of(req).release(ino);
  fuse_reply_err(req, 0);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  thread_local AlignedBuffer scratch;
  std::span<const std::byte> data;
  // Straight into the ring entry's reply buffer where the read allows.
  int rc = fs_of(req).read(ino, static_cast<std::uint64_t>(off), size, scratch, &data, FuseRing::reply_buffer());
  if (rc < 0) fuse_reply_err(req, -rc);
  else fuse_reply_buf(req, reinterpret_cast<const char*>(data.data()), data.size());
}

void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info*) {
  bool blocks_changed = false;
  fuse_session* se = context_of(req).se;
  if (int rc = kill_suidgid_if_asked(req, ino); rc < 0) {
    fuse_reply_err(req, -rc);
    return;
  }
  ssize_t n = fs_of(req).write(ino, static_cast<std::uint64_t>(off),
                               {reinterpret_cast<const std::byte*>(buf), size}, &blocks_changed);
  if (n < 0) {
    fuse_reply_err(req, static_cast<int>(-n));
    return;
  }
  fuse_reply_write(req, static_cast<size_t>(n));
  // Writeback does not make the kernel forget cached attributes, so st_blocks
  // would stay stale. Only after the reply has reached the kernel: it may be
  // waiting for this write to finish before it lets go of the inode.
  if (blocks_changed) FuseRing::after_reply([se, ino] { fuse_lowlevel_notify_inval_inode(se, ino, -1, 0); });
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) {
  reply_status(req, fs_of(req).fsync(ino, datasync != 0));
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info*) {
  if (off < 0 || len <= 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  reply_status(req, fs_of(req).fallocate(ino, mode, static_cast<std::uint64_t>(off), static_cast<std::uint64_t>(len)));
}

void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info*) {
  std::int64_t r = fs_of(req).lseek(ino, off, whence);
  if (r < 0) fuse_reply_err(req, static_cast<int>(-r));
  else fuse_reply_lseek(req, r);
}

void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info*, fuse_ino_t ino_out,
                        off_t off_out, fuse_file_info*, size_t len, int /*flags*/) {
  ssize_t n = fs_of(req).copy_file_range(ino_in, static_cast<std::uint64_t>(off_in), ino_out,
                                         static_cast<std::uint64_t>(off_out), len);
  if (n < 0) fuse_reply_err(req, static_cast<int>(-n));
  else fuse_reply_write(req, static_cast<size_t>(n));
}

// ------------------------------------------------------------ directories

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  int rc = fs_of(req).opendir(ino);
  if (rc < 0) {
    fuse_reply_err(req, -rc);
    return;
  }
  fi->cache_readdir = 0;
  fuse_reply_open(req, fi);
}

void op_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  fs_of(req).releasedir(ino);
  fuse_reply_err(req, 0);
}

void list_dir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  std::vector<char> buf(size);
  size_t used = 0;
  int rc = fs_of(req).readdir(ino, static_cast<std::uint64_t>(off), plus,
                              [&](const DirListEntry& d, const Attr* attr) {
                                std::string name(d.name);
                                size_t need;
                                if (plus) {
                                  fuse_entry_param e{};
                                  bool dot = d.name == "." || d.name == "..";
                                  if (attr) e = to_entry(*attr);
                                  if (dot || !attr) e.ino = 0;  // the kernel takes no reference
                                  e.attr.st_ino = d.ino;
                                  e.attr.st_mode = static_cast<mode_t>(d.dtype) << 12 | (e.attr.st_mode & 07777);
                                  need = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e,
                                                                static_cast<off_t>(d.next_cookie));
                                } else {
                                  struct stat st {};
                                  st.st_ino = d.ino;
                                  st.st_mode = static_cast<mode_t>(d.dtype) << 12;
                                  need = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st,
                                                           static_cast<off_t>(d.next_cookie));
                                }
                                if (need > size - used) return false;
                                used += need;
                                return true;
                              });
  if (rc < 0) fuse_reply_err(req, -rc);
  else fuse_reply_buf(req, buf.data(), used);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  list_dir(req, ino, size, off, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  list_dir(req, ino, size, off, true);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) {
  reply_status(req, fs_of(req).fsync(ino, datasync != 0));
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
  FsStats s = fs_of(req).stats();
  struct statvfs v {};
  v.f_bsize = kBlockSize;
  v.f_frsize = kBlockSize;
  v.f_blocks = s.total_blocks;
  v.f_bfree = s.free_blocks;
  v.f_bavail = s.available_blocks;
  // Inodes take no fixed space: report what the free space could hold.
  v.f_files = s.inodes + s.available_blocks;
  v.f_ffree = s.available_blocks;
  v.f_favail = s.available_blocks;
  v.f_namemax = kNameMax;
  fuse_reply_statfs(req, &v);
}

// ----------------------------------------------------------------- xattrs

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
  reply_status(req, fs_of(req).setxattr(ino, name, {value, size}, flags));
}

// getxattr and listxattr share the size protocol: size 0 asks for the
// length, a too small buffer gets ERANGE.
void reply_sized(fuse_req_t req, int rc, const std::string& data, size_t size) {
  if (rc < 0) fuse_reply_err(req, -rc);
  else if (size == 0) fuse_reply_xattr(req, data.size());
  else if (data.size() > size) fuse_reply_err(req, ERANGE);
  else fuse_reply_buf(req, data.data(), data.size());
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  std::string value;
  int rc = fs_of(req).getxattr(ino, name, &value);
  reply_sized(req, rc, value, size);
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  std::string names;
  // The kernel checks CAP_SYS_ADMIN for getxattr/setxattr of trusted.*
  // itself, but leaves listxattr to the filesystem.
  int rc = fs_of(req).listxattr(ino, &names, caller_has_capability(req, CAP_SYS_ADMIN));
  reply_sized(req, rc, names, size);
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  reply_status(req, fs_of(req).removexattr(ino, name));
}

// ------------------------------------------------------------------ control

void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void* /*arg*/, fuse_file_info*, unsigned flags,
              const void* in_buf, size_t in_bufsz, size_t out_bufsz) {
  if (flags & FUSE_IOCTL_COMPAT) {
    fuse_reply_err(req, ENOSYS);
    return;
  }
  std::vector<std::byte> out;
  const bool admin = fuse_req_ctx(req)->uid == 0;
  int rc = serve_control(fs_of(req), &context_of(req).channel.requests(), ino, cmd, admin,
                         {static_cast<const std::byte*>(in_buf), in_bufsz}, out);
  if (rc < 0) fuse_reply_err(req, -rc);
  else if (out.size() > out_bufsz) fuse_reply_err(req, EINVAL);
  else fuse_reply_ioctl(req, 0, out.data(), out.size());
}

fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.readlink = op_readlink;
  ops.mknod = op_mknod;
  ops.mkdir = op_mkdir;
  ops.symlink = op_symlink;
  ops.link = op_link;
  ops.unlink = op_unlink;
  ops.rmdir = op_rmdir;
  ops.rename = op_rename;
  ops.access = op_access;
  ops.open = op_open;
  ops.create = op_create;
  ops.release = op_release;
  // No flush: there is nothing to do at close(2) that the kernel does not
  // do itself (it writes the dirty pages back before it would send FLUSH),
  // and without the operation the kernel stops sending one round trip per
  // close (it answers ENOSYS once; fc->no_flush).
  ops.read = op_read;
  ops.write = op_write;
  ops.fsync = op_fsync;
  ops.fallocate = op_fallocate;
  ops.lseek = op_lseek;
  ops.copy_file_range = op_copy_file_range;
  ops.opendir = op_opendir;
  ops.releasedir = op_releasedir;
  ops.readdir = op_readdir;
  ops.readdirplus = op_readdirplus;
  ops.fsyncdir = op_fsyncdir;
  ops.statfs = op_statfs;
  ops.setxattr = op_setxattr;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.removexattr = op_removexattr;
  ops.ioctl = op_ioctl;
  return ops;
}

// Owns the libfuse argument vector.
class FuseArgs {
 public:
  explicit FuseArgs(const std::vector<std::string>& argv) {
    for (const auto& a : argv) storage_.push_back(a);
    for (auto& s : storage_) ptrs_.push_back(s.data());
    args_ = FUSE_ARGS_INIT(static_cast<int>(ptrs_.size()), ptrs_.data());
  }
  ~FuseArgs() { fuse_opt_free_args(&args_); }
  FuseArgs(const FuseArgs&) = delete;
  FuseArgs& operator=(const FuseArgs&) = delete;
  fuse_args* get() { return &args_; }

 private:
  std::vector<std::string> storage_;
  std::vector<char*> ptrs_;
  fuse_args args_{};
};

// Owns a libfuse session, its signal handlers and its mount.
class FuseSession {
 public:
  FuseSession(fuse_args* args, const fuse_lowlevel_ops& ops, void* userdata)
      : se_(fuse_session_new(args, &ops, sizeof ops, userdata)) {}
  ~FuseSession() {
    if (!se_) return;
    if (handlers_) fuse_remove_signal_handlers(se_);
    if (mounted_) fuse_session_unmount(se_);
    fuse_session_destroy(se_);
  }
  FuseSession(const FuseSession&) = delete;
  FuseSession& operator=(const FuseSession&) = delete;

  bool ok() const { return se_ != nullptr; }
  bool install_signal_handlers() { return handlers_ = fuse_set_signal_handlers(se_) == 0; }
  bool mount(const std::string& mp) { return mounted_ = fuse_session_mount(se_, mp.c_str()) == 0; }
  fuse_session* get() { return se_; }

 private:
  fuse_session* se_;
  bool handlers_ = false;
  bool mounted_ = false;
};

// The /dev/fuse reads and writes of the session, done here so that the
// KernelChannel sees every request and reply (see kernel_channel.h).
ssize_t channel_read(int fd, void* buf, size_t len, void* userdata) {
  // Once the ring serves requests, /dev/fuse carries only FORGET (and the
  // rare INTERRUPT). Read as they come, every deleted or evicted inode
  // would wake a thread; read after a pause, the forgets queued meanwhile
  // come as one BATCH_FORGET (find -delete of 5000 files here: 0.21-0.24 s
  // against 0.34-0.41 s, three runs each).
  if (static_cast<ServerContext*>(userdata)->ring->serving())
    std::this_thread::sleep_for(kForgetBatchPause);
  ssize_t n = ::read(fd, buf, len);
  if (n > 0)
    static_cast<ServerContext*>(userdata)->channel.on_request(
        {static_cast<const std::byte*>(buf), static_cast<std::size_t>(n)});
  return n;
}

ssize_t channel_writev(int fd, struct iovec* iov, int count, void* userdata) {
  static_cast<ServerContext*>(userdata)->channel.on_reply(iov, count);
  if (FuseRing::take_reply(iov, count)) {
    std::size_t n = 0;
    for (int i = 0; i < count; ++i) n += iov[i].iov_len;
    return static_cast<ssize_t>(n);
  }
  return ::writev(fd, iov, count);
}

class LoopConfig {
 public:
  LoopConfig() : cfg_(fuse_loop_cfg_create()) {}
  ~LoopConfig() { fuse_loop_cfg_destroy(cfg_); }
  LoopConfig(const LoopConfig&) = delete;
  LoopConfig& operator=(const LoopConfig&) = delete;
  fuse_loop_config* get() { return cfg_; }

 private:
  fuse_loop_config* cfg_;
};

}  // namespace

int serve_fuse(FileSystem& fs, const FuseServerOptions& opts) {
  std::string o = fmt::format("default_permissions,fsname={},subtype=dhfs", opts.fsname);
  for (const auto& f : opts.fuse_opts) o += "," + f;
  std::vector<std::string> argv = {"dhfs", "-o", o};
  if (opts.debug) argv.push_back("-d");
  FuseArgs args(argv);
  fuse_lowlevel_ops ops = make_ops();
  ServerContext ctx;
  ctx.fs = &fs;
  FuseSession session(args.get(), ops, &ctx);
  ctx.se = session.get();
  if (!session.ok()) {
    fmt::print(stderr, "dhfs: cannot create the FUSE session (options: {})\n", o);
    return 1;
  }
  if (!session.install_signal_handlers()) {
    fmt::print(stderr, "dhfs: cannot install signal handlers\n");
    return 1;
  }
  // Before the mount: the kernel decides at INIT whether to offer it. A
  // kernel without it (before 6.14), or a daemon that may not turn it on,
  // serves over /dev/fuse, as dhfs always did.
  if (fs.options().fuse_uring) (void)FuseRing::allow_in_kernel();
  if (!session.mount(opts.mountpoint)) {
    fmt::print(stderr, "dhfs: cannot mount on {}\n", opts.mountpoint);
    return 1;
  }
  // After the mount, on the descriptor libfuse opened: libfuse still
  // unmounts it, and the INIT request has not been read yet.
  const fuse_custom_io io{.writev = channel_writev, .read = channel_read, .splice_receive = nullptr,
                          .splice_send = nullptr};
  if (fuse_session_custom_io(session.get(), &io, fuse_session_fd(session.get())) != 0) {
    fmt::print(stderr, "dhfs: cannot take over the FUSE channel\n");
    return 1;
  }
  const std::string device_id = mount_device_id(opts.mountpoint);
  drop_thread_ring();  // the daemon's threads set up their own rings
  if (!opts.foreground) {
    if (fuse_daemonize(0) != 0) {
      fmt::print(stderr, "dhfs: cannot go to the background\n");
      return 1;
    }
    log::to_syslog();  // stderr is /dev/null now
  }
  fs.start();
  LoopConfig cfg;
  fuse_loop_cfg_set_clone_fd(cfg.get(), 1);
  fuse_loop_cfg_set_idle_threads(cfg.get(), 8);
  fuse_loop_cfg_set_max_threads(cfg.get(), opts.max_threads);
  // The ring's entries, read-ahead and the dirty limit can be set up only
  // after the kernel has applied the FUSE_INIT reply; a statfs of the mount
  // returns only after that (the kernel holds every request until then), so
  // a helper asks for one while the loop serves.
  FuseRing ring(session.get(), ctx.channel);
  ctx.ring = &ring;
  std::jthread after_init([&] {
    struct statvfs sv {};
    if (::statvfs(opts.mountpoint.c_str(), &sv) != 0) return;
    if (fs.options().fuse_uring && ctx.channel.kernel_offers_uring()) {
      const int rc = ring.start(opts.max_threads, ctx.channel.ring_payload_size(), fs.options().ring_spin,
                                fs.options().ring_pin);
      if (rc < 0)
        log::warning("the kernel refused a FUSE over io_uring entry ({}); where a CPU queue has none, "
                     "requests stay on /dev/fuse", std::strerror(-rc));
    }
    set_readahead_kb(device_id, static_cast<unsigned>(fs.options().readahead_bytes >> 10));
    if (!fs.options().strict_dirty_limit && !lift_dirty_limit(device_id))
      log::warning("cannot lift the kernel's dirty-page limit for FUSE on {}; it stays", opts.mountpoint);
  });
  int rc = fuse_session_loop_mt(session.get(), cfg.get());
  return rc == 0 ? 0 : 1;
}

}  // namespace dhfs
