// Journal: the redo log of metadata changes, a ring of blocks on the device.
//
// Callers append transactions (encoded records, see records.h) to an
// in-memory buffer; nothing is written per request. Everything appended so
// far is written as one batch (group commit): by a caller that asks for
// durability (fsync, syncfs), on its own thread, or by the committer thread
// when 1 MiB is pending and every commit interval. A commit flushes the
// device before writing the batch (so file data written earlier is durable
// before the metadata that points at it) and after (so the batch itself is
// durable); a commit too large for one batch flushes between its batches
// too, so that no batch is on the device before the ones ahead of it
// (replay reads any other order as damage).
//
// Space before the replay position of the current checkpoint is free; when
// the ring is half full the journal asks for a checkpoint, and when it is 70%
// full, writers wait (admit) until a checkpoint has made room.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "alloc/extent.h"
#include "fs/device.h"

namespace dhfs {

struct JournalGeometry {
  BlockNo start = 0;
  std::uint64_t blocks = 0;
  std::uint64_t uuid_tag = 0;
  std::uint64_t capacity() const { return blocks * kBlockSize; }
};

struct ReplayStats {
  std::uint64_t batches = 0;
  std::uint64_t payload_bytes = 0;
  std::uint64_t end_lsn = 0;  // where the next batch goes
  bool torn_tail = false;     // the last batch was incompletely written
  // Only with ReplayMode::kStopAtDamage: a damaged batch with valid batches
  // after it was found here, and replay stopped at it.
  std::optional<std::uint64_t> damaged_at;
};

enum class ReplayMode {
  kStrict,        // damage in the middle of the log fails the replay (mount)
  kStopAtDamage,  // replay up to the damage and report it (fsck repair)
};

// The largest batch the committer writes; replay treats anything larger as
// damage. Transactions are far smaller, so a batch always holds at least one.
inline std::uint64_t max_batch_bytes(std::uint64_t ring_capacity) { return ring_capacity / 4; }

class Journal {
 public:
  Journal(Device& dev, JournalGeometry geo);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Reads the batches that start at `from_lsn`, in order, handing each
  // batch's payload to `fn`. Stops at the end of the log: a block that holds
  // no batch of this filesystem at the expected position, or a torn last
  // batch. A damaged batch followed by valid later batches is corruption:
  // returns false with `why`. Also false if `fn` returns false.
  static bool replay(Device& dev, const JournalGeometry& geo, std::uint64_t from_lsn,
                     const std::function<bool(std::span<const std::uint8_t>)>& fn, ReplayStats& stats,
                     std::string& why, ReplayMode mode = ReplayMode::kStrict);

  // Starts the committer. New batches go to `head_lsn`; the checkpoint that
  // is current says replay starts at `tail_lsn`. `on_durable(seq)` is called
  // after every transaction up to `seq` is durable; `want_checkpoint` when
  // the ring is half full.
  void start(std::uint64_t head_lsn, std::uint64_t tail_lsn, std::function<void(std::uint64_t)> on_durable,
             std::function<void()> want_checkpoint);
  // Commits everything pending and stops the committer.
  void stop();

  enum class Change {
    kGrows,    // may add metadata
    kShrinks,  // only removes (unlink, rmdir, removexattr, truncate)
  };
  // Backpressure: waits while the ring is too full to take more (70% for
  // changes that grow metadata, 90% for changes that only remove, so that
  // space can still be freed when a checkpoint cannot be written for lack
  // of it). Call before taking any lock that a checkpoint needs. Returns 0;
  // the journal's sticky error (-EIO, ...), since after a failed commit
  // nothing may change that could never be made durable; or, while the last
  // checkpoint failed and the ring is full, that checkpoint's error.
  int admit(Change change = Change::kGrows);
  // A checkpoint could not be written: writers stop waiting for one (see
  // admit) and the journal will ask again.
  void checkpoint_failed(int error);
  // Ring bytes in use, pending transactions included.
  std::uint64_t used_bytes() const;

