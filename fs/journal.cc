#include "fs/journal.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <fmt/format.h>

#include "fs/format.h"
#include "fs/log.h"

namespace dhfs {

namespace {

constexpr std::size_t kEarlyCommitBytes = 1 << 20;
constexpr double kCheckpointAt = 0.5;
constexpr double kThrottleAt = 0.7;
constexpr double kShrinkThrottleAt = 0.9;

// Reads or writes `len` bytes of the ring at stream position `lsn`,
// splitting the I/O where it wraps around the end of the ring.
int ring_io(Device& dev, const JournalGeometry& geo, DeviceIo::Op op, std::uint64_t lsn, std::byte* buf,
            std::uint64_t len) {
  DeviceIo ios[2];
  std::size_t n = 0;
  std::uint64_t base = geo.start * kBlockSize;
  std::uint64_t pos = lsn % geo.capacity();
  std::uint64_t first = std::min(len, geo.capacity() - pos);
  ios[n++] = {op, base + pos, buf, static_cast<std::uint32_t>(first)};
  if (first < len) ios[n++] = {op, base, buf + first, static_cast<std::uint32_t>(len - first)};
  return dev.submit({ios, n});
}

enum class Probe { kValid, kEnd, kDamaged };

// Examines the batch that should start at `lsn`. kEnd: no batch of ours was
// ever written there in this lap. kDamaged: one was, but it does not verify
// (a torn write or corruption; the caller tells which).
Probe probe_batch(Device& dev, const JournalGeometry& geo, std::uint64_t lsn, AlignedBuffer& buf,
                  BatchHeader& out, std::string& io_error) {
  buf.ensure(kBlockSize);
  if (int rc = ring_io(dev, geo, DeviceIo::Op::Read, lsn, buf.data(), kBlockSize); rc < 0) {
    io_error = fmt::format("journal read failed at {}: {}", lsn, std::strerror(-rc));
    return Probe::kDamaged;
  }
  std::span<const std::uint8_t> head(reinterpret_cast<const std::uint8_t*>(buf.data()), kBlockSize);
  std::string why;
  auto h = BatchHeader::decode(head, why);
  if (!h) {
    std::uint64_t magic;
    std::memcpy(&magic, head.data(), 8);
    return magic == kBatchMagic ? Probe::kDamaged : Probe::kEnd;
  }
  if (h->uuid_tag != geo.uuid_tag || h->lsn < lsn) return Probe::kEnd;  // another fs, or an earlier lap
  if (h->lsn != lsn || h->padded_bytes() > max_batch_bytes(geo.capacity())) return Probe::kDamaged;
  std::uint64_t total = h->padded_bytes();
  if (total > buf.size()) {
    // Grow without losing the header block already read.
    AlignedBuffer bigger(total);
    std::memcpy(bigger.data(), buf.data(), kBlockSize);
    buf = std::move(bigger);
  }
  if (total > kBlockSize) {
    if (int rc = ring_io(dev, geo, DeviceIo::Op::Read, lsn + kBlockSize, buf.data() + kBlockSize,
                         total - kBlockSize);
        rc < 0) {
      io_error = fmt::format("journal read failed at {}: {}", lsn, std::strerror(-rc));
      return Probe::kDamaged;
    }
  }
  std::span<const std::uint8_t> payload(reinterpret_cast<const std::uint8_t*>(buf.data()) + BatchHeader::kSize,
                                        h->payload_len);
  if (checksum(payload, h->lsn) != h->payload_checksum) return Probe::kDamaged;
  out = *h;
  return Probe::kValid;
}

}  // namespace

Journal::Journal(Device& dev, JournalGeometry geo) : dev_(dev), geo_(geo) {}

Journal::~Journal() { stop(); }

bool Journal::replay(Device& dev, const JournalGeometry& geo, std::uint64_t from_lsn,
                     const std::function<bool(std::span<const std::uint8_t>)>& fn, ReplayStats& stats,
                     std::string& why, ReplayMode mode) {
  AlignedBuffer buf(kBlockSize);
  std::uint64_t lsn = from_lsn;
  while (true) {
    BatchHeader h;
    std::string io_error;
    Probe p = probe_batch(dev, geo, lsn, buf, h, io_error);
    if (!io_error.empty()) {
      why = io_error;
      return false;
    }
    if (p == Probe::kEnd) break;
    if (p == Probe::kDamaged) {
      // A torn last batch is expected after a crash. If anything valid was
      // written after it, though, the log itself is damaged.
      AlignedBuffer scan(kBlockSize);
      for (std::uint64_t later = lsn + kBlockSize; later < from_lsn + geo.capacity(); later += kBlockSize) {
        BatchHeader lh;
        std::string ignored;
        if (probe_batch(dev, geo, later, scan, lh, ignored) == Probe::kValid) {
          why = fmt::format("journal damaged at position {} (valid entries follow at {})", lsn, later);
          if (mode == ReplayMode::kStrict) return false;
          stats.damaged_at = lsn;
          break;
        }
      }
      stats.torn_tail = true;
      break;
    }
    std::span<const std::uint8_t> payload(reinterpret_cast<const std::uint8_t*>(buf.data()) + BatchHeader::kSize,
                                          h.payload_len);
    if (!fn(payload)) {
      if (!why.empty()) why = fmt::format("journal batch at position {}: {}", lsn, why);
      else why = fmt::format("journal batch at position {} does not apply", lsn);
      return false;
    }
    ++stats.batches;
    stats.payload_bytes += h.payload_len;
    lsn += h.padded_bytes();
    if (lsn - from_lsn >= geo.capacity()) break;
  }
  stats.end_lsn = lsn;
  return true;
}

void Journal::start(std::uint64_t head_lsn, std::uint64_t tail_lsn, std::function<void(std::uint64_t)> on_durable,
                    std::function<void()> want_checkpoint) {
  std::lock_guard lk(mu_);
  head_ = head_lsn;
  tail_ = tail_lsn;
  on_durable_ = std::move(on_durable);
  want_checkpoint_ = std::move(want_checkpoint);
  stopping_ = false;
  running_ = true;
  thread_ = std::thread([this] { run(); });
}

void Journal::stop() {
  {
    std::lock_guard lk(mu_);
    if (!running_) return;
    stopping_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
  {
    std::lock_guard lk(mu_);
    running_ = false;
  }
  room_cv_.notify_all();  // writers waiting for room must not wait forever
}

int Journal::admit(Change change) {
  std::unique_lock lk(mu_);
  const double limit = (change == Change::kGrows ? kThrottleAt : kShrinkThrottleAt) * static_cast<double>(geo_.capacity());
  auto full = [&] { return static_cast<double>(used_locked()) >= limit; };
  room_cv_.wait(lk, [&] {
    return error_.load() != 0 || !running_ || !full() || (change == Change::kGrows && checkpoint_error_ != 0);
  });
  if (int e = error_.load()) return e;
  if (running_ && full()) return checkpoint_error_;
  return 0;
}

void Journal::checkpoint_failed(int error) {
  {
    std::lock_guard lk(mu_);
    checkpoint_error_ = error;
    checkpoint_requested_ = false;
  }
  room_cv_.notify_all();
}

std::uint64_t Journal::used_bytes() const {
  std::lock_guard lk(mu_);
  return used_locked();
}

std::uint64_t Journal::append(std::span<const std::uint8_t> records, bool data_first) {
  std::lock_guard lk(mu_);
  if (data_first) pending_data_first_ = true;
  pending_.insert(pending_.end(), records.begin(), records.end());
  pending_ends_.push_back(pending_.size());
  std::uint64_t seq = next_seq_++;
  if (pending_.size() >= kEarlyCommitBytes) work_cv_.notify_one();
  return seq;
}

int Journal::sync() {
  std::unique_lock lk(mu_);
  if (!running_) {
    // Not started (read-only or loading): only data can be pending.
    lk.unlock();
    return dev_.flush();
  }
  if (const int err = error_.load(); err != 0) return err;
  if (pending_.empty() && !committing_) {
    // Every record appended is durable already. Flushing here saves two
    // thread wake-ups (of the committer, then of this caller), a fifth
    // of a 4 KiB write + fsync's time on the bench VM. Nothing dirty and
    // no other caller's flush under way: nothing to wait for.
    if (!data_dirty_.load(std::memory_order_acquire) && direct_flushes_ == 0) return 0;
    ++direct_flushes_;
    data_dirty_.store(false, std::memory_order_release);
    lk.unlock();
    const int rc = dev_.flush();
    lk.lock();
    --direct_flushes_;
    if (rc != 0) fail_locked(rc);  // as when a commit's flush fails: the journal stops
    return rc;
  }
  // The caller commits on its own thread (the commit is a device flush,
  // the batch's write and another flush; handing it to the committer and
  // back would add two thread wake-ups, each a vCPU's on a VM whose idle
  // vCPUs halt). While another commit is under way, the caller waits for
  // it; if that commit took its transactions, it is done, else it commits
  // what is pending then, with everyone else's who came meanwhile.
  const std::uint64_t ticket = ++sync_requested_;
  while (sync_done_ < ticket && error_.load() == 0) {
    if (committing_)
      done_cv_.wait(lk);
    else if (!commit_pending(lk))
      break;
  }
  return error_.load();
}

std::uint64_t Journal::head_lsn() const {
  std::lock_guard lk(mu_);
  return head_;
}

void Journal::set_tail(std::uint64_t lsn) {
  {
    std::lock_guard lk(mu_);
    tail_ = lsn;
    checkpoint_requested_ = false;
    checkpoint_error_ = 0;
  }
  room_cv_.notify_all();
}

std::uint64_t Journal::last_appended_seq() const {
  std::lock_guard lk(mu_);
  return next_seq_ - 1;
}

double Journal::fill() const {
  std::lock_guard lk(mu_);
  return static_cast<double>(used_locked()) / static_cast<double>(geo_.capacity());
}

int Journal::write_batch(std::span<const std::uint8_t> payload, std::uint64_t first_seq, std::uint32_t count,
                         std::uint64_t lsn) {
  BatchHeader h;
  h.uuid_tag = geo_.uuid_tag;
  h.lsn = lsn;
  h.first_seq = first_seq;
  h.txn_count = count;
  h.payload_len = static_cast<std::uint32_t>(payload.size());
  h.payload_checksum = checksum(payload, lsn);
  AlignedBuffer buf(h.padded_bytes());
  h.encode_into(reinterpret_cast<std::uint8_t*>(buf.data()));
  std::memcpy(buf.data() + BatchHeader::kSize, payload.data(), payload.size());
  return ring_io(dev_, geo_, DeviceIo::Op::Write, lsn, buf.data(), h.padded_bytes());
}

std::vector<Journal::BatchPlan> Journal::plan_batches(const std::vector<std::size_t>& txn_ends) const {
  const std::uint64_t limit = max_batch_bytes(geo_.capacity()) - BatchHeader::kSize;
  std::vector<BatchPlan> plan;
  std::size_t begin = 0, txn = 0;
  while (txn < txn_ends.size()) {
    // As many whole transactions as fit in one batch (at least one; a
    // single transaction is always far below the limit).
    std::size_t end_txn = txn + 1;
    while (end_txn < txn_ends.size() && txn_ends[end_txn] - begin <= limit) ++end_txn;
    BatchHeader h;
    h.payload_len = static_cast<std::uint32_t>(txn_ends[end_txn - 1] - begin);
    plan.push_back({begin, txn_ends[end_txn - 1], txn, end_txn - txn, h.padded_bytes()});
    begin = txn_ends[end_txn - 1];
    txn = end_txn;
  }
  return plan;
}

void Journal::run() {
  std::unique_lock lk(mu_);
  while (true) {
    work_cv_.wait_for(lk, commit_interval_, [&] {
      return stopping_ || error_.load() != 0 || pending_.size() >= kEarlyCommitBytes;
    });
    // A sync() caller may be committing on its own thread: wait for it.
    done_cv_.wait(lk, [&] { return !committing_ || error_.load() != 0; });
    if (error_.load() != 0) break;
    if (pending_.empty()) {
      if (stopping_) break;
      if (!data_dirty_.load(std::memory_order_acquire)) continue;  // idle timer tick
    }
    if (!commit_pending(lk)) break;
  }
}

bool Journal::commit_pending(std::unique_lock<std::mutex>& lk) {
  committing_ = true;
  std::vector<std::uint8_t> batch;
  std::vector<std::size_t> ends;
  batch.swap(pending_);
  ends.swap(pending_ends_);
  const bool data_first = std::exchange(pending_data_first_, false);
  const std::uint64_t last_seq = next_seq_ - 1;
  const std::uint64_t first_seq = next_seq_ - ends.size();
  const std::uint64_t ticket = sync_requested_;
  const std::uint64_t lsn = head_;
  // A sync() caller's flush under way has cleared data_dirty_ but made
  // nothing durable yet. (None can start while committing_.)
  const bool data_flush_under_way = direct_flushes_ > 0;
  const std::vector<BatchPlan> plan = plan_batches(ends);
  std::uint64_t padded = 0;
  for (const BatchPlan& b : plan) padded += b.padded;
  if (head_ + padded - tail_ > geo_.capacity()) {
    // Cannot happen while admit() throttles writers; refuse rather than
    // overwrite the live part of the log.
    fail_locked(-ENOSPC);
    return false;
  }
  in_flight_ = padded;
  lk.unlock();

  // Data written so far goes first (data=ordered), unless no transaction
  // of the batch depends on it, or no data was written since the last
  // flush (a rename's commit, a copy-up's that shares all it wrote): then
  // the flush after the batch makes everything durable, and an fsync costs
  // one device flush, not two. (Whenever data_dirty_ is cleared, a flush
  // follows, before or after the batch: data written before it is durable
  // once that flush is.)
  int rc = 0;
  const bool data_dirty = data_dirty_.exchange(false, std::memory_order_acq_rel) || data_flush_under_way;
  if (data_dirty && (batch.empty() || data_first)) rc = dev_.flush();
  std::uint64_t at = lsn;
  for (const BatchPlan& b : plan) {
    if (rc != 0) break;
    // A later batch must never be on the device while an earlier one is
    // not: replay would take the torn earlier batch for damage in the
    // middle of the log and refuse to mount. (Only commits larger than
    // max_batch_bytes() have several batches.)
    if (at != lsn) rc = dev_.flush();
    if (rc != 0) break;
    rc = write_batch({batch.data() + b.begin, b.end - b.begin}, first_seq + b.first_txn,
                     static_cast<std::uint32_t>(b.txns), at);
    at += b.padded;
  }
  if (rc == 0 && !batch.empty()) rc = dev_.flush();
  if (rc == 0 && !batch.empty() && on_durable_) on_durable_(last_seq);

  lk.lock();
  if (rc != 0) {
    fail_locked(rc);
    return false;
  }
  committing_ = false;
  head_ += padded;
  in_flight_ = 0;
  sync_done_ = std::max(sync_done_, ticket);
  done_cv_.notify_all();
  if (!checkpoint_requested_ && want_checkpoint_ &&
      static_cast<double>(used_locked()) >= kCheckpointAt * static_cast<double>(geo_.capacity())) {
    checkpoint_requested_ = true;
    lk.unlock();
    want_checkpoint_();
    lk.lock();
  }
  return true;
}

void Journal::fail_locked(int error) {
  // The journal stops: everyone waiting learns the error, and the committer
  // thread ends.
  if (error_.load() == 0)
    log::error("{}: journal commit failed: {}; from now on every change fails with that error, "
               "what was committed before stays; unmount, fix the device and mount again",
               dev_.describe(), std::strerror(-error));
  error_.store(error);
  committing_ = false;
  work_cv_.notify_all();
  done_cv_.notify_all();
  room_cv_.notify_all();
}

}  // namespace dhfs
