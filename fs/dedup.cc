// FileSystem: file-level dedup. A regular file closed after its contents
// changed gets its whole-file content hash (from the HashStream of its
// sequential writes, or by reading it back), which is looked up in the
// DedupIndex; a file with the same hash, size (and region, with
// dedup_scope=region) is compared byte by byte, and if equal the closed
// file takes over its extents and frees its own. Small files are caught
// earlier: the first write of a whole small file into an empty file is
// looked up and, if stored already, never written (write_duplicate_small).
//
// Races are settled by versions, not by holding locks across the reads:
// every change of a file's contents gives it a new data_version (under the
// shared meta_mu_; unique across inodes, so a reused inode number is told
// apart too) before it touches anything, and the switch of extents
// happens under the exclusive meta_mu_ only if neither file's version moved
// since it was compared. A change that starts after the switch sees the
// blocks shared and copies on write.
//
// The persisted hash of a file is withdrawn, durably, before its contents
// change, so that after any crash the hashes on the device describe the
// files as they are.
#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "fs/filesystem.h"

namespace dhfs {

namespace {

constexpr std::size_t kCompareBytes = 1 << 20;  // files are compared and hashed this much at a time

std::uint64_t version_of(Inode& in) { return std::atomic_ref(in.data_version).load(); }

bool has_unwritten(const ExtentMap& map) {
  for (const FileExtent& e : map)
    if (e.flags & kExtentUnwritten) return true;
  return false;
}

bool same_extents(const ExtentMap& a, const ExtentMap& b) {
  auto ia = a.begin(), ib = b.begin();
  for (; ia != a.end() && ib != b.end(); ++ia, ++ib)
    if (ia->lblk != ib->lblk || ia->len != ib->len || ia->pblk != ib->pblk || ia->flags != ib->flags) return false;
  return ia == a.end() && ib == b.end();
}

}  // namespace

DedupKey FileSystem::dedup_key(const Inode& in, const ContentHash& h) const {
  return {h, in.size, opts_.dedup_region_scope ? in.region : 0};
}

void FileSystem::index_content_hashes() {
  inodes_.for_each([&](const Inode& in) {
    if (in.hash_valid && in.is_reg()) dedup_index_.add(dedup_key(in, in.content_hash), {in.ino, in.generation});
  });
}

int FileSystem::content_changing(Ino ino, const std::uint64_t* write_off, std::span<const std::byte> data) {
  bool withdraw = false;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in || !in->is_reg()) return 0;
    std::atomic_ref(in->data_version).store(next_data_version_.fetch_add(1));
    if (std::shared_ptr<HashStream> s = in->open_state ? in->open_state->stream : nullptr) {
      if (write_off)
        s->feed(*write_off, data);
      else
        s->break_off();
    }
    withdraw = in->hash_valid || in->hash_withdrawing;
  }
  return withdraw ? withdraw_content_hash(ino) : 0;
}

// The hash goes before the contents change, durably: the change may be an
// overwrite in place, which no journal record describes.
int FileSystem::withdraw_content_hash(Ino ino) {
  if (int rc = begin_change(Journal::Change::kShrinks); rc) return rc;
  {
    std::unique_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in) return 0;
    if (in->hash_valid) {
      dedup_index_.remove(dedup_key(*in, in->content_hash), ino);
      in->hash_valid = false;
      in->hash_withdrawing = true;
      Txn txn;
      txn.add(ContentHashRec{ino, kContentHashWithdrawn, 0, 0, 0});
      commit(txn);
    }
  }
  int rc = journal_->sync();
  if (rc == 0) {
    std::unique_lock m(meta_mu_);
    if (Inode* in = inodes_.get(ino)) in->hash_withdrawing = false;
  }
  return rc;
}

void FileSystem::opened_for_dedup(Inode& in, int flags) {
  if (!in.is_reg()) return;
  if (!in.open_state) in.open_state = std::make_unique<OpenFileState>();
  OpenFileState& st = *in.open_state;
  if (in.opens == 0) st.version_at_open = in.data_version;
  if (opts_.dedup && !opts_.read_only && in.size == 0 && !st.stream && (flags & O_ACCMODE) != O_RDONLY)
    st.stream = std::make_shared<HashStream>();
}

