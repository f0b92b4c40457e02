// FileSystem: loading, checkpoints, start and shutdown.
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fs/block_usage.h"
#include "fs/checkpoint.h"
#include "fs/filesystem.h"
#include "fs/loader.h"
#include "fs/log.h"
#include "fs/mkfs.h"
#include "fs/units.h"

namespace dhfs {

namespace {

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

// Every record needed to rebuild `in`.
void emit_inode(const Inode& in, RecordWriter& w) {
  w.add(in.to_record());
  if (in.map())
    for (const FileExtent& e : *in.map()) w.add(ExtentSetRec{in.ino, e.lblk, e.len, e.pblk, e.flags});
  if (in.xattrs)
    for (const auto& [name, value] : *in.xattrs) w.add(XattrSetRec{in.ino, name, value});
  if (in.hash_valid) w.add(ContentHashRec{in.ino, kContentHashChunked, in.size, in.content_hash.lo, in.content_hash.hi});
  if (in.dir()) in.dir()->for_each([&](const DirEntry& d) { w.add(DirentSetRec{in.ino, d.ino, d.dtype, d.name}); });
}

}  // namespace

FileSystem::FileSystem(std::unique_ptr<Device> dev, const Superblock& sb, const FsOptions& opts)
    : dev_(std::make_unique<WatchedDevice>(std::move(dev), prefetched_)),
      sb_(sb),
      total_blocks_(sb.total_blocks),
      opts_(opts) {}

BlockReader& FileSystem::block_reader() {
  std::call_once(block_reader_once_, [this] { block_reader_ = std::make_unique<BlockReader>(*dev_, prefetched_); });
  return *block_reader_;
}

std::unique_ptr<FileSystem> FileSystem::open(std::unique_ptr<Device> dev, const FsOptions& opts,
                                             std::string& error) {
  LoadedState st;
  if (!load_state(*dev, st, error)) return nullptr;
  if (st.superblock_fallback)
    log::warning("{}: the primary superblock is damaged ({}); mounted with its backup from block {}; "
                 "fsck.dhfs rewrites it",
                 dev->describe(), st.superblock_fallback->why, st.superblock_fallback->backup_block);
  FsOptions o = opts;
  if (dev->read_only()) o.read_only = true;
  if (st.sb.feature_ro_compat & ~kKnownRoCompat) o.read_only = true;

  set_allocator_reporter([](std::string_view line) { log::write(log::Level::kError, line); });
  std::unique_ptr<FileSystem> fs(new FileSystem(std::move(dev), st.sb, o));
  fs->inodes_ = std::move(st.meta.inodes);
  fs->refs_ = std::move(st.meta.refs);
  fs->root_ = st.root;
  fs->stream_bytes_ = st.root.stream_bytes;
  fs->root_slot_ = st.root_slot;
  fs->next_generation_ = st.next_generation;
  fs->replayed_batches_ = st.replay.batches;
  fs->journal_head_at_load_ = st.replay.end_lsn;
  if (!fs->link_tree(error) || !fs->claim_blocks(std::move(st.meta.regions), error)) {
    fs->shut_down_ = true;  // nothing was started, nothing may be written
    return nullptr;
  }
  fs->inodes_.rebuild_free_list();
  fs->index_content_hashes();
  fs->journal_ = std::make_unique<Journal>(*fs->dev_, JournalGeometry{st.sb.journal_start, st.sb.journal_blocks,
                                                                      st.sb.uuid_tag()});
  fs->journal_->set_commit_interval(o.commit_interval);
  if (!o.read_only) {
    if (const int rc = preallocate_fixed_area(*fs->dev_, st.sb); rc != 0 && rc != -EOPNOTSUPP)
      log::warning("{}: cannot reserve the journal's space on the filesystem that holds the image: {}; "
                   "if that filesystem fills up, this one stops taking changes until it is mounted again",
                   fs->dev_->describe(), std::strerror(-rc));
    if (const std::uint64_t beyond = fs->dev_->size_bytes() / kBlockSize - st.sb.total_blocks; beyond > 0)
      log::info("{}: the device has {} beyond the end of the filesystem; `dhfsctl grow MOUNTPOINT` puts it to use",
                fs->dev_->describe(), human_bytes(beyond * kBlockSize));
  }
  {
    Txn txn;
    fs->apply_settings(st.meta.config, txn);
    fs->check_region_roots(txn);
    fs->record_region_changes(txn);
    if (!txn.empty() && !o.read_only) fs->commit(txn);
  }
  fs->update_metadata_reserve();
  if (!o.read_only) fs->remove_orphans();
  if (!o.defer_start) fs->start();
  return fs;
}

// Gives every directory its parent and checks that entries point at live
// inodes and that no directory has two parents.
bool FileSystem::link_tree(std::string& error) {
  Inode* root = inodes_.get(kRootIno);
  if (!root || !root->is_dir()) {
    error = fmt::format("{}: root directory missing; run fsck.dhfs", dev_->describe());
    return false;
  }
  bool ok = true;
  inodes_.for_each([&](const Inode& dir) {
    if (!ok || !dir.dir()) return;
    dir.dir()->for_each([&](const DirEntry& d) {
      if (!ok) return;
      Inode* child = inodes_.get(d.ino);
      if (!child || d.ino == kRootIno) {
        error = fmt::format("{}: directory {} entry '{}' points at missing inode {}; run fsck.dhfs", dev_->describe(),
                            dir.ino, d.name, d.ino);
        ok = false;
        return;
      }
      if (child->is_dir()) {
        if (child->parent() != 0) {
          error = fmt::format("{}: directory {} has two parents; run fsck.dhfs", dev_->describe(), d.ino);
          ok = false;
          return;
        }
        child->set_parent(dir.ino);
      }
    });
  });
  root->set_parent(kRootIno);
  return ok;
}

bool FileSystem::claim_blocks(std::map<std::uint32_t, RegionState> regions, std::string& error) {
  alloc_ = std::make_unique<Allocator>(sb_.data_area());
  if (!load_regions(std::move(regions), error)) return false;
  for (const Extent& e : root_.extents) {
    if (!alloc_->mark_used(e)) {
      error = fmt::format("{}: checkpoint blocks overlap; run fsck.dhfs", dev_->describe());
      return false;
    }
  }
  // Each run of referenced blocks is claimed once, and the number of block
  // maps referencing it must be what the reference counts say.
  std::uint64_t shared = 0, saved = 0;
  for (const BlockRun& br : referenced_runs(inodes_)) {
    const Extent run = br.extent;
    const auto depth = br.refs;
    if (!alloc_->mark_used(run)) {
      error = fmt::format("{}: blocks {}+{} are outside the data area or also hold the checkpoint; run fsck.dhfs",
                          dev_->describe(), run.start, run.len);
      return false;
    }
    bool counts_ok = true;
    refs_.for_runs(run, [&](Extent, std::uint32_t c) { counts_ok &= c == depth; });
    if (!counts_ok) {
      error = fmt::format("{}: blocks {}+{} are referenced {} times, but their reference count says otherwise; "
                          "run fsck.dhfs",
                          dev_->describe(), run.start, run.len, depth);
      return false;
    }
    if (depth >= 2) {
      shared += run.len;
      saved += run.len * (depth - 1);
    }
  }
  if (shared != refs_.shared_blocks() || saved != refs_.saved_blocks()) {
    error = fmt::format("{}: reference counts name blocks no file references; run fsck.dhfs", dev_->describe());
    return false;
  }
  return true;
}

void FileSystem::free_inode(Inode& in, Txn& txn) {
  txn.free_inode(in.ino);
  if (in.hash_valid) dedup_index_.remove(dedup_key(in, in.content_hash), in.ino);
  std::vector<Extent> to_free;
  if (in.map()) {
    std::vector<Segment> gone;
    for (const FileExtent& e : *in.map()) gone.push_back({e.lblk, e.len, e.pblk, e.flags});
    drop_refs(gone, txn, to_free);
  }
  commit(txn, to_free);
  inodes_.erase(in.ino);
}

void FileSystem::remove_orphans() {
  std::vector<Ino> orphans;
  inodes_.for_each([&](const Inode& in) {
    if (in.nlink == 0 && in.ino != kRootIno) orphans.push_back(in.ino);
  });
  for (Ino ino : orphans) {
    Txn txn;
    free_inode(*inodes_.get(ino), txn);
  }
}

std::uint64_t FileSystem::metadata_need_blocks() const {
  // (+ slack for the writer's 1 MiB chunks and for rounding)
  return (stream_bytes_.load() + journal_->used_bytes()) / kBlockSize + 512;
}

void FileSystem::update_metadata_reserve() {
  // File data may not take the room the next checkpoint needs (the current
  // one stays until the next is durable): the current stream plus all the
  // journal may hold before writers wait (70% of the ring).
  alloc_->set_metadata_reserve((stream_bytes_.load() + sb_.journal_blocks * kBlockSize * 7 / 10) / kBlockSize + 512);
}

void FileSystem::start() {
  if (started_ || opts_.read_only) return;
  started_ = true;
  journal_->start(
      journal_head_at_load_, root_.replay_lsn,
      [this](std::uint64_t seq) {
        alloc_->mark_durable(seq);
        unshare_durable(seq);
        update_metadata_reserve();
      },
      [this] { request_checkpoint(); });
  bg_thread_ = std::thread([this] { checkpointer_loop(); });
  if (opts_.discard) start_discarder();
}

void FileSystem::request_checkpoint() {
  {
    std::lock_guard lk(bg_mu_);
    bg_wanted_ = true;
  }
  bg_cv_.notify_one();
}

void FileSystem::checkpointer_loop() {
  bool failing = false;
  std::unique_lock lk(bg_mu_);
  while (!bg_stop_) {
    bg_cv_.wait_for(lk, opts_.checkpoint_interval, [&] { return bg_stop_ || bg_wanted_; });
    if (bg_stop_) break;
    bool wanted = bg_wanted_;
    bg_wanted_ = false;
    lk.unlock();
    if (wanted || journal_->last_appended_seq() != seq_at_checkpoint_) {
      if (int rc = write_checkpoint(); rc != 0) {
        if (!failing)
          log::warning("{}: checkpoint failed: {} (retrying; the journal keeps every change meanwhile)",
                       dev_->describe(), std::strerror(-rc));
        failing = true;
        // Writers stop waiting for it; while the journal is filling up,
        // try again soon (deletes may have made room meanwhile).
        journal_->checkpoint_failed(rc);
        lk.lock();
        bg_cv_.wait_for(lk, std::chrono::seconds(1), [&] { return bg_stop_; });
        if (journal_->fill() >= 0.5) bg_wanted_ = true;
        continue;
      }
      if (failing) log::info("{}: checkpoint written again", dev_->describe());
      failing = false;
    }
    lk.lock();
  }
}

int FileSystem::checkpoint() { return write_checkpoint(); }

int FileSystem::write_checkpoint() {
  if (opts_.read_only) return -EROFS;
  std::lock_guard ck(checkpoint_mu_);
  // Everything before `replay_from` is already in memory; records after it
  // may or may not be captured below, and replaying them again is harmless.
  const std::uint64_t replay_from = journal_->head_lsn();
  const std::uint64_t seq_before = journal_->last_appended_seq();
  CheckpointWriter writer(*dev_, *alloc_, sb_.uuid_tag());
  std::uint64_t generation = 0;
  std::vector<std::uint8_t> chunk;
  for (Ino next = kRootIno;;) {
    // Encode a bounded chunk under the lock, write it without: writers
    // never wait for the device behind a checkpoint.
    chunk.clear();
    RecordWriter w(chunk);
    bool done;
    {
      std::shared_lock m(meta_mu_);
      for (; next < inodes_.end() && chunk.size() < (4u << 20); ++next)
        if (Inode* in = inodes_.get(next)) emit_inode(*in, w);
      done = next >= inodes_.end();
      if (done) generation = next_generation_;
    }
    if (int rc = writer.add_encoded(chunk, w.count()); rc != 0) return rc;
    if (done) break;
  }
  // Regions and settings: small.
  {
    std::shared_lock m(meta_mu_);
    chunk.clear();
    RecordWriter w(chunk);
    for (const auto& [id, r] : regions_) {
      auto info = alloc_->region(id);
      w.add(RegionSetRec{id, r.root, r.flags, info ? info->reserved : r.reserved});
    }
    for (const auto& [name, value] : settings_) w.add(ConfigSetRec{name, value});
    m.unlock();
    if (int rc = writer.add_encoded(chunk, w.count()); rc != 0) return rc;
  }
  // Reference counts, in chunks the same way.
  for (BlockNo from = 0;;) {
    chunk.clear();
    RecordWriter w(chunk);
    {
      std::shared_lock m(meta_mu_);
      from = refs_.for_each_from(from, 65536, [&](Extent e, std::uint32_t c) {
        w.add(RefcountSetRec{e.start, e.len, c});
      });
    }
    if (int rc = writer.add_encoded(chunk, w.count()); rc != 0) return rc;
    if (from == 0) break;
  }
  // The stream may contain changes of transactions not yet committed; it
  // must not become current before they are durable, or a crash could
  // expose half of a transaction.
  if (int rc = journal_->sync(); rc != 0) return rc;
  CheckpointRoot root;
  if (int rc = writer.finish(root); rc != 0) return rc;
  root.seq = root_.seq + 1;
  root.replay_lsn = replay_from;
  root.next_generation = generation;
  root.written_ns = now_ns();
  AlignedBuffer block(kBlockSize);
  auto bytes = root.encode();
  std::memcpy(block.data(), bytes.data(), kBlockSize);
  // Never overwrite the current root: if this write tears, it still holds.
  const int slot = 1 - root_slot_;
  if (int rc = dev_->write(kRootSlotBlocks[slot] * kBlockSize, block.data(), kBlockSize); rc < 0) return rc;
  if (int rc = dev_->flush(); rc < 0) return rc;
  // The old root now points at blocks about to be reused: retire it, so
  // that damage to the new root can never fall back to a stale state.
  std::memset(block.data(), 0, kBlockSize);
  if (int rc = dev_->write(kRootSlotBlocks[root_slot_] * kBlockSize, block.data(), kBlockSize); rc < 0) return rc;
  for (const Extent& e : root_.extents) alloc_->free_now(e);
  root_ = root;
  stream_bytes_ = root.stream_bytes;
  root_slot_ = slot;
  seq_at_checkpoint_ = seq_before;
  journal_->set_tail(replay_from);
  update_metadata_reserve();
  return 0;
}

int FileSystem::shutdown() {
  if (shut_down_) return 0;
  shut_down_ = true;
  discarder_.reset();  // waits for a discard in progress
  if (bg_thread_.joinable()) {
    {
      std::lock_guard lk(bg_mu_);
      bg_stop_ = true;
    }
    bg_cv_.notify_all();
    bg_thread_.join();
  }
  int checkpoint_rc = 0;
  if (!opts_.read_only) {
    {
      // The kernel's references are gone with the mount: unlinked inodes
      // can go now rather than at the next mount.
      std::unique_lock m(meta_mu_);
      std::vector<Ino> orphans;
      inodes_.for_each([&](const Inode& in) {
        if (in.nlink == 0 && in.ino != kRootIno) orphans.push_back(in.ino);
      });
      for (Ino ino : orphans) {
        Txn txn;
        free_inode(*inodes_.get(ino), txn);
      }
    }
    checkpoint_rc = write_checkpoint();
  }
  journal_->stop();  // commits what is still pending
  if (opts_.read_only) return 0;
  if (const int rc = journal_->error(); rc != 0) return rc;
  // Nothing is lost without a checkpoint (say, the data area of an image
  // file whose host filesystem is full cannot take one): the journal holds
  // every change since the last, and the next mount replays it.
  if (checkpoint_rc != 0)
    log::warning("{}: checkpoint at unmount failed: {}; every change is in the journal, the next mount replays it",
                 dev_->describe(), std::strerror(-checkpoint_rc));
  return 0;
}

FileSystem::~FileSystem() { shutdown(); }

}  // namespace dhfs
