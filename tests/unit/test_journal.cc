// Tests of fs/journal.h: the metadata redo log in a ring of blocks.
//
// Payloads here are opaque bytes (the journal never decodes them). Each
// test runs the journal on a MemDevice with a small ring so that wrapping,
// backpressure and damage are easy to provoke.
//
// Catch2 assertions are not thread-safe: extra threads only record what
// they saw, and the test thread asserts.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fs/format.h"
#include "fs/journal.h"

namespace dhfs {
namespace {

using Bytes = std::vector<std::uint8_t>;
using namespace std::chrono_literals;

constexpr std::uint64_t kTag = 0x5eed5eed12345678ULL;

// A device holding one ring that starts at block 2.
struct Ring {
  explicit Ring(std::uint64_t blocks, std::uint64_t tag = kTag)
      : dev((blocks + 3) * kBlockSize), geo{2, blocks, tag} {}
  MemDevice dev;
  JournalGeometry geo;

  // Byte offset on the device of journal stream position `lsn`.
  std::uint64_t offset_of(std::uint64_t lsn) const { return geo.start * kBlockSize + lsn % geo.capacity(); }
  void zero_block_at(std::uint64_t lsn) {
    std::memset(dev.bytes().data() + offset_of(lsn / kBlockSize * kBlockSize), 0, kBlockSize);
  }
  void flip_byte_at(std::uint64_t lsn) { dev.bytes()[offset_of(lsn)] ^= std::byte{0x5a}; }
};

Bytes payload(std::size_t len, std::uint64_t seed) {
  Bytes b(len);
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (auto& c : b) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<std::uint8_t>(x);
  }
  return b;
}

struct Replayed {
  bool ok = false;
  std::string why;
  ReplayStats stats;
  std::vector<Bytes> batches;
};

Replayed replay(Ring& r, std::uint64_t from, std::uint64_t tag) {
  Replayed out;
  JournalGeometry geo = r.geo;
  geo.uuid_tag = tag;
  out.ok = Journal::replay(
      r.dev, geo, from,
      [&](std::span<const std::uint8_t> p) {
        out.batches.emplace_back(p.begin(), p.end());
        return true;
      },
      out.stats, out.why);
  return out;
}
Replayed replay(Ring& r, std::uint64_t from = 0) { return replay(r, from, r.geo.uuid_tag); }

// A started journal whose commit timer never fires during a test, so that
// batches are exactly what the test syncs.
struct Running {
  Running(Ring& r, std::uint64_t head = 0, std::uint64_t tail = 0) : j(r.dev, r.geo) {
    j.set_commit_interval(std::chrono::milliseconds(3600 * 1000));
    j.start(
        head, tail,
        [this](std::uint64_t seq) {
          std::uint64_t cur = durable.load();
          while (seq > cur && !durable.compare_exchange_weak(cur, seq)) {
          }
          durable_calls.fetch_add(1);
        },
        [this] { checkpoint_wanted.store(true); });
  }
  // Appends one transaction and makes it durable as a batch of its own.
  // Returns the batch's stream position.
  std::uint64_t commit(const Bytes& p) {
    std::uint64_t lsn = j.head_lsn();
    j.append(p);
    REQUIRE(j.sync() == 0);
    return lsn;
  }
  Journal j;
  std::atomic<std::uint64_t> durable{0};
  std::atomic<int> durable_calls{0};
  std::atomic<bool> checkpoint_wanted{false};
};

// Waits up to `limit` for `flag`.
bool wait_for(const std::atomic<bool>& flag, std::chrono::milliseconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (!flag.load()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

}  // namespace

TEST_CASE("journal: an unwritten ring replays to nothing", "[journal]") {
  Ring r(64);
  auto out = replay(r);
  CHECK(out.ok);
  CHECK(out.batches.empty());
  CHECK(out.stats.batches == 0);
  CHECK(out.stats.end_lsn == 0);
  CHECK_FALSE(out.stats.torn_tail);
}

TEST_CASE("journal: synced transactions replay in order", "[journal]") {
  Ring r(256);
  // Single-block batches, then batches of several blocks.
  const std::size_t max_len = GENERATE(std::size_t{4000}, std::size_t{20000});
  std::mt19937_64 rng(max_len);
  std::vector<Bytes> sent;
  {
    Running run(r);
    std::size_t total = 0;
    for (int i = 0; total < 600 * 1024; ++i) {
      sent.push_back(payload(1 + rng() % max_len, i));
      total += sent.back().size() + kBlockSize;
      run.commit(sent.back());
    }
    run.j.stop();
  }
  auto out = replay(r);
  INFO(out.why);
  REQUIRE(out.ok);
  CHECK_FALSE(out.stats.torn_tail);
  CHECK(out.stats.batches == sent.size());
  REQUIRE(out.batches.size() == sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i) {
    INFO("batch " << i);
    CHECK(out.batches[i] == sent[i]);
  }
}

TEST_CASE("journal: a batch larger than one block replays", "[journal]") {
  // The smallest case of the test above: one batch of two blocks.
  Ring r(64);
  Bytes p = payload(6000, 1);
  std::uint64_t end;
  {
    Running run(r);
    run.commit(p);
    end = run.j.head_lsn();
  }
  CHECK(end == 2 * kBlockSize);
  auto out = replay(r);
  INFO(out.why);
  CHECK(out.ok);
  CHECK_FALSE(out.stats.torn_tail);
  REQUIRE(out.batches.size() == 1);
  CHECK(out.batches[0] == p);
  CHECK(out.stats.end_lsn == end);
}

TEST_CASE("journal: transactions appended together form one batch (group commit)", "[journal]") {
  Ring r(64);
  Bytes a = payload(100, 1), b = payload(200, 2), c = payload(300, 3);
  std::uint64_t sa, sb, sc;
  {
    Running run(r);
    sa = run.j.append(a);
    sb = run.j.append(b);
    sc = run.j.append(c);
    CHECK(sb == sa + 1);
    CHECK(sc == sb + 1);
    CHECK(run.j.last_appended_seq() == sc);
    REQUIRE(run.j.sync() == 0);
    CHECK(run.durable.load() == sc);
    CHECK(run.durable_calls.load() == 1);
  }
  auto out = replay(r);
  REQUIRE(out.ok);
  REQUIRE(out.batches.size() == 1);
  Bytes all = a;
  all.insert(all.end(), b.begin(), b.end());
  all.insert(all.end(), c.begin(), c.end());
  CHECK(out.batches[0] == all);
}

TEST_CASE("journal: sync with nothing appended writes no batch", "[journal]") {
  Ring r(64);
  {
    Running run(r);
    REQUIRE(run.j.sync() == 0);
    run.j.note_data_written();
    REQUIRE(run.j.sync() == 0);
    CHECK(run.j.head_lsn() == 0);
    CHECK(run.durable_calls.load() == 0);
  }
  CHECK(replay(r).batches.empty());
  // A journal that was never started only flushes.
  Journal idle(r.dev, r.geo);
  CHECK(idle.sync() == 0);
}

namespace {
// Forwards to a Ring's device and notes which thread made each flush; the
// flushes fail once `fail_flush` is set.
class FlushWatch final : public Device {
 public:
  explicit FlushWatch(MemDevice& inner) : inner_(inner) {}
  int submit(std::span<const DeviceIo> ios) override { return inner_.submit(ios); }
  int flush() override {
    {
      std::unique_lock lock(mu_);
      flushers_.push_back(std::this_thread::get_id());
      if (hold_next_) {
        // Stays under way until release(): a flush that has begun and
        // made nothing durable yet.
        hold_next_ = false;
        ++held_;
        cv_.notify_all();
        cv_.wait(lock, [&] { return !holding_; });
      }
    }
    return fail_flush ? -EIO : inner_.flush();
  }
  // The next flush waits for release(); wait_held() returns once it does.
  void hold_next() {
    std::lock_guard lock(mu_);
    hold_next_ = holding_ = true;
  }
  void wait_held() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return held_ > 0; });
  }
  void release() {
    std::lock_guard lock(mu_);
    holding_ = false;
    cv_.notify_all();
  }
  std::uint64_t size_bytes() const override { return inner_.size_bytes(); }
  bool read_only() const override { return false; }
  std::string describe() const override { return "flush watch"; }
  std::vector<std::thread::id> flushers() {
    std::lock_guard lock(mu_);
    return std::exchange(flushers_, {});
  }
  std::atomic<bool> fail_flush{false};

