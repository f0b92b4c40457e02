// WritebackStarter: starts the write-back once per threshold crossed, on a
// thread of its own that no writer waits for.
//
// Catch2 assertions are not thread-safe: the writer threads only count.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "fs/writeback_starter.h"

using dhfs::WritebackStarter;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t kEvery = 1 << 20;

// Waits up to 10 s for `starter` to have made `n` starts.
bool reaches(const WritebackStarter& starter, std::uint64_t n) {
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (starter.starts() < n) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

}  // namespace

TEST_CASE("writeback starter: one start per threshold crossed, none below it", "[writeback]") {
  std::atomic<int> calls{0};
  WritebackStarter starter([&] { calls.fetch_add(1); }, kEvery);
  starter.wrote(kEvery - 4096);
  std::this_thread::sleep_for(50ms);
  CHECK(starter.starts() == 0);
  CHECK(calls.load() == 0);

  starter.wrote(4096);  // crosses
  REQUIRE(reaches(starter, 1));
  CHECK(calls.load() == 1);

  // The count starts again from zero after a crossing.
  starter.wrote(kEvery / 2);
  std::this_thread::sleep_for(50ms);
  CHECK(starter.starts() == 1);
  starter.wrote(kEvery / 2);
  REQUIRE(reaches(starter, 2));

  // One write larger than the threshold is one start, not several.
  starter.wrote(4 * kEvery);
  REQUIRE(reaches(starter, 3));
  std::this_thread::sleep_for(50ms);
  CHECK(starter.starts() == 3);
  CHECK(calls.load() == 3);
}

TEST_CASE("writeback starter: writers never wait for a start that blocks", "[writeback]") {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> entered{0};
  WritebackStarter starter(
      [&] {
        entered.fetch_add(1);
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return release; });
      },
      kEvery);
  auto let_go = [&] {
    {
      std::lock_guard lock(mu);
      release = true;
    }
    cv.notify_all();
  };
  // Whatever fails below, the blocked start is let go before the starter
  // joins its thread (or the test would hang instead of failing).
  struct LetGo {
    std::function<void()> fn;
    ~LetGo() { fn(); }
  } guard{let_go};

  // The first crossing starts a write-back that stays blocked (a full
  // device queue); further crossings meanwhile collapse into one more start.
  starter.wrote(kEvery);
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (entered.load() == 0 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
  REQUIRE(entered.load() == 1);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) starter.wrote(kEvery);
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  CHECK(starter.starts() == 0);
  let_go();
  REQUIRE(reaches(starter, 2));
  std::this_thread::sleep_for(50ms);
  CHECK(starter.starts() == 2);
  CHECK(entered.load() == 2);
}

TEST_CASE("writeback starter: concurrent writers lose no crossing", "[writeback]") {
  // Eight writers, 4 KiB at a time, 64 MiB in all: at least one start,
  // and at most one per MiB (crossings that come while a start runs
  // collapse). The destructor then stops the thread cleanly.
  std::atomic<int> calls{0};
  {
    WritebackStarter starter([&] { calls.fetch_add(1); }, kEvery);
    std::vector<std::jthread> writers;
    for (int t = 0; t < 8; ++t)
      writers.emplace_back([&] {
        for (int i = 0; i < 2048; ++i) starter.wrote(4096);
      });
    writers.clear();  // joins
    REQUIRE(reaches(starter, 1));
  }
  CHECK(calls.load() >= 1);
  CHECK(calls.load() <= 64);
}

TEST_CASE("writeback starter: nothing written, no thread and no start", "[writeback]") {
  std::atomic<int> calls{0};
  { WritebackStarter starter([&] { calls.fetch_add(1); }, kEvery); }
  CHECK(calls.load() == 0);
}
