// Tests of RingEntry (fs/ring_entry.h): a request the kernel split over a
// FUSE over io_uring entry reaches libfuse whole, in /dev/fuse's layout, and
// a reply lands where the kernel reads it.
#include <linux/fuse.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fs/device.h"
#include "fs/ring_entry.h"

namespace dhfs {
namespace {

constexpr std::size_t kPayload = 64 << 10;

// Fills `e` as the kernel does: header in in_out, the opcode's struct in
// op_in, the rest in the payload buffer, `len` counting all three.
template <typename Op>
void kernel_writes(RingEntry& e, std::uint32_t opcode, std::uint64_t unique, const Op* op,
                   const std::string& payload) {
  auto* headers = static_cast<fuse_uring::ReqHeader*>(e.buffers()[0].iov_base);
  const std::size_t op_size = op ? sizeof *op : 0;
  fuse_in_header in{};
  in.len = static_cast<std::uint32_t>(sizeof in + op_size + payload.size());
  in.opcode = opcode;
  in.unique = unique;
  in.nodeid = 42;
  std::memcpy(headers->in_out.data(), &in, sizeof in);
  if (op) std::memcpy(headers->op_in.data(), op, sizeof *op);
  std::memcpy(e.buffers()[1].iov_base, payload.data(), payload.size());
  headers->ent_in_out.commit_id = unique;
  headers->ent_in_out.payload_sz = static_cast<std::uint32_t>(payload.size());
}

fuse_out_header reply_header(const RingEntry& e) {
  fuse_out_header out{};
  std::memcpy(&out, static_cast<const fuse_uring::ReqHeader*>(e.buffers()[0].iov_base)->in_out.data(), sizeof out);
  return out;
}

std::uint32_t reply_payload_size(const RingEntry& e) {
  return static_cast<const fuse_uring::ReqHeader*>(e.buffers()[0].iov_base)->ent_in_out.payload_sz;
}

TEST_CASE("ring entry: registers a header of the kernel's size and the payload asked for", "[fuse]") {
  AlignedBuffer memory = AlignedBuffer::uninitialized(RingEntry::memory_size(kPayload));
  RingEntry e(memory.span());
  CHECK(e.buffers()[0].iov_len == 288);
  CHECK(e.buffers()[1].iov_len == kPayload);
}

TEST_CASE("ring entry: a request reaches libfuse in /dev/fuse's layout, payload not copied", "[fuse]") {
  AlignedBuffer memory = AlignedBuffer::uninitialized(RingEntry::memory_size(kPayload));
  RingEntry e(memory.span());
  SECTION("a write: fuse_write_in, then the data") {
    fuse_write_in w{};
    w.offset = 8192;
    w.size = 5;
    kernel_writes(e, FUSE_WRITE, 77, &w, "hello");
    const auto raw = e.request();
    REQUIRE(raw.size() == sizeof(fuse_in_header) + sizeof w + 5);
    fuse_in_header in{};
    std::memcpy(&in, raw.data(), sizeof in);
    CHECK(in.unique == 77);
    CHECK(in.opcode == FUSE_WRITE);
    CHECK(in.nodeid == 42);
    fuse_write_in got{};
    std::memcpy(&got, raw.data() + sizeof in, sizeof got);
    CHECK(got.offset == 8192);
    CHECK(got.size == 5);
    CHECK(std::string(reinterpret_cast<const char*>(raw.data() + sizeof in + sizeof got), 5) == "hello");
    // The data is where the kernel put it.
    CHECK(static_cast<const void*>(raw.data() + sizeof in + sizeof got) == e.buffers()[1].iov_base);
    CHECK(e.commit_id() == 77);
  }
  SECTION("a lookup: no struct, the name in the payload") {
    kernel_writes<fuse_write_in>(e, FUSE_LOOKUP, 78, nullptr, std::string("name\0", 5));
    const auto raw = e.request();
    REQUIRE(raw.size() == sizeof(fuse_in_header) + 5);
    CHECK(std::string(reinterpret_cast<const char*>(raw.data() + sizeof(fuse_in_header))) == "name");
  }
  SECTION("malformed: nothing is handed out") {
    fuse_write_in w{};
    kernel_writes(e, FUSE_WRITE, 79, &w, "x");
    auto* headers = static_cast<fuse_uring::ReqHeader*>(e.buffers()[0].iov_base);
    SECTION("len shorter than header and payload") {
      fuse_in_header in{};
      std::memcpy(&in, headers->in_out.data(), sizeof in);
      in.len = sizeof in;
      std::memcpy(headers->in_out.data(), &in, sizeof in);
    }
    SECTION("a struct larger than op_in") {
      fuse_in_header in{};
      std::memcpy(&in, headers->in_out.data(), sizeof in);
      in.len = static_cast<std::uint32_t>(sizeof in + 129 + 1);
      std::memcpy(headers->in_out.data(), &in, sizeof in);
    }
    SECTION("a payload larger than the buffer") { headers->ent_in_out.payload_sz = kPayload + 1; }
    CHECK(e.request().empty());
    // It still gets an answer, so that the entry goes back to the kernel.
    e.reply_error(EIO);
    CHECK(e.take_replied());
    CHECK(reply_header(e).error == -EIO);
    CHECK(reply_header(e).unique == 79);
  }
}

TEST_CASE("ring entry: replies", "[fuse]") {
  AlignedBuffer memory = AlignedBuffer::uninitialized(RingEntry::memory_size(kPayload));
  RingEntry e(memory.span());
  fuse_read_in r{};
  kernel_writes(e, FUSE_READ, 90, &r, "");
  REQUIRE_FALSE(e.request().empty());

  fuse_out_header out{};
  out.unique = 91;  // another request's reply (a notification has 0)
  std::string body = "abc";
  std::string more = "defg";
  iovec iov[3] = {{&out, sizeof out}, {body.data(), body.size()}, {more.data(), more.size()}};
  CHECK_FALSE(e.take_reply(iov, 3));
  out.unique = 0;
  CHECK_FALSE(e.take_reply(iov, 3));
  CHECK_FALSE(e.take_replied());

  out.unique = 90;
  REQUIRE(e.take_reply(iov, 3));
  CHECK(e.take_replied());
  CHECK_FALSE(e.take_replied());  // taken once
  CHECK(reply_header(e).unique == 90);
  CHECK(reply_header(e).error == 0);
  CHECK(reply_header(e).len == sizeof out + 7);
  CHECK(reply_payload_size(e) == 7);
  CHECK(std::string(static_cast<const char*>(e.buffers()[1].iov_base), 7) == "abcdefg");

  SECTION("an error reply has no body") {
    kernel_writes(e, FUSE_READ, 92, &r, "");
    REQUIRE_FALSE(e.request().empty());
    out.unique = 92;
    out.error = -ENOENT;
    REQUIRE(e.take_reply(iov, 1));
    CHECK(reply_header(e).error == -ENOENT);
    CHECK(reply_payload_size(e) == 0);
  }
  SECTION("a body larger than the payload buffer becomes EIO") {
    kernel_writes(e, FUSE_READ, 93, &r, "");
    REQUIRE_FALSE(e.request().empty());
    std::vector<char> big(kPayload + 1, 'x');
    out.unique = 93;
    iovec too_big[2] = {{&out, sizeof out}, {big.data(), big.size()}};
    REQUIRE(e.take_reply(too_big, 2));
    CHECK(reply_header(e).error == -EIO);
    CHECK(reply_payload_size(e) == 0);
  }
  SECTION("a body built in the payload buffer stays there, and the buffer is block-aligned") {
    kernel_writes(e, FUSE_READ, 95, &r, "");
    REQUIRE_FALSE(e.request().empty());
    const std::span<std::byte> at = e.payload();
    CHECK(at.data() == e.buffers()[1].iov_base);
    CHECK(at.size() == kPayload);
    CHECK(reinterpret_cast<std::uintptr_t>(at.data()) % 4096 == 0);
    std::memset(at.data(), 'z', 8192);
    std::memcpy(at.data() + 8192, "tail", 4);
    out.unique = 95;
    // In two parts, as a reply may come: the second lies where the first ends.
    iovec in_place[3] = {{&out, sizeof out}, {at.data(), 8192}, {at.data() + 8192, 4}};
    REQUIRE(e.take_reply(in_place, 3));
    CHECK(reply_payload_size(e) == 8196);
    const char* got = static_cast<const char*>(e.buffers()[1].iov_base);
    CHECK(std::string(got, 3) == "zzz");
    CHECK(std::string(got + 8192, 4) == "tail");
  }
  SECTION("a body from later in the payload buffer moves to its start") {
    kernel_writes(e, FUSE_READ, 96, &r, "");
    REQUIRE_FALSE(e.request().empty());
    std::byte* at = e.payload().data();
    std::memcpy(at + 4, "overlapping", 11);  // [4, 15) onto [0, 11)
    out.unique = 96;
    iovec shifted[2] = {{&out, sizeof out}, {at + 4, 11}};
    REQUIRE(e.take_reply(shifted, 2));
    CHECK(std::string(reinterpret_cast<const char*>(at), 11) == "overlapping");
  }
  SECTION("a request is answered once; the next only once handed out") {
    out.unique = 90;
    CHECK_FALSE(e.take_reply(iov, 3));
    kernel_writes(e, FUSE_READ, 94, &r, "");
    out.unique = 94;
    CHECK_FALSE(e.take_reply(iov, 3));
    REQUIRE_FALSE(e.request().empty());
    CHECK(e.take_reply(iov, 3));
  }
}

}  // namespace
}  // namespace dhfs