 private:
  MemDevice& inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread::id> flushers_;
  bool hold_next_ = false, holding_ = false;
  unsigned held_ = 0;
};

// A started journal on a FlushWatch, committing only when asked (the commit
// interval is an hour), so that the tests see every flush it makes.
struct WatchedJournal {
  Ring r{64};
  FlushWatch dev{r.dev};
  Journal j{dev, r.geo};
  WatchedJournal() {
    j.set_commit_interval(std::chrono::milliseconds(3600 * 1000));
    j.start(0, 0, [](std::uint64_t) {}, [] {});
  }
};
}  // namespace

// sync() commits on the caller's own thread: with no record pending and no
// commit under way it only flushes the data; with records, it writes their
// batch too. (Handing the commit to the committer thread cost two thread
// wake-ups per fsync.)
TEST_CASE("journal: a sync flushes and commits on the caller's thread", "[journal]") {
  WatchedJournal w;
  Ring& r = w.r;
  FlushWatch& dev = w.dev;
  Journal& j = w.j;
  const auto me = std::this_thread::get_id();

  REQUIRE(j.sync() == 0);  // nothing written: nothing to flush
  CHECK(dev.flushers().empty());

  j.note_data_written();
  REQUIRE(j.sync() == 0);
  CHECK(dev.flushers() == std::vector<std::thread::id>{me});
  REQUIRE(j.sync() == 0);  // flushed already
  CHECK(dev.flushers().empty());

  j.append(payload(100, 1));
  j.note_data_written();
  REQUIRE(j.sync() == 0);
  CHECK(dev.flushers() == std::vector<std::thread::id>{me, me});  // data first, then the batch
  CHECK(j.head_lsn() > 0);

  // A failed flush stops the journal: this sync and every later one
  // report it.
  dev.fail_flush = true;
  j.note_data_written();
  CHECK(j.sync() == -EIO);
  dev.fail_flush = false;
  CHECK(j.sync() == -EIO);
  CHECK(j.error() == -EIO);
  j.stop();
  const Replayed rep = replay(r);
  REQUIRE(rep.ok);
  CHECK(rep.batches.size() == 1);
}