void FileSystem::closed_for_dedup(Inode& in, DedupAfterClose* todo) {
  if (in.opens != 0 || !in.open_state) return;
  const std::unique_ptr<OpenFileState> st = std::move(in.open_state);
  std::shared_ptr<HashStream> stream = std::move(st->stream);
  // Only files written from empty (created or truncated, then written):
  // a file changed in place or appended to (a log, a database) is left to
  // an offline `dhfsctl dedup`, or every close would read it back. So is
  // one whose handles overlapped such a change: a copied-up file that a
  // container appends to before the kernel released overlayfs's handle
  // (the append writes the hashed last page again; 8 containers appending
  // to their copied-up files read every one back at its close, 1.0-1.4 s of
  // the daemon's time in the docker workflow's container step, bench VM).
  if (!stream || !opts_.dedup || opts_.read_only || in.nlink == 0 || in.size == 0 ||
      in.data_version == st->version_at_open || in.hash_valid || stream->rewritten())
    return;
  todo->ino = in.ino;
  todo->version = in.data_version;
  todo->stream = std::move(stream);
}

void FileSystem::dedup_after_close(const DedupAfterClose& todo) {
  std::uint64_t size;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(todo.ino);
    if (!in || version_of(*in) != todo.version) return;
    size = in->size;
  }
  std::optional<ContentHash> h;
  if (todo.stream) h = todo.stream->digest(size);
  if (!h && size <= opts_.dedup_rehash_bytes) h = hash_file(todo.ino, todo.version);
  if (!h) return;
  DedupOutcome ignored;
  settle_content(todo.ino, *h, todo.version, &ignored);
}

int FileSystem::dedup_file(Ino ino, DedupOutcome* out) {
  *out = {};
  if (opts_.read_only) return -EROFS;
  std::uint64_t version;
  std::optional<ContentHash> h;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in) return -ENOENT;
    if (!in->is_reg() || in->size == 0) return 0;
    out->size = in->size;
    version = version_of(*in);
    if (in->hash_valid) h = in->content_hash;
  }
  if (!opts_.dedup) return 0;
  if (!h) h = hash_file(ino, version);
  if (!h) return 0;  // changed while it was read: it will be hashed when closed
  out->hashed = true;
  return settle_content(ino, *h, version, out);
}

std::optional<ContentHash> FileSystem::content_hash_of(Ino ino) {
  std::shared_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in || !in->hash_valid) return std::nullopt;
  return in->content_hash;
}

// One piece of a file, under its shared I/O lock (nothing read may be
// freed meanwhile). 0 or a negative errno; `out` is empty at the end.
int FileSystem::read_piece(Ino ino, std::uint64_t off, AlignedBuffer& buf, std::span<const std::byte>* out) {
  std::shared_lock io(io_lock(ino));
  return read_locked(ino, off, kCompareBytes, buf, out);
}

// Reads the whole file, a piece at a time, into the hash. nullopt if the
// file changed meanwhile or could not be read.
std::optional<ContentHash> FileSystem::hash_file(Ino ino, std::uint64_t version) {
  HashStream stream;
  AlignedBuffer scratch;
  for (std::uint64_t off = 0;;) {
    std::span<const std::byte> got;
    if (read_piece(ino, off, scratch, &got) != 0) return std::nullopt;
    if (got.empty()) break;
    stream.feed(off, got);
    off += got.size();
  }
  std::shared_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in || version_of(*in) != version) return std::nullopt;
  return stream.digest(in->size);
}

// Whether files `a` and `b` hold the same `size` bytes, read a piece at a
// time (never the whole of a large file in memory).
bool FileSystem::files_equal(Ino a, Ino b, std::uint64_t size) {
  AlignedBuffer buf_a, buf_b;
  for (std::uint64_t off = 0; off < size; off += kCompareBytes) {
    std::span<const std::byte> da, db;
    if (read_piece(a, off, buf_a, &da) != 0 || read_piece(b, off, buf_b, &db) != 0) return false;
    if (da.size() != db.size() || da.empty() || std::memcmp(da.data(), db.data(), da.size()) != 0) return false;
  }
  return true;
}

