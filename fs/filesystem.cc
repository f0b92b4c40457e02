// FileSystem: names, attributes, directories and extended attributes.
// Everything here works on memory under meta_mu_ and ends by handing one
// transaction to the journal; none of it performs device I/O.
#include "fs/filesystem.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <tuple>
#include <vector>

#include "fs/copy_up_target.h"

namespace dhfs {

namespace {

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

// Names longer than NAME_MAX reach us (the kernel's FUSE limit is larger);
// they must fail with ENAMETOOLONG everywhere, lookups included.
int check_name(std::string_view name) {
  if (name.size() > kNameMax) return -ENAMETOOLONG;
  if (!valid_name(name)) return -EINVAL;
  return 0;
}

constexpr std::uint32_t kMaxLinks = 65000;

}  // namespace

std::uint64_t FileSystem::commit(Txn& txn, const std::vector<Extent>& to_free) {
  std::uint64_t seq = journal_->append(txn.bytes(), txn.data_first);
  for (const Extent& e : to_free) alloc_->free_after(e, seq);
  unshared_.committed(seq);
  return seq;
}

void FileSystem::for_unshared_runs(Extent e, const std::function<void(Extent, bool)>& fn) {
  const std::vector<Extent> hits = unshared_.overlapping(e);  // by start
  BlockNo at = e.start;
  for (const Extent& h : hits) {
    if (h.end() <= at) continue;
    const BlockNo from = std::max(h.start, at);
    if (from > at) fn({at, from - at}, false);
    fn({from, h.end() - from}, true);
    at = h.end();
  }
  if (at < e.end()) fn({at, e.end() - at}, false);
}

void FileSystem::unshare_durable(std::uint64_t seq) {
  unshared_.durable(seq);
}

void FileSystem::drop_refs(const std::vector<Segment>& gone, Txn& txn, std::vector<Extent>& to_free) {
  std::vector<RefcountChange> changes;
  const std::size_t freed_before = to_free.size();
  for (const Segment& g : gone)
    if (!g.hole()) refs_.drop_ref({g.pblk, g.len}, to_free, &changes);
  packs_.keep_open(to_free, freed_before);  // an open pack block waits for its next file
  // A block going from one reference to none needs no record: the block
  // map change that dropped it says so.
  for (const RefcountChange& c : changes)
    if (c.count > 0) txn.add(RefcountSetRec{c.extent.start, c.extent.len, c.count});
  // Blocks left with one reference are still shared on the device until
  // this change is durable (commit() gives them its sequence number).
  for (const RefcountChange& c : changes)
    if (c.count == 1) unshared_.add(c.extent);
}

void FileSystem::add_refs(Extent e, Txn& txn) {
  std::vector<RefcountChange> changes;
  refs_.add_ref(e, &changes);
  for (const RefcountChange& c : changes) txn.add(RefcountSetRec{c.extent.start, c.extent.len, c.count});
}

int FileSystem::begin_change(Journal::Change change) {
  if (int rc = journal_->admit(change); rc) return rc;
  if (change != Journal::Change::kGrows) return 0;
  for (int tries = 0;; ++tries) {
    const std::uint64_t trims = trims_given_back();
    if (alloc_->free_blocks() >= metadata_need_blocks()) return 0;
    if (tries == kSpaceRetries || !commit_for_space(trims)) return -ENOSPC;
  }
}

bool FileSystem::allocate_data(const AllocRequest& req, std::vector<Extent>& out) {
  for (int tries = 0;; ++tries) {
    const std::uint64_t trims = trims_given_back();
    if (alloc_->allocate_all(req, out)) return true;
    if (tries == kSpaceRetries || !commit_for_space(trims)) return false;
  }
}

bool FileSystem::commit_for_space(std::uint64_t trims_before) {
  const bool trimmed = wait_for_trimmed_blocks(trims_before);
  if (alloc_->pending_blocks() == 0) return trimmed;
  return journal_->sync() == 0;
}

std::uint64_t FileSystem::trims_given_back() { return trim_given_back_.load(); }

bool FileSystem::wait_for_trimmed_blocks(std::uint64_t trims_before) {
  std::unique_lock lk(trim_mu_);
  trim_cv_.wait(lk, [this] { return trim_held_ == 0; });
  return trim_given_back_ != trims_before;
}

Attr FileSystem::attr_of(const Inode& in) const {
  Attr a;
  a.ino = in.ino;
  a.generation = in.generation;
  a.mode = in.mode;
  a.nlink = in.nlink;
  a.uid = in.uid;
  a.gid = in.gid;
  a.rdev = in.rdev;
  a.size = in.is_symlink() && in.target() ? in.target()->size() : in.size;
  // A packed file holds only its own bytes of the block it shares.
  a.blocks = in.allocated_blocks() * (kBlockSize / 512);
  if (in.packed())
    a.blocks = a.blocks - kBlockSize / 512 + std::min<std::uint64_t>(kBlockSize / 512, (in.size + 511) / 512);
  a.atime_ns = in.atime_ns;
  a.mtime_ns = in.mtime_ns;
  a.ctime_ns = in.ctime_ns;
  return a;
}

// Validates a name about to be used in directory `parent` (meta_mu_ held).
int FileSystem::check_dir_entry(Ino parent, std::string_view name, Inode** dir) {
  if (int rc = check_name(name); rc) return rc;
  Inode* p = inodes_.get(parent);
  if (!p) return -ENOENT;
  if (!p->is_dir()) return -ENOTDIR;
  if (p->nlink == 0) return -ENOENT;  // removed directory, still open
  *dir = p;
  return 0;
}

Inode* FileSystem::new_inode(std::uint32_t mode, const Cred& cred, const Inode& parent) {
  Inode* in = inodes_.create();
  in->generation = next_generation_++;
  in->data_version = next_data_version_.fetch_add(1);  // never one an earlier inode of this number had
  in->mode = mode;
  in->uid = cred.uid;
  in->gid = cred.gid;
  // BSD group semantics in a setgid directory: the group is inherited, and
  // so is the setgid bit by subdirectories.
  if (parent.mode & S_ISGID) {
    in->gid = parent.gid;
    if (S_ISDIR(mode)) in->mode |= S_ISGID;
  }
  in->atime_ns = in->mtime_ns = in->ctime_ns = in->btime_ns = now_ns();
  in->region = parent.region;  // everything below a region root allocates from it
  in->init_payload();
  return in;
}

void FileSystem::mark_changed(Inode& in, std::int64_t now, bool modified) {
  if (in.is_reg() && kernel_write_times_.load(std::memory_order_relaxed)) return;
  in.ctime_ns = now;
  if (modified) in.mtime_ns = now;
}

void FileSystem::touch_dir(Inode& dir, std::int64_t now, Txn& txn) {
  dir.mtime_ns = dir.ctime_ns = now;
  txn.inode(dir);
}

// Drops an inode that has no names, no kernel references and no open
// handles (meta_mu_ held exclusively).
void FileSystem::release_if_unused(Inode& in, Txn& txn) {
  if (in.in_use() || in.ino == kRootIno) return;
  free_inode(in, txn);
}

// ------------------------------------------------------------------ lookup

int FileSystem::lookup(Ino parent, std::string_view name, Attr* out) {
  if (name.size() > kNameMax) return -ENAMETOOLONG;
  std::unique_lock m(meta_mu_);
  Inode* p = inodes_.get(parent);
  if (!p) return -ENOENT;
  if (!p->is_dir()) return -ENOTDIR;
  Ino target;
  if (name == ".") {
    target = parent;
  } else if (name == "..") {
    target = p->parent() ? p->parent() : kRootIno;
  } else {
    auto d = p->dir()->lookup(name);
    if (!d) return -ENOENT;
    target = d->ino;
  }
  Inode* in = inodes_.get(target);
  if (!in) return -ENOENT;
  ++in->lookups;
  *out = attr_of(*in);
  return 0;
}

void FileSystem::forget(Ino ino, std::uint64_t n) {
  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return;
  in->lookups -= std::min(in->lookups, n);
  if (!in->in_use() && !opts_.read_only) {
    Txn txn;
    release_if_unused(*in, txn);
  }
}

int FileSystem::getattr(Ino ino, Attr* out) {
  std::shared_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  *out = attr_of(*in);
  return 0;
}

int FileSystem::access(Ino ino, int mask, const Cred& cred) {
  std::shared_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  if (mask == F_OK) return 0;
  if ((mask & W_OK) && opts_.read_only) return -EROFS;
  if (cred.uid == 0) {
    // root may do anything but execute a file nobody may execute
    if ((mask & X_OK) && !in->is_dir() && !(in->mode & 0111)) return -EACCES;
    return 0;
  }
  std::uint32_t bits = in->mode & 07;
  if (cred.uid == in->uid)
    bits = (in->mode >> 6) & 07;
  else if (cred.gid == in->gid)
    bits = (in->mode >> 3) & 07;
  return (static_cast<std::uint32_t>(mask) & ~bits & 07) ? -EACCES : 0;
}

// ----------------------------------------------------------------- setattr

namespace {

// `mode` after the kills `valid` asks for (SetAttr::kKillSuidgid, kKillSgid).
std::uint32_t without_suidgid(std::uint32_t mode, std::uint32_t valid) {
  if (S_ISDIR(mode) || !(valid & SetAttr::kKillSuidgid)) return mode;
  mode &= ~static_cast<std::uint32_t>(S_ISUID);
  if ((mode & S_IXGRP) || (valid & SetAttr::kKillSgid)) mode &= ~static_cast<std::uint32_t>(S_ISGID);
  return mode;
}

}  // namespace

int FileSystem::setattr(Ino ino, const SetAttr& sa, Attr* out) {
  if (opts_.read_only) return -EROFS;
  if ((sa.valid & ~SetAttr::kKillSgid) == SetAttr::kKillSuidgid) {
    // Asked on every O_DIRECT write of an unprivileged caller: no change
    // (and no journal record) unless there is a bit to clear.
    std::shared_lock m(meta_mu_);
    const Inode* in = inodes_.get(ino);
    if (!in) return -ENOENT;
    if (without_suidgid(in->mode, sa.valid) == in->mode) {
      *out = attr_of(*in);
      return 0;
    }
  }
  if (int rc = begin_change(Journal::Change::kShrinks); rc) return rc;
  if (sa.valid & SetAttr::kSize) {
    // A "truncate" to the size the file has changes no byte: overlayfs sends
    // one after every copy-up. Taken for a change, it broke the hash that
    // the copy's writes had streamed in, and the file's close then read it
    // all back (1696 copy-ups in the docker workflow's container step, 0.9 s
    // of hashing and 0.5 s of comparing, bench VM). A write that changes the
    // size meanwhile is a change of its own.
    bool resizes = true;
    {
      std::shared_lock m(meta_mu_);
      if (const Inode* in = inodes_.get(ino)) resizes = in->size != sa.size;
    }
    if (resizes)
      if (int rc = content_changing(ino); rc) return rc;
  }
  // A size change rewrites the block map: it needs the inode's I/O lock.
  std::unique_lock<std::shared_mutex> io;
  if (sa.valid & SetAttr::kSize) io = std::unique_lock(io_lock(ino));
  std::uint64_t old_size = 0;
  if (sa.valid & SetAttr::kSize) {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in) return -ENOENT;
    if (in->is_dir()) return -EISDIR;
    if (!in->is_reg()) return -EINVAL;
    old_size = in->size;
  }
  // Growing a file exposes the rest of its last block: zero it first.
  if ((sa.valid & SetAttr::kSize) && sa.size > old_size)
    if (int rc = zero_tail_block(ino, old_size); rc) return rc;

  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  Txn txn;
  const std::int64_t now = now_ns();
  std::vector<Extent> freed;
  if (sa.valid & SetAttr::kSize) truncate_locked(*in, sa.size, txn, freed);
  mark_changed(*in, now, sa.valid & SetAttr::kSize);  // explicit times below win
  if (sa.valid & SetAttr::kMode) in->mode = (in->mode & S_IFMT) | (sa.mode & 07777);
  in->mode = without_suidgid(in->mode, sa.valid);
  if (sa.valid & (SetAttr::kUid | SetAttr::kGid)) {
    if (sa.valid & SetAttr::kUid) in->uid = sa.uid;
    if (sa.valid & SetAttr::kGid) in->gid = sa.gid;
  }
  if (sa.valid & SetAttr::kAtimeNow) in->atime_ns = now;
  else if (sa.valid & SetAttr::kAtime) in->atime_ns = sa.atime_ns;
  if (sa.valid & SetAttr::kMtimeNow) in->mtime_ns = now;
  else if (sa.valid & SetAttr::kMtime) in->mtime_ns = sa.mtime_ns;
  if (sa.valid & SetAttr::kCtime) in->ctime_ns = sa.ctime_ns;
  txn.inode(*in);
  commit(txn, freed);
  *out = attr_of(*in);
  return 0;
}