// Without a sync, the committer thread commits: at stop (and every commit
// interval, or once 1 MiB is pending).
TEST_CASE("journal: what no sync asked for is committed by the committer thread", "[journal]") {
  WatchedJournal w;
  const auto me = std::this_thread::get_id();
  w.j.note_data_written();
  w.j.append(payload(100, 1));
  w.j.stop();
  const auto flushers = w.dev.flushers();
  CHECK(flushers.size() == 2);  // data first, then the batch
  for (const auto& id : flushers) CHECK(id != me);
  const Replayed rep = replay(w.r);
  REQUIRE(rep.ok);
  CHECK(rep.batches.size() == 1);
}

// A commit flushes before its batch only for data written since the last
// flush: a metadata-only fsync (a rename, a copy-up that shares all it
// wrote) costs one device flush, after the batch. A sync() caller's flush
// still under way does not count as done: the commit flushes first.
TEST_CASE("journal: a commit flushes data first only if data was written since the last flush", "[journal]") {
  WatchedJournal w;
  Ring& r = w.r;
  FlushWatch& dev = w.dev;
  Journal& j = w.j;

  j.append(payload(100, 1));  // depends on data (the default), but none was written
  REQUIRE(j.sync() == 0);
  CHECK(dev.flushers().size() == 1);  // the batch's

  j.note_data_written();
  j.append(payload(100, 2));
  REQUIRE(j.sync() == 0);
  CHECK(dev.flushers().size() == 2);  // data first, then the batch
  j.append(payload(100, 3));
  REQUIRE(j.sync() == 0);
  CHECK(dev.flushers().size() == 1);  // that data is durable already

  // Data, then a sync() that flushes on its own thread and is held there:
  // its flush has begun (data_dirty_ reads clean) but made nothing durable.
  j.note_data_written();
  dev.hold_next();
  std::atomic<int> direct_rc = 1;
  std::thread direct([&] { direct_rc = j.sync(); });
  const std::thread::id direct_id = direct.get_id();
  struct ReleaseAndJoin {  // also when an assertion below throws
    FlushWatch& dev;
    std::thread& t;
    ~ReleaseAndJoin() {
      dev.release();
      if (t.joinable()) t.join();
    }
  } release_and_join{dev, direct};
  dev.wait_held();
  j.append(payload(100, 4));
  REQUIRE(j.sync() == 0);  // its commit's flushes are not held
  const auto flushers = dev.flushers();
  CHECK(std::count(flushers.begin(), flushers.end(), direct_id) == 1);
  CHECK(flushers.size() == 3);  // the held one, then this commit's data flush and batch flush
  dev.release();
  direct.join();
  CHECK(direct_rc == 0);
  j.stop();
  const Replayed rep = replay(r);
  REQUIRE(rep.ok);
  CHECK(rep.batches.size() == 4);
}

