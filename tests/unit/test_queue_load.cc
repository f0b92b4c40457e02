// QueueLoad: a queue's ring threads stay on its CPU until it serves `busy`
// requests at once, and return there once `hold` has passed without that.
#include <catch2/catch.hpp>

#include <chrono>

#include "fs/queue_load.h"

using namespace std::chrono_literals;
using dhfs::QueueLoad;

TEST_CASE("queue load: requests one or two at a time keep the threads on the queue's CPU", "[queue_load]") {
  QueueLoad load(3, 20ms);
  const auto t0 = QueueLoad::Clock::now();
  CHECK_FALSE(load.spread(t0));
  for (int i = 0; i < 1000; ++i) {  // a process waiting for each reply, a release beside it
    load.begin(t0 + i * 1us);
    load.begin(t0 + i * 1us);
    CHECK_FALSE(load.spread(t0 + i * 1us));
    load.end();
    load.end();
  }
}

TEST_CASE("queue load: three at once spread them until the hold has passed without that", "[queue_load]") {
  QueueLoad load(3, 20ms);
  const auto t0 = QueueLoad::Clock::now();
  load.begin(t0);
  load.begin(t0);
  load.begin(t0 + 1ms);
  CHECK(load.spread(t0 + 1ms));
  load.end();
  load.end();
  load.end();
  CHECK(load.spread(t0 + 20ms));  // held although the burst is over
  CHECK_FALSE(load.spread(t0 + 21ms + 1us));

  // A later burst extends the hold from its own time.
  load.begin(t0 + 10ms);
  load.begin(t0 + 10ms);
  load.begin(t0 + 15ms);
  CHECK(load.spread(t0 + 34ms));
  CHECK_FALSE(load.spread(t0 + 35ms + 1us));
  load.end();
  // Two still in service and a third comes: a burst again.
  load.begin(t0 + 36ms);
  CHECK(load.spread(t0 + 36ms));
  load.end();
  load.end();
  load.end();
  // One at a time again: nothing renews the hold.
  load.begin(t0 + 60ms);
  CHECK_FALSE(load.spread(t0 + 60ms));
  load.end();
}

TEST_CASE("queue load: with busy 0 the threads never leave the queue's CPU", "[queue_load]") {
  QueueLoad load(0, 20ms);
  const auto t0 = QueueLoad::Clock::now();
  for (int i = 0; i < 64; ++i) load.begin(t0);
  CHECK_FALSE(load.spread(t0));
}