// ----------------------------------------------------------- create things

int FileSystem::make_node(Ino parent, std::string_view name, std::uint32_t mode, std::uint32_t rdev,
                          std::string_view target, const Cred& cred, Attr* out, bool open_it) {
  if (opts_.read_only) return -EROFS;
  if (int rc = begin_change(Journal::Change::kGrows); rc) return rc;
  std::unique_lock m(meta_mu_);
  Inode* dir;
  if (int rc = check_dir_entry(parent, name, &dir); rc) return rc;
  if (dir->dir()->lookup(name)) return -EEXIST;
  if (S_ISDIR(mode) && dir->nlink >= kMaxLinks) return -EMLINK;
  Inode* in = new_inode(mode, cred, *dir);
  in->rdev = (S_ISCHR(mode) || S_ISBLK(mode)) ? rdev : 0;
  in->nlink = S_ISDIR(mode) ? 2 : 1;
  Txn txn;
  if (S_ISDIR(mode)) {
    in->set_parent(dir->ino);
    ++dir->nlink;
    if (wants_region(*dir, name)) start_region(*in, region_blocks_, txn);
  }
  if (in->target()) in->target()->assign(target);
  in->lookups = 1;
  if (open_it) {
    opened_for_dedup(*in, O_RDWR);
    in->opens = 1;
  }
  dir->dir()->add(name, in->ino, dtype_of(in->mode));
  txn.inode(*in);
  txn.dirent(dir->ino, name, in->ino, dtype_of(in->mode));
  touch_dir(*dir, in->ctime_ns, txn);
  commit(txn);
  *out = attr_of(*in);
  return 0;
}