TEST_CASE("journal: stop commits what is pending", "[journal]") {
  Ring r(64);
  Bytes p = payload(500, 9);
  {
    Running run(r);
    run.j.append(p);
    run.j.stop();
    run.j.stop();  // idempotent
  }
  auto out = replay(r);
  REQUIRE(out.ok);
  REQUIRE(out.batches.size() == 1);
  CHECK(out.batches[0] == p);
}

TEST_CASE("journal: many batches wrapping around the ring replay correctly", "[journal]") {
  // 16 blocks: every few batches the ring wraps; a "checkpoint" moves the
  // tail whenever 30 KiB are in use, as FileSystem would.
  const std::size_t max_len = GENERATE(std::size_t{4000}, std::size_t{11000});
  Ring r(16);
  std::mt19937_64 rng(max_len + 7);
  std::deque<Bytes> since_tail;
  std::uint64_t tail = 0;
  Running run(r);
  int checks = 0;
  for (int i = 0; i < 600; ++i) {
    if (run.j.head_lsn() - tail > 30 * 1024) {
      tail = run.j.head_lsn();
      run.j.set_tail(tail);
      since_tail.clear();
    }
    run.j.admit();  // never blocks: the tail keeps up
    since_tail.push_back(payload(1 + rng() % max_len, i));
    run.commit(since_tail.back());
    if (i % 7 == 0 || i == 599) {
      ++checks;
      auto out = replay(r, tail);
      INFO("after batch " << i << " (lap " << run.j.head_lsn() / r.geo.capacity() << "): " << out.why);
      REQUIRE(out.ok);
      REQUIRE_FALSE(out.stats.torn_tail);
      REQUIRE(out.batches.size() == since_tail.size());
      for (std::size_t k = 0; k < since_tail.size(); ++k) REQUIRE(out.batches[k] == since_tail[k]);
      REQUIRE(out.stats.end_lsn == run.j.head_lsn());
    }
  }
  CHECK(run.j.head_lsn() / r.geo.capacity() >= 20);  // wrapped many times
  CHECK(checks > 80);
}

TEST_CASE("journal: a torn last batch ends the replay cleanly", "[journal]") {
  Ring r(256);
  std::vector<Bytes> sent;
  std::vector<std::uint64_t> lsn;
  {
    Running run(r);
    for (int i = 0; i < 4; ++i) {
      sent.push_back(payload(300 + i, i));
      lsn.push_back(run.commit(sent.back()));
    }
    sent.push_back(payload(10000, 99));  // three blocks
    lsn.push_back(run.commit(sent.back()));
    CHECK(run.j.head_lsn() - lsn[4] == 3 * kBlockSize);
  }
  // Sanity: intact, all five replay.
  {
    auto out = replay(r);
    INFO(out.why);
    REQUIRE(out.ok);
    REQUIRE(out.batches.size() == 5);
  }
  SECTION("last block of the last batch never written") { r.zero_block_at(lsn[4] + 2 * kBlockSize); }
  SECTION("middle block of the last batch never written") { r.zero_block_at(lsn[4] + kBlockSize); }
  SECTION("a byte of the last batch's payload differs") { r.flip_byte_at(lsn[4] + 5000); }
  SECTION("a byte of the last batch's first block payload differs") { r.flip_byte_at(lsn[4] + 100); }
  auto out = replay(r);
  INFO(out.why);
  CHECK(out.ok);
  CHECK(out.stats.torn_tail);
  CHECK(out.stats.batches == 4);
  REQUIRE(out.batches.size() == 4);
  for (int i = 0; i < 4; ++i) CHECK(out.batches[i] == sent[i]);
  CHECK(out.stats.end_lsn == lsn[4]);
}