  // Queues one transaction; returns its sequence number. Atomic: after a
  // crash either all of its records are replayed or none.
  // `data_first` false: the transaction does not depend on data written
  // before it (only attributes of a file overwritten in place), so its
  // batch need not wait for a flush of that data (one device flush, after
  // the batch, instead of two when no transaction of the batch needs it).
  std::uint64_t append(std::span<const std::uint8_t> records, bool data_first = true);

  // Returns once everything appended before the call, and all data written
  // before it, is durable. Returns 0 or a negative errno. The caller
  // commits what is pending itself (or waits for a commit under way that
  // holds its transactions); with no record pending and no commit under
  // way, only data can be, and the caller just flushes the device.
  int sync();

  // File data was written; the next commit must flush before its batch.
  void note_data_written() { data_dirty_.store(true, std::memory_order_release); }

  // Where the next batch will be written (everything before it is durable).
  std::uint64_t head_lsn() const;
  // A new checkpoint replays from `lsn`: the ring before it is free.
  void set_tail(std::uint64_t lsn);

  std::uint64_t last_appended_seq() const;
  void set_commit_interval(std::chrono::milliseconds ms) { commit_interval_ = ms; }
  double fill() const;  // share of the ring in use, pending included
  int error() const { return error_.load(); }

 private:
  void run();
  // Takes every pending transaction and commits it (mu_ held on entry and
  // return, released while writing). False if the journal failed.
  bool commit_pending(std::unique_lock<std::mutex>& lk);
  void fail_locked(int error);  // mu_ held
  struct BatchPlan {
    std::size_t begin, end;        // byte range of the payload
    std::size_t first_txn, txns;   // transactions in it
    std::uint64_t padded;          // ring bytes it takes
  };
  // Splits whole transactions (ending at `txn_ends`) into batches no larger
  // than max_batch_bytes().
  std::vector<BatchPlan> plan_batches(const std::vector<std::size_t>& txn_ends) const;
  int write_batch(std::span<const std::uint8_t> payload, std::uint64_t first_seq, std::uint32_t count,
                  std::uint64_t lsn);
  // Ring bytes taken: the committed log, the batch being written, what is
  // pending, and a block of slack for padding.
  std::uint64_t used_locked() const { return head_ - tail_ + in_flight_ + pending_.size() + kBlockSize; }

  Device& dev_;
  const JournalGeometry geo_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // wakes the committer
  std::condition_variable done_cv_;   // wakes sync() callers
  std::condition_variable room_cv_;   // wakes admit() callers
  std::vector<std::uint8_t> pending_;
  std::vector<std::size_t> pending_ends_;  // end offset of each pending transaction
  bool pending_data_first_ = false;        // a pending transaction needs data=ordered
  std::uint64_t next_seq_ = 1;        // seq of the next appended transaction
  std::uint64_t head_ = 0;
  std::uint64_t tail_ = 0;
  // Padded size of the batch a commit is writing: no longer pending, not
  // yet behind head_. admit() counts it; when it did not, writers ran on
  // while a slow flush held a large batch, queued more than the ring holds,
  // and the next commit failed the journal with ENOSPC for good.
  std::uint64_t in_flight_ = 0;
  std::uint64_t sync_requested_ = 0;
  std::uint64_t sync_done_ = 0;
  bool committing_ = false;       // run() or a sync() caller works on a batch it took from pending_
  unsigned direct_flushes_ = 0;   // sync() callers flushing on their own thread
  bool stopping_ = false;
  bool running_ = false;
  bool checkpoint_requested_ = false;
  int checkpoint_error_ = 0;
  std::chrono::milliseconds commit_interval_{5000};
  std::atomic<bool> data_dirty_{false};
  std::atomic<int> error_{0};
  std::function<void(std::uint64_t)> on_durable_;
  std::function<void()> want_checkpoint_;
  std::thread thread_;
};

}  // namespace dhfs