int FileSystem::mknod(Ino parent, std::string_view name, std::uint32_t mode, std::uint32_t rdev, const Cred& cred,
                      Attr* out) {
  std::uint32_t type = mode & S_IFMT;
  if (type == 0) mode |= S_IFREG;
  else if (type != S_IFREG && type != S_IFCHR && type != S_IFBLK && type != S_IFIFO && type != S_IFSOCK)
    return -EINVAL;
  if (int rc = make_node(parent, name, mode, rdev, {}, cred, out, false); rc) return rc;
  if (S_ISREG(mode) && is_overlay_temp_name(name)) {
    std::unique_lock m(meta_mu_);
    // ... and only in overlayfs's work directory: one named "work".
    const Inode* dir = inodes_.get(parent);
    const Inode* above = dir && dir->parent() ? inodes_.get(dir->parent()) : nullptr;
    const auto work = above && above->dir() ? above->dir()->lookup(kOverlayWorkDirName) : std::nullopt;
    Inode* in = inodes_.get(out->ino);
    if (in && work && work->ino == parent) in->copy_up_target = true;
  }
  return 0;
}

int FileSystem::mkdir(Ino parent, std::string_view name, std::uint32_t mode, const Cred& cred, Attr* out) {
  return make_node(parent, name, S_IFDIR | (mode & 07777), 0, {}, cred, out, false);
}