TEST_CASE("journal: a last batch whose header was never written is a clean end", "[journal]") {
  Ring r(64);
  std::vector<std::uint64_t> lsn;
  {
    Running run(r);
    for (int i = 0; i < 3; ++i) lsn.push_back(run.commit(payload(100, i)));
  }
  r.zero_block_at(lsn[2]);
  auto out = replay(r);
  CHECK(out.ok);
  CHECK_FALSE(out.stats.torn_tail);
  CHECK(out.batches.size() == 2);
  CHECK(out.stats.end_lsn == lsn[2]);
}

TEST_CASE("journal: a damaged batch followed by valid ones is an error", "[journal]") {
  Ring r(256);
  const std::size_t len = GENERATE(std::size_t{300}, std::size_t{9000});
  std::vector<std::uint64_t> lsn;
  {
    Running run(r);
    for (int i = 0; i < 6; ++i) lsn.push_back(run.commit(payload(len + i, i)));
  }
  SECTION("payload byte") { r.flip_byte_at(lsn[2] + 200); }
  SECTION("header byte") { r.flip_byte_at(lsn[2] + 20); }
  auto out = replay(r);
  INFO(out.why);
  CHECK_FALSE(out.ok);
  CHECK(out.why.find("damaged") != std::string::npos);
}

TEST_CASE("journal: stale batches from an earlier lap are not replayed", "[journal]") {
  Ring r(16);
  Running run(r);
  // Lap 1: fill the ring with single-block batches, moving the tail along.
  for (int i = 0; i < 15; ++i) {
    run.commit(payload(1000, 100 + i));
    run.j.set_tail(run.j.head_lsn());
  }
  const std::uint64_t tail = run.j.head_lsn();  // block 15 of lap 1
  std::vector<Bytes> lap2;
  SECTION("lap 2 ends on an old header") {
    for (int i = 0; i < 3; ++i) {
      lap2.push_back(payload(800, 200 + i));
      run.commit(lap2.back());
    }
  }
  SECTION("lap 2 ends inside an old multi-block batch") {
    // Two laps of two-block batches: headers end up at odd positions,
    // payload blocks at even ones.
    for (int i = 0; i < 16; ++i) {
      run.commit(payload(6000, 300 + i));
      run.j.set_tail(run.j.head_lsn());
    }
    // Now a one-block batch: the next position is the middle of an old
    // two-block batch.
    std::uint64_t t = run.j.head_lsn();
    lap2.push_back(payload(500, 400));
    run.commit(lap2.back());
    auto out = replay(r, t);
    INFO(out.why);
    REQUIRE(out.ok);
    CHECK_FALSE(out.stats.torn_tail);
    CHECK(out.batches == lap2);
    return;
  }
  auto out = replay(r, tail);
  INFO(out.why);
  REQUIRE(out.ok);
  CHECK_FALSE(out.stats.torn_tail);
  CHECK(out.batches.size() == 3);
  CHECK(out.batches == lap2);
  CHECK(out.stats.end_lsn == run.j.head_lsn());
}

TEST_CASE("journal: batches of another filesystem are ignored", "[journal]") {
  Ring r(64, kTag);
  {
    Running run(r);
    for (int i = 0; i < 5; ++i) run.commit(payload(200, i));
  }
  // Another tag sees nothing at all.
  auto other = replay(r, 0, kTag ^ 1);
  CHECK(other.ok);
  CHECK(other.batches.empty());
  CHECK_FALSE(other.stats.torn_tail);

  // A new filesystem on the same blocks writes two batches; the old
  // filesystem's batches after them sit at exactly the expected positions
  // but must not be replayed.
  Ring& same_blocks = r;
  JournalGeometry geo2 = r.geo;
  geo2.uuid_tag = kTag ^ 1;
  std::vector<Bytes> mine = {payload(100, 50), payload(150, 51)};
  {
    Journal j(same_blocks.dev, geo2);
    j.set_commit_interval(std::chrono::milliseconds(3600 * 1000));
    j.start(0, 0, nullptr, nullptr);
    for (const Bytes& p : mine) {
      j.append(p);
      REQUIRE(j.sync() == 0);
    }
  }
  auto out = replay(r, 0, kTag ^ 1);
  INFO(out.why);
  REQUIRE(out.ok);
  CHECK(out.batches == mine);
  CHECK_FALSE(out.stats.torn_tail);
  CHECK(out.stats.end_lsn == 2 * kBlockSize);
}

