// Tests of KernelChannel (fs/kernel_channel.h): the FUSE_INIT reply gains
// FUSE_HANDLE_KILLPRIV_V2 only where the kernel offered it, the offer of
// FUSE over io_uring and the entry size it needs are read from INIT, and the
// kill flags of WRITE, OPEN and SETATTR requests reach the handling thread;
// requests are counted by kind with the daemon's time for them (RequestStats).
#include <fcntl.h>
#include <unistd.h>
#include <linux/fuse.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <thread>
#include <vector>

#include "fs/kernel_channel.h"
#include "fs/request_stats.h"
#include "fs/ring_entry.h"

namespace dhfs {
namespace {

// A request as the kernel writes it: header, then the opcode's body.
template <typename Body>
std::vector<std::byte> request(std::uint32_t opcode, std::uint64_t unique, const Body& body) {
  fuse_in_header h{};
  h.len = static_cast<std::uint32_t>(sizeof h + sizeof body);
  h.opcode = opcode;
  h.unique = unique;
  std::vector<std::byte> raw(sizeof h + sizeof body);
  std::memcpy(raw.data(), &h, sizeof h);
  std::memcpy(raw.data() + sizeof h, &body, sizeof body);
  return raw;
}

fuse_init_in init_in(std::uint32_t flags) {
  fuse_init_in in{};
  in.major = 7;
  in.minor = 38;
  in.flags = flags;
  return in;
}

// Sends the INIT reply libfuse would write through the channel and returns
// the flags that reach the kernel.
std::uint32_t init_reply_flags(KernelChannel& ch, std::uint64_t unique, std::int32_t error = 0,
                               std::size_t body_size = sizeof(fuse_init_out)) {
  fuse_out_header h{};
  h.unique = unique;
  h.error = error;
  fuse_init_out out{};
  out.major = 7;
  out.minor = 31;
  out.flags = FUSE_ASYNC_READ | FUSE_WRITEBACK_CACHE;
  iovec iov[2] = {{&h, sizeof h}, {&out, body_size}};
  ch.on_reply(iov, 2);
  return out.flags;
}

TEST_CASE("kernel channel: FUSE_INIT gains HANDLE_KILLPRIV_V2 where the kernel offers it", "[fuse]") {
  KernelChannel ch;
  CHECK_FALSE(ch.killpriv_v2());
  // Replies before INIT, and replies to other requests, pass unchanged.
  CHECK(init_reply_flags(ch, 7) == (FUSE_ASYNC_READ | FUSE_WRITEBACK_CACHE));
  ch.on_request(request(FUSE_INIT, 2, init_in(FUSE_ASYNC_READ | FUSE_HANDLE_KILLPRIV_V2)));
  CHECK(init_reply_flags(ch, 3) == (FUSE_ASYNC_READ | FUSE_WRITEBACK_CACHE));
  CHECK(init_reply_flags(ch, 2) == (FUSE_ASYNC_READ | FUSE_WRITEBACK_CACHE | FUSE_HANDLE_KILLPRIV_V2));
  CHECK(ch.killpriv_v2());
  // Once only: a later reply with the same unique is not the INIT reply.
  CHECK(init_reply_flags(ch, 2) == (FUSE_ASYNC_READ | FUSE_WRITEBACK_CACHE));
}

TEST_CASE("kernel channel: FUSE_INIT stays as libfuse made it otherwise", "[fuse]") {
  SECTION("the kernel does not offer the capability") {
    KernelChannel ch;
    ch.on_request(request(FUSE_INIT, 2, init_in(FUSE_ASYNC_READ)));
    CHECK(init_reply_flags(ch, 2) == (FUSE_ASYNC_READ | FUSE_WRITEBACK_CACHE));
    CHECK_FALSE(ch.killpriv_v2());
  }
  SECTION("libfuse refuses the INIT") {
    KernelChannel ch;
    ch.on_request(request(FUSE_INIT, 2, init_in(FUSE_HANDLE_KILLPRIV_V2)));
    CHECK(init_reply_flags(ch, 2, -EPROTO) == (FUSE_ASYNC_READ | FUSE_WRITEBACK_CACHE));
    CHECK_FALSE(ch.killpriv_v2());
  }
  SECTION("a reply too short to hold the flags") {
    KernelChannel ch;
    ch.on_request(request(FUSE_INIT, 2, init_in(FUSE_HANDLE_KILLPRIV_V2)));
    CHECK(init_reply_flags(ch, 2, 0, 8) == (FUSE_ASYNC_READ | FUSE_WRITEBACK_CACHE));
    CHECK_FALSE(ch.killpriv_v2());
  }
  SECTION("an INIT request cut short") {
    KernelChannel ch;
    auto raw = request(FUSE_INIT, 2, init_in(FUSE_HANDLE_KILLPRIV_V2));
    raw.resize(sizeof(fuse_in_header) + 8);
    ch.on_request(raw);
    CHECK(init_reply_flags(ch, 2) == (FUSE_ASYNC_READ | FUSE_WRITEBACK_CACHE));
  }
}

TEST_CASE("kernel channel: whether the kernel offers FUSE over io_uring, and the entry size it needs", "[fuse]") {
  KernelChannel ch;
  CHECK_FALSE(ch.kernel_offers_uring());
  CHECK(ch.ring_payload_size() == 0);
  fuse_init_in in = init_in(FUSE_INIT_EXT);
  SECTION("offered: bit 41, in flags2") {
    in.flags2 = static_cast<std::uint32_t>(fuse_uring::kInitOverIoUring >> 32);
    ch.on_request(request(FUSE_INIT, 2, in));
    CHECK(ch.kernel_offers_uring());
  }
  SECTION("flags2 without FUSE_INIT_EXT means nothing") {
    in.flags = 0;
    in.flags2 = static_cast<std::uint32_t>(fuse_uring::kInitOverIoUring >> 32);
    ch.on_request(request(FUSE_INIT, 2, in));
    CHECK_FALSE(ch.kernel_offers_uring());
  }
  SECTION("not offered") {
    in.flags2 = 1;  // another flag of the second word
    ch.on_request(request(FUSE_INIT, 2, in));
    CHECK_FALSE(ch.kernel_offers_uring());
  }

  // The payload buffer: the largest of 8 KiB, max_write and max_pages pages.
  fuse_out_header h{};
  h.unique = 2;
  fuse_init_out out{};
  out.flags = FUSE_MAX_PAGES;
  out.max_write = 128 << 10;
  out.max_pages = 256;
  iovec iov[2] = {{&h, sizeof h}, {&out, sizeof out}};
  ch.on_reply(iov, 2);
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  CHECK(ch.ring_payload_size() == std::max<std::size_t>(128 << 10, 256 * page));

  KernelChannel other;
  other.on_request(request(FUSE_INIT, 5, in));
  h.unique = 5;
  out.flags = 0;  // max_pages is not valid without FUSE_MAX_PAGES
  out.max_write = 4096;
  other.on_reply(iov, 2);
  CHECK(other.ring_payload_size() == 8192);
}

TEST_CASE("kernel channel: kill flags of the request the thread read last", "[fuse]") {
  KernelChannel ch;
  fuse_write_in w{};
  w.write_flags = FUSE_WRITE_KILL_SUIDGID;
  ch.on_request(request(FUSE_WRITE, 10, w));
  CHECK(KernelChannel::current_request().kill_suidgid);
  // Another thread has read nothing: no flags there.
  bool other_thread = true;
  std::thread([&] { other_thread = KernelChannel::current_request().kill_suidgid; }).join();
  CHECK_FALSE(other_thread);

  w.write_flags = FUSE_WRITE_CACHE;  // writeback of the page cache
  ch.on_request(request(FUSE_WRITE, 11, w));
  CHECK_FALSE(KernelChannel::current_request().kill_suidgid);

  fuse_open_in o{};
  o.flags = O_WRONLY | O_TRUNC;
  o.open_flags = FUSE_OPEN_KILL_SUIDGID;
  ch.on_request(request(FUSE_OPEN, 12, o));
  CHECK(KernelChannel::current_request().kill_suidgid);

  fuse_setattr_in s{};
  s.valid = FATTR_SIZE;
  ch.on_request(request(FUSE_SETATTR, 13, s));
  CHECK_FALSE(KernelChannel::current_request().kill_suidgid);
  s.valid = FATTR_UID | FATTR_KILL_SUIDGID;
  ch.on_request(request(FUSE_SETATTR, 14, s));
  CHECK(KernelChannel::current_request().kill_suidgid);

  // The same bit in other opcodes' bodies means nothing.
  fuse_getattr_in g{};
  g.getattr_flags = FATTR_KILL_SUIDGID | FUSE_WRITE_KILL_SUIDGID | FUSE_OPEN_KILL_SUIDGID;
  ch.on_request(request(FUSE_GETATTR, 15, g));
  CHECK_FALSE(KernelChannel::current_request().kill_suidgid);

  // A body cut short never reads past the request.
  auto raw = request(FUSE_WRITE, 16, w);
  raw.resize(sizeof(fuse_in_header) + 4);
  ch.on_request(raw);
  CHECK_FALSE(KernelChannel::current_request().kill_suidgid);
  ch.on_request({});
  CHECK_FALSE(KernelChannel::current_request().kill_suidgid);
}

// A reply as libfuse writes it: the header alone (an error, or no body).
void reply(KernelChannel& ch, std::uint64_t unique) {
  fuse_out_header h{};
  h.len = sizeof h;
  h.unique = unique;
  iovec iov{&h, sizeof h};
  ch.on_reply(&iov, 1);
}

TEST_CASE("kernel channel: each request is counted by kind with the time to its reply on the same thread",
          "[fuse]") {
  KernelChannel ch;
  fuse_getattr_in g{};
  ch.on_request(request(FUSE_GETATTR, 20, g));
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  reply(ch, 20);
  auto kinds = ch.requests().snapshot();
  CHECK(kinds[FUSE_GETATTR].count == 1);
  CHECK(kinds[FUSE_GETATTR].total_ns >= 2'000'000);
  CHECK(kinds[FUSE_GETATTR].max_ns == kinds[FUSE_GETATTR].total_ns);

  // A notification (unique 0) between a request and its reply is not a
  // reply; a reply to another request (another thread's) counts nothing here.
  fuse_write_in w{};
  ch.on_request(request(FUSE_WRITE, 21, w));
  reply(ch, 0);
  reply(ch, 99);
  CHECK(ch.requests().snapshot()[FUSE_WRITE].count == 0);
  reply(ch, 21);
  CHECK(ch.requests().snapshot()[FUSE_WRITE].count == 1);
  reply(ch, 21);  // answered once only
  CHECK(ch.requests().snapshot()[FUSE_WRITE].count == 1);

  // Requests without a reply count when read, with no time.
  fuse_forget_in f{};
  ch.on_request(request(FUSE_FORGET, 22, f));
  fuse_batch_forget_in bf{};
  ch.on_request(request(FUSE_BATCH_FORGET, 23, bf));
  kinds = ch.requests().snapshot();
  CHECK(kinds[FUSE_FORGET].count == 1);
  CHECK(kinds[FUSE_BATCH_FORGET].count == 1);
  CHECK(kinds[FUSE_FORGET].total_ns == 0);

  // Each thread pairs its own request with its own reply.
  ch.on_request(request(FUSE_GETATTR, 30, g));
  std::thread([&] {
    fuse_open_in o{};
    ch.on_request(request(FUSE_OPEN, 31, o));
    reply(ch, 30);  // not this thread's request
    reply(ch, 31);
  }).join();
  reply(ch, 30);
  kinds = ch.requests().snapshot();
  CHECK(kinds[FUSE_OPEN].count == 1);
  CHECK(kinds[FUSE_GETATTR].count == 2);
  std::uint64_t all = 0;
  for (const auto& k : kinds) all += k.count;
  CHECK(all == 6);
}

TEST_CASE("request stats: counts, sums and maxima per opcode from many threads, opcodes out of range are dropped",
          "[fuse]") {
  RequestStats stats;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&stats, t] {
      for (std::uint64_t i = 1; i <= 1000; ++i) stats.record(FUSE_LOOKUP, i + static_cast<std::uint64_t>(t) * 1000);
    });
  for (auto& th : threads) th.join();
  stats.record(RequestStats::kOpcodes, 5);
  stats.record(4096, 5);  // CUSE_INIT
  const auto kinds = stats.snapshot();
  CHECK(kinds[FUSE_LOOKUP].count == 4000);
  CHECK(kinds[FUSE_LOOKUP].total_ns == 4000ULL * 4001 / 2);
  CHECK(kinds[FUSE_LOOKUP].max_ns == 4000);
  std::uint64_t others = 0;
  for (std::size_t op = 0; op < kinds.size(); ++op)
    if (op != FUSE_LOOKUP) others += kinds[op].count;
  CHECK(others == 0);
}

}  // namespace
}  // namespace dhfs