int FileSystem::symlink(Ino parent, std::string_view name, std::string_view target, const Cred& cred, Attr* out) {
  if (target.empty()) return -ENOENT;
  if (target.size() > kSymlinkMax) return -ENAMETOOLONG;
  return make_node(parent, name, S_IFLNK | 0777, 0, target, cred, out, false);
}

int FileSystem::create(Ino parent, std::string_view name, std::uint32_t mode, int /*flags*/, const Cred& cred,
                       Attr* out) {
  return make_node(parent, name, S_IFREG | (mode & 07777), 0, {}, cred, out, true);
}

int FileSystem::readlink(Ino ino, std::string* out) {
  std::shared_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  if (!in->target()) return -EINVAL;
  *out = *in->target();
  return 0;
}

int FileSystem::link(Ino ino, Ino newparent, std::string_view newname, Attr* out) {
  if (opts_.read_only) return -EROFS;
  if (int rc = begin_change(Journal::Change::kGrows); rc) return rc;
  std::unique_lock m(meta_mu_);
  Inode* dir;
  if (int rc = check_dir_entry(newparent, newname, &dir); rc) return rc;
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  if (in->is_dir()) return -EPERM;
  if (in->nlink == 0) return -ENOENT;
  if (in->nlink >= kMaxLinks) return -EMLINK;
  if (dir->dir()->lookup(newname)) return -EEXIST;
  const std::int64_t now = now_ns();
  ++in->nlink;
  in->copy_up_target = false;
  mark_changed(*in, now, false);
  ++in->lookups;
  dir->dir()->add(newname, ino, dtype_of(in->mode));
  Txn txn;
  txn.inode(*in);
  txn.dirent(dir->ino, newname, ino, dtype_of(in->mode));
  touch_dir(*dir, now, txn);
  commit(txn);
  *out = attr_of(*in);
  return 0;
}