int FileSystem::settle_content(Ino ino, const ContentHash& h, std::uint64_t version, DedupOutcome* out) {
  struct Candidate {
    DedupHolder holder;
    std::uint64_t version;
    bool same_blocks;
  };
  std::vector<Candidate> candidates;
  DedupKey key;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in || version_of(*in) != version) return 0;
    key = dedup_key(*in, h);
    if (const auto* holders = dedup_index_.find(key))
      for (const DedupHolder& d : *holders) {
        Inode* c = inodes_.get(d.ino);
        if (d.ino == ino || !c || c->generation != d.generation || !c->hash_valid || c->size != in->size) continue;
        candidates.push_back({d, version_of(*c), same_extents(*c->map(), *in->map())});
      }
  }
  for (const Candidate& c : candidates) {
    if (!c.same_blocks && !files_equal(ino, c.holder.ino, key.size)) continue;
    int rc = adopt_extents(ino, version, key, c.holder, c.version, out);
    if (rc != -EAGAIN) return rc;
  }
  return record_content_hash(ino, version, key);
}

// `ino` (at `version`) takes over the extents of `holder` (at
// `holder_version`), whose bytes were found equal to its own.
int FileSystem::adopt_extents(Ino ino, std::uint64_t version, const DedupKey& key, const DedupHolder& holder,
                              std::uint64_t holder_version, DedupOutcome* out) {
  if (int rc = begin_change(Journal::Change::kGrows); rc) return rc;
  // Readers of this file must not be left reading blocks freed here.
  std::unique_lock io(io_lock(ino));
  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  Inode* src = inodes_.get(holder.ino);
  if (!in || in->data_version != version || in->size != key.size || !src || src->generation != holder.generation ||
      !src->hash_valid || src->content_hash != key.hash || src->data_version != holder_version ||
      src->size != key.size || has_unwritten(*src->map()))
    return -EAGAIN;
  Txn txn;
  std::vector<Extent> to_free;
  if (!same_extents(*src->map(), *in->map())) {
    std::vector<Segment> displaced;
    in->map()->set(0, ~0ULL, 0, 0, &displaced);
    txn.extent(ino, 0, ~0ULL, 0, 0);
    for (const FileExtent& e : *src->map()) {
      in->map()->set(e.lblk, e.len, e.pblk, e.flags);
      txn.extent(ino, e.lblk, e.len, e.pblk, e.flags);
      add_refs({e.pblk, e.len}, txn);
    }
    drop_refs(displaced, txn, to_free);
    record_region_changes(txn);
    out->shared = true;
  }
  for (const Extent& e : to_free) out->freed_blocks += e.len;
  in->hash_valid = true;
  in->content_hash = key.hash;
  txn.add(ContentHashRec{ino, kContentHashChunked, key.size, key.hash.lo, key.hash.hi});
  dedup_index_.add(key, {ino, in->generation});
  commit(txn, to_free);
  out->duplicate = true;
  return 0;
}

int FileSystem::record_content_hash(Ino ino, std::uint64_t version, const DedupKey& key) {
  if (int rc = begin_change(Journal::Change::kGrows); rc) return rc;
  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in || in->data_version != version || in->size != key.size) return 0;
  in->hash_valid = true;
  in->content_hash = key.hash;
  dedup_index_.add(key, {ino, in->generation});
  Txn txn;
  txn.add(ContentHashRec{ino, kContentHashChunked, key.size, key.hash.lo, key.hash.hi});
  commit(txn);
  return 0;
}

// The first write of a whole small file, into an empty file, whose bytes a
// stored file holds already: shared instead of written (the caller holds
// the I/O lock). A later write to the file copies on write as usual.
bool FileSystem::write_duplicate_small(Ino ino, std::span<const std::byte> data) {
  ChunkHome home;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in || !in->is_reg() || in->size != 0) return false;
    const DedupKey key{file_hash_of(data), data.size(), opts_.dedup_region_scope ? in->region : 0};
    const auto* holders = dedup_index_.find(key);
    if (!holders) return false;
    auto it = std::find_if(holders->begin(), holders->end(), [&](const DedupHolder& d) {
      Inode* c = inodes_.get(d.ino);
      return d.ino != ino && c && c->generation == d.generation && c->hash_valid && c->size == data.size();
    });
    if (it == holders->end()) return false;
    home = {it->ino, it->generation, 0};
  }
  // Compared byte by byte before anything is shared.
  return share_stored_chunk(ino, 0, data, home);
}

bool FileSystem::is_empty_file(Ino ino) {
  std::shared_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  return in && in->is_reg() && in->size == 0;
}

bool FileSystem::may_share_with(const Inode& writer, const Inode& holder) const {
  return opts_.dedup && (!opts_.dedup_region_scope || writer.region == holder.region);
}

}  // namespace dhfs