TEST_CASE("journal: replay continues across a restart at the replay end", "[journal]") {
  Ring r(64);
  std::vector<Bytes> sent;
  {
    Running run(r);
    for (int i = 0; i < 3; ++i) {
      sent.push_back(payload(700, i));
      run.commit(sent.back());
    }
  }
  auto first = replay(r);
  REQUIRE(first.ok);
  {
    Running run(r, first.stats.end_lsn, 0);
    for (int i = 3; i < 6; ++i) {
      sent.push_back(payload(900, i));
      run.commit(sent.back());
    }
  }
  auto out = replay(r);
  REQUIRE(out.ok);
  CHECK(out.batches == sent);
}

TEST_CASE("journal: admit blocks at 70% until set_tail frees room", "[journal][threads]") {
  Ring r(16);  // 64 KiB; 70% is 45875 bytes, counting one block of slack
  Running run(r);
  for (int i = 0; i < 10; ++i) run.commit(payload(1000, i));  // 10 blocks
  CHECK(run.j.fill() == Approx(11.0 / 16));
  {
    std::atomic<bool> passed{false};
    std::thread t([&] {
      run.j.admit();
      passed = true;
    });
    bool ok = wait_for(passed, 5000ms);
    if (!ok) run.j.set_tail(run.j.head_lsn());  // do not leave the thread stuck
    t.join();
    CHECK(ok);  // 11/16 < 70%: admitted at once
  }
  CHECK(run.checkpoint_wanted.load());  // asked for a checkpoint past 50%

  run.commit(payload(1000, 10));  // 12/16 = 75%
  std::atomic<bool> passed{false};
  std::thread t([&] {
    run.j.admit();
    passed = true;
  });
  std::this_thread::sleep_for(300ms);
  CHECK_FALSE(passed.load());
  run.j.set_tail(run.j.head_lsn());
  bool released = wait_for(passed, 5000ms);
  if (!released) run.j.set_tail(run.j.head_lsn());
  t.join();
  CHECK(released);
  CHECK(run.j.fill() == Approx(1.0 / 16));
}

TEST_CASE("journal: stop releases writers waiting in admit", "[journal][threads]") {
  Ring r(16);
  auto run = std::make_unique<Running>(r);
  for (int i = 0; i < 12; ++i) run->commit(payload(1000, i));
  std::atomic<bool> passed{false};
  std::thread t([&] {
    run->j.admit();
    passed = true;
  });
  std::this_thread::sleep_for(100ms);
  REQUIRE_FALSE(passed.load());
  run->j.stop();
  bool released = wait_for(passed, 2000ms);
  // Unblock it anyway so that the test ends.
  if (!released) run->j.set_tail(run->j.head_lsn());
  t.join();
  CHECK(released);
}

TEST_CASE("journal: sync from 8 threads at once (group commit)", "[journal][threads]") {
  Ring r(2048);
  constexpr int kThreads = 8, kPerThread = 150;
  constexpr std::size_t kLen = 64;
  std::vector<std::string> errors(kThreads);
  std::uint64_t last_seq;
  std::uint64_t durable;
  {
    Running run(r);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          Bytes p(kLen, 0);
          p[0] = static_cast<std::uint8_t>(t);
          std::memcpy(p.data() + 1, &i, sizeof i);
          run.j.admit();
          std::uint64_t seq = run.j.append(p);
          if (int rc = run.j.sync(); rc != 0) errors[t] = "sync failed " + std::to_string(rc);
          if (run.durable.load() < seq && errors[t].empty())
            errors[t] = "sync returned before on_durable covered seq " + std::to_string(seq);
        }
      });
    }
    for (auto& th : threads) th.join();
    last_seq = run.j.last_appended_seq();
    durable = run.durable.load();
  }
  for (const auto& e : errors) CHECK(e.empty());
  CHECK(last_seq == kThreads * kPerThread);
  CHECK(durable == last_seq);

  auto out = replay(r);
  INFO(out.why);
  REQUIRE(out.ok);
  CHECK(out.stats.batches <= static_cast<std::uint64_t>(kThreads * kPerThread));
  std::vector<int> next(kThreads, 0);
  std::size_t txns = 0;
  for (const Bytes& b : out.batches) {
    REQUIRE(b.size() % kLen == 0);
    for (std::size_t off = 0; off < b.size(); off += kLen) {
      int t = b[off];
      int i;
      std::memcpy(&i, b.data() + off + 1, sizeof i);
      REQUIRE(t < kThreads);
      REQUIRE(i == next[t]);  // each thread's transactions in its order
      ++next[t];
      ++txns;
    }
  }
  CHECK(txns == static_cast<std::size_t>(kThreads * kPerThread));
}