// ------------------------------------------------------------------ remove

int FileSystem::remove_entry(Ino parent, std::string_view name, bool want_dir) {
  if (opts_.read_only) return -EROFS;
  if (int rc = begin_change(Journal::Change::kShrinks); rc) return rc;
  std::unique_lock m(meta_mu_);
  Inode* dir;
  if (int rc = check_dir_entry(parent, name, &dir); rc) return rc;
  auto d = dir->dir()->lookup(name);
  if (!d) return -ENOENT;
  Inode* in = inodes_.get(d->ino);
  if (!in) return -ENOENT;
  if (want_dir && !in->is_dir()) return -ENOTDIR;
  if (!want_dir && in->is_dir()) return -EISDIR;
  if (want_dir && !in->dir()->empty()) return -ENOTEMPTY;
  const std::int64_t now = now_ns();
  dir->dir()->remove(name);
  Txn txn;
  txn.undirent(dir->ino, name);
  if (want_dir) {
    in->nlink = 0;
    --dir->nlink;
    end_region(*in, txn);  // removing a region's root frees the whole region
  } else {
    --in->nlink;
  }
  mark_changed(*in, now, false);
  txn.inode(*in);
  touch_dir(*dir, now, txn);
  if (in->in_use()) {
    commit(txn);
  } else {
    free_inode(*in, txn);
  }
  return 0;
}

int FileSystem::unlink(Ino parent, std::string_view name) { return remove_entry(parent, name, false); }
int FileSystem::rmdir(Ino parent, std::string_view name) { return remove_entry(parent, name, true); }

// ------------------------------------------------------------------ rename

int FileSystem::rename(Ino parent, std::string_view name, Ino newparent, std::string_view newname, unsigned flags,
                       const Cred& cred) {
  if (opts_.read_only) return -EROFS;
  if (flags & ~(kRenameNoReplace | kRenameExchange | kRenameWhiteout)) return -EINVAL;
  if ((flags & kRenameExchange) && (flags & (kRenameNoReplace | kRenameWhiteout))) return -EINVAL;
  if (int rc = begin_change(Journal::Change::kShrinks); rc) return rc;
  std::unique_lock m(meta_mu_);
  Inode *from_dir, *to_dir;
  if (int rc = check_dir_entry(parent, name, &from_dir); rc) return rc;
  if (int rc = check_dir_entry(newparent, newname, &to_dir); rc) return rc;
  auto src = from_dir->dir()->lookup(name);
  if (!src) return -ENOENT;
  Inode* in = inodes_.get(src->ino);
  if (!in) return -ENOENT;
  auto dst = to_dir->dir()->lookup(newname);
  Inode* victim = dst ? inodes_.get(dst->ino) : nullptr;
  if (dst && !victim) return -ENOENT;

  if ((flags & kRenameNoReplace) && dst) return -EEXIST;
  if ((flags & kRenameExchange) && !dst) return -ENOENT;
  if (victim == in) return 0;  // two names of one inode: nothing to do

  // A directory may not move below itself.
  auto is_ancestor = [&](Ino anc, Ino node) {
    for (Ino cur = node; cur != kRootIno;) {
      if (cur == anc) return true;
      Inode* c = inodes_.get(cur);
      if (!c || c->parent() == 0) return false;
      cur = c->parent();
    }
    return anc == kRootIno;
  };
  if (in->is_dir() && is_ancestor(in->ino, to_dir->ino)) return -EINVAL;
  if ((flags & kRenameExchange) && victim->is_dir() && is_ancestor(victim->ino, from_dir->ino)) return -EINVAL;

  if (victim && !(flags & kRenameExchange)) {
    if (in->is_dir() && !victim->is_dir()) return -ENOTDIR;
    if (!in->is_dir() && victim->is_dir()) return -EISDIR;
    if (victim->is_dir() && !victim->dir()->empty()) return -ENOTEMPTY;
  }
  if (in->is_dir() && from_dir != to_dir && !(victim && victim->is_dir()) && to_dir->nlink >= kMaxLinks)
    return -EMLINK;

  const std::int64_t now = now_ns();
  in->copy_up_target = false;  // a file renamed is a user's file (see copy_up_target.h)
  if (victim) victim->copy_up_target = false;
  Txn txn;
  if (flags & kRenameExchange) {
    from_dir->dir()->replace(name, victim->ino, dtype_of(victim->mode));
    to_dir->dir()->replace(newname, in->ino, dtype_of(in->mode));
    txn.dirent(from_dir->ino, name, victim->ino, dtype_of(victim->mode));
    txn.dirent(to_dir->ino, newname, in->ino, dtype_of(in->mode));
    if (from_dir != to_dir) {
      if (in->is_dir()) {
        in->set_parent(to_dir->ino);
        --from_dir->nlink;
        ++to_dir->nlink;
      }
      if (victim->is_dir()) {
        victim->set_parent(from_dir->ino);
        ++from_dir->nlink;
        --to_dir->nlink;
      }
    }
    mark_changed(*victim, now, false);
    txn.inode(*victim);
  } else {
    from_dir->dir()->remove(name);
    txn.undirent(from_dir->ino, name);
    if (victim) {
      to_dir->dir()->replace(newname, in->ino, dtype_of(in->mode));
      if (victim->is_dir()) {
        victim->nlink = 0;
        --to_dir->nlink;
        end_region(*victim, txn);
      } else {
        --victim->nlink;
      }
      mark_changed(*victim, now, false);
      txn.inode(*victim);
    } else {
      to_dir->dir()->add(newname, in->ino, dtype_of(in->mode));
    }
    txn.dirent(to_dir->ino, newname, in->ino, dtype_of(in->mode));
    if (in->is_dir() && from_dir != to_dir) {
      in->set_parent(to_dir->ino);
      --from_dir->nlink;
      ++to_dir->nlink;  // (a replaced directory was already subtracted above)
    }
    if (flags & kRenameWhiteout) {
      // overlayfs: a 0:0 character device marks the old name as deleted.
      Inode* wh = new_inode(S_IFCHR, cred, *from_dir);
      wh->nlink = 1;
      from_dir->dir()->add(name, wh->ino, dtype_of(wh->mode));
      txn.inode(*wh);
      txn.dirent(from_dir->ino, name, wh->ino, dtype_of(wh->mode));
    }
  }
  mark_changed(*in, now, false);
  txn.inode(*in);
  touch_dir(*from_dir, now, txn);
  if (to_dir != from_dir) touch_dir(*to_dir, now, txn);
  if (victim && !(flags & kRenameExchange) && !victim->in_use()) {
    free_inode(*victim, txn);
  } else {
    commit(txn);
  }
  return 0;
}

// ------------------------------------------------------------ open handles

int FileSystem::open(Ino ino, int flags, OpenAdvice* advice) {
  if (opts_.read_only && (flags & O_ACCMODE) != O_RDONLY) return -EROFS;
  if (flags & O_TRUNC) {
    SetAttr sa;
    sa.valid = SetAttr::kSize;
    sa.size = 0;
    Attr ignored;
    std::uint64_t size;
    {
      std::shared_lock m(meta_mu_);
      Inode* in = inodes_.get(ino);
      if (!in) return -ENOENT;
      size = in->size;
    }
    if (size != 0)
      if (int rc = setattr(ino, sa, &ignored); rc) return rc;
  }
  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  opened_for_dedup(*in, flags);
  ++in->opens;
  // Written around the page cache only where the copy's bytes can be
  // shared: across regions under dedup_scope=region, or with dedup off,
  // every byte is written, and the page cache's write-back does that in
  // larger, parallel pieces (a 1 GiB copy-up from a tmpfs lower layer took
  // 1.59-2.25 s around it against 1.26-2.00 s through it, bench VM).
  if (advice)
    advice->direct_io = in->copy_up_target && (flags & O_ACCMODE) == O_WRONLY && opts_.dedup &&
                        !opts_.dedup_region_scope;
  in->copy_up_target = false;
  return 0;
}