TEST_CASE("journal: on_durable reports the last sequence number of each batch", "[journal]") {
  Ring r(64);
  Running run(r);
  std::uint64_t s1 = run.j.append(payload(10, 1));
  REQUIRE(run.j.sync() == 0);
  CHECK(run.durable.load() == s1);
  run.j.append(payload(10, 2));
  std::uint64_t s3 = run.j.append(payload(10, 3));
  REQUIRE(run.j.sync() == 0);
  CHECK(run.durable.load() == s3);
  CHECK(run.durable_calls.load() == 2);
}

TEST_CASE("journal: everything the writer admitted is accepted by replay", "[journal]") {
  // admit() lets pending transactions grow to 70% of the ring, and one
  // sync() commits them all; replay must accept whatever batches the writer
  // produces for that, with every transaction whole and in order.
  Ring r(16);
  std::vector<Bytes> sent;
  {
    Running run(r);
    for (int i = 0; i < 9; ++i) {
      run.j.admit();  // passes: at most 9 * 4000 + 4096 bytes in use
      sent.push_back(payload(4000, i));
      run.j.append(sent.back());
    }
    REQUIRE(run.j.sync() == 0);
    CHECK(run.durable.load() == 9);
  }
  auto out = replay(r);
  INFO(out.why);
  REQUIRE(out.ok);
  CHECK_FALSE(out.stats.torn_tail);
  Bytes all, got;
  for (const Bytes& b : sent) all.insert(all.end(), b.begin(), b.end());
  for (const Bytes& b : out.batches) {
    CHECK(b.size() % 4000 == 0);  // whole transactions only
    got.insert(got.end(), b.begin(), b.end());
  }
  CHECK(got == all);
}

TEST_CASE("journal: admit counts the batch a commit is writing", "[journal][threads]") {
  // A 150 KiB batch (59% of the 256 KiB ring) is written and its flush held;
  // 40 KiB more are pending. Together they are past 70%: admit() must wait,
  // as it would once the batch is behind the head, until a checkpoint frees
  // the ring.
  WatchedJournal w;
  w.j.append(payload(150 * 1024, 1));
  w.dev.hold_next();
  std::thread committer([&] { CHECK(w.j.sync() == 0); });
  w.dev.wait_held();
  w.j.append(payload(40 * 1024, 2));
  std::atomic<bool> admitted{false};
  std::thread writer([&] {
    CHECK(w.j.admit() == 0);
    admitted = true;
  });
  std::this_thread::sleep_for(300ms);
  CHECK_FALSE(admitted.load());  // counted while in flight
  w.dev.release();
  committer.join();
  std::this_thread::sleep_for(100ms);
  CHECK_FALSE(admitted.load());  // and once behind the head
  w.j.set_tail(w.j.head_lsn());
  const bool released = wait_for(admitted, 5000ms);
  if (!released) w.j.stop();  // do not leave the writer stuck
  writer.join();
  CHECK(released);
  CHECK(w.j.sync() == 0);
  CHECK(w.j.error() == 0);
}

TEST_CASE("journal: the committer refuses to overrun the tail", "[journal]") {
  // Without admit(), a writer can queue more than the ring holds; the
  // committer must fail with ENOSPC rather than overwrite live batches.
  Ring r(16);
  Running run(r);
  run.commit(payload(100, 1));
  for (int i = 0; i < 20; ++i) run.j.append(payload(4000, i));
  CHECK(run.j.sync() == -ENOSPC);
  CHECK(run.j.error() == -ENOSPC);
  auto out = replay(r);
  REQUIRE(out.ok);
  CHECK(out.batches.size() == 1);
}

}  // namespace dhfs