void FileSystem::release(Ino ino) {
  DedupAfterClose dedup;
  std::vector<Extent> served;
  {
    std::unique_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in) return;
    if (in->opens > 0) --in->opens;
    if (in->opens == 0 && std::atomic_ref(in->copy_source).exchange(false, std::memory_order_relaxed)) {
      // The copy is over (overlayfs closes the lower file once its writes
      // were compared; cp to another filesystem never compares): the blocks
      // the file kept for it go, and a later copy asks SEEK_DATA again.
      if (const ExtentMap* map = in->map())
        for (const FileExtent& e : *map)
          if (!is_packed(e.flags)) served.push_back({e.pblk, e.len});
    }
    closed_for_dedup(*in, &dedup);
    if (!in->in_use() && !opts_.read_only) {
      Txn txn;
      release_if_unused(*in, txn);
    }
  }
  for (const Extent& e : served) prefetched_.forget(e);
  // The last close of a changed file: find a stored copy of its contents.
  if (dedup.ino) dedup_after_close(dedup);
}

// ------------------------------------------------------------- directories

int FileSystem::opendir(Ino ino) {
  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  if (!in->is_dir()) return -ENOTDIR;
  in->dir()->open_listing();
  ++in->opens;
  return 0;
}

void FileSystem::releasedir(Ino ino) {
  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return;
  in->dir()->close_listing();
  if (in->opens > 0) --in->opens;
  if (!in->in_use() && !opts_.read_only) {
    Txn txn;
    release_if_unused(*in, txn);
  }
}

int FileSystem::readdir(Ino ino, std::uint64_t cookie, bool plus,
                        const std::function<bool(const DirListEntry&, const Attr* attr)>& fn) {
  // Cookies: 0 = start, 1 = after ".", 2 = after "..", 2 + i + 1 = after
  // entry i of the directory's vector.
  std::unique_lock m(meta_mu_);
  Inode* dir = inodes_.get(ino);
  if (!dir) return -ENOENT;
  if (!dir->is_dir()) return -ENOTDIR;
  Attr attr;
  if (cookie == 0) {
    attr = attr_of(*dir);
    if (!fn({".", ino, DT_DIR, 1}, plus ? &attr : nullptr)) return 0;
    cookie = 1;
  }
  if (cookie == 1) {
    Inode* p = inodes_.get(dir->parent() ? dir->parent() : kRootIno);
    if (p) attr = attr_of(*p);
    if (!fn({"..", p ? p->ino : kRootIno, DT_DIR, 2}, plus && p ? &attr : nullptr)) return 0;
    cookie = 2;
  }
  dir->dir()->list(cookie - 2, [&](const DirEntry& d, std::uint64_t next) {
    Inode* child = inodes_.get(d.ino);
    if (plus && child) attr = attr_of(*child);
    if (!fn({d.name, d.ino, d.dtype, next + 2}, plus && child ? &attr : nullptr)) return false;
    if (plus && child) ++child->lookups;
    return true;
  });
  return 0;
}

// ------------------------------------------------------------------ xattrs

namespace {
// Namespaces dhfs stores; POSIX ACLs (system.*) are not supported.
bool supported_xattr(std::string_view name) {
  return name.starts_with("user.") || name.starts_with("trusted.") || name.starts_with("security.");
}
}  // namespace

int FileSystem::setxattr(Ino ino, std::string_view name, std::string_view value, int flags) {
  if (opts_.read_only) return -EROFS;
  if (name.size() > kXattrNameMax) return -ERANGE;
  if (name.empty()) return -EINVAL;
  if (!supported_xattr(name)) return -EOPNOTSUPP;
  if (value.size() > kXattrValueMax) return -E2BIG;
  if (int rc = begin_change(Journal::Change::kGrows); rc) return rc;
  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  bool exists = in->xattrs && in->xattrs->find(name) != in->xattrs->end();
  if ((flags & XATTR_CREATE) && exists) return -EEXIST;
  if ((flags & XATTR_REPLACE) && !exists) return -ENODATA;
  if (!in->xattrs) in->xattrs = std::make_unique<XattrMap>();
  (*in->xattrs)[std::string(name)] = std::string(value);
  mark_changed(*in, now_ns(), false);
  Txn txn;
  txn.add(XattrSetRec{ino, name, value});
  txn.inode(*in);
  commit(txn);
  return 0;
}

int FileSystem::getxattr(Ino ino, std::string_view name, std::string* value) {
  if (name.size() > kXattrNameMax) return -ERANGE;
  std::shared_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  if (!in->xattrs) return -ENODATA;
  auto it = in->xattrs->find(name);
  if (it == in->xattrs->end()) return -ENODATA;
  *value = it->second;
  return 0;
}

int FileSystem::listxattr(Ino ino, std::string* names, bool with_trusted) {
  std::shared_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  names->clear();
  if (in->xattrs)
    for (const auto& [name, value] : *in->xattrs) {
      if (!with_trusted && name.starts_with("trusted.")) continue;
      names->append(name);
      names->push_back('\0');
    }
  return 0;
}

int FileSystem::removexattr(Ino ino, std::string_view name) {
  if (opts_.read_only) return -EROFS;
  if (name.size() > kXattrNameMax) return -ERANGE;
  if (int rc = begin_change(Journal::Change::kShrinks); rc) return rc;
  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  if (!in->xattrs) return -ENODATA;
  auto it = in->xattrs->find(name);
  if (it == in->xattrs->end()) return -ENODATA;
  in->xattrs->erase(it);
  if (in->xattrs->empty()) in->xattrs.reset();
  mark_changed(*in, now_ns(), false);
  Txn txn;
  txn.add(XattrDelRec{ino, name});
  txn.inode(*in);
  commit(txn);
  return 0;
}

// ------------------------------------------------------------------- stats

FsStats FileSystem::stats() {
  FsStats s;
  s.total_blocks = alloc_->area().len;
  s.free_blocks = alloc_->free_blocks() + alloc_->pending_blocks();
  // Blocks freed by changes not yet durable count: a writer short of space
  // commits to get them (commit_for_space), so df shows a deletion at once.
  s.available_blocks = alloc_->available_blocks() + alloc_->pending_blocks();
  s.metadata_blocks = sb_.journal_blocks + (root_.stream_bytes + kBlockSize - 1) / kBlockSize;
  std::shared_lock m(meta_mu_);
  s.inodes = inodes_.count();
  s.shared_blocks = refs_.shared_blocks();
  s.saved_blocks = refs_.saved_blocks();
  s.regions = regions_.size();
  struct Packed {
    BlockNo pblk;
    std::uint32_t offset;
    std::uint64_t size;
  };
  std::vector<Packed> packed;  // sorted and summed once the lock is released
  inodes_.for_each([&](const Inode& in) {
    if (in.is_reg()) s.logical_bytes += in.size;
    s.allocated_blocks += in.allocated_blocks();
    if (in.packed()) {
      const FileExtent& e = *in.map()->begin();
      packed.push_back({e.pblk, packed_offset(e.flags), in.size});
    }
  });
  m.unlock();
  // Bytes held in each pack block: files that share bytes (dedup) start at
  // the same offset, and ranges at different offsets never overlap (see
  // fsck), so the longest range at each offset counts.
  std::sort(packed.begin(), packed.end(), [](const Packed& a, const Packed& b) {
    return std::tie(a.pblk, a.offset, b.size) < std::tie(b.pblk, b.offset, a.size);  // longest first
  });
  std::uint64_t held_bytes = 0;
  for (std::size_t i = 0; i < packed.size(); ++i) {
    const Packed& p = packed[i];
    ++s.packed_files;
    s.packed_bytes += p.size;
    if (i == 0 || p.pblk != packed[i - 1].pblk) ++s.pack_blocks;
    if (i == 0 || p.pblk != packed[i - 1].pblk || p.offset != packed[i - 1].offset) held_bytes += p.size;
  }
  s.pack_unused_bytes = s.pack_blocks * kBlockSize - std::min(held_bytes, s.pack_blocks * kBlockSize);
  return s;
}

int FileSystem::syncfs() { return journal_->sync(); }

int FileSystem::fsync(Ino ino, bool /*datasync*/) {
  {
    std::shared_lock m(meta_mu_);
    if (!inodes_.get(ino)) return -ENOENT;
  }
  if (opts_.read_only) return 0;
  return journal_->sync();
}

}  // namespace dhfs
