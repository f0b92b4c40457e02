#include "fs/ring_entry.h"

#include <linux/fuse.h>

#include <cerrno>
#include <cstring>

namespace dhfs {

static_assert(sizeof(fuse_in_header) <= sizeof(fuse_uring::ReqHeader{}.in_out));
static_assert(sizeof(fuse_out_header) <= sizeof(fuse_uring::ReqHeader{}.in_out));

RingEntry::RingEntry(std::span<std::byte> memory)
    : memory_(memory.data()), payload_size_(memory.size() - kPayloadOffset) {
  iov_[0] = {&headers_, sizeof headers_};
  iov_[1] = {payload_at(), payload_size_};
}

std::span<std::byte> RingEntry::request() {
  serving_ = 0;
  replied_ = false;
  fuse_in_header in{};
  std::memcpy(&in, headers_.in_out.data(), sizeof in);
  const std::size_t payload = headers_.ent_in_out.payload_sz;
  // The kernel counts the header, the operation's struct and the payload
  // in `len`; what is left once header and payload are taken is the size
  // of the struct it put in op_in.
  if (payload > payload_size_ || in.len < sizeof in + payload) return {};
  const std::size_t op_in = in.len - sizeof in - payload;
  if (op_in > headers_.op_in.size()) return {};
  std::byte* start = payload_at() - op_in - sizeof in;
  std::memcpy(start, &in, sizeof in);
  std::memcpy(start + sizeof in, headers_.op_in.data(), op_in);
  serving_ = in.unique;
  return {start, in.len};
}

bool RingEntry::take_reply(const iovec* iov, int count) {
  if (serving_ == 0 || count < 1 || iov[0].iov_len < sizeof(fuse_out_header)) return false;
  fuse_out_header out{};
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  if (out.unique != serving_) return false;
  std::size_t used = 0;
  for (int i = 1; i < count; ++i) {
    if (iov[i].iov_len > payload_size_ - used) {
      reply_error(EIO);  // clears serving_ after using it
      return true;
    }
    // (A body built in the payload buffer is where it belongs already.)
    if (iov[i].iov_base != payload_at() + used) std::memmove(payload_at() + used, iov[i].iov_base, iov[i].iov_len);
    used += iov[i].iov_len;
  }
  out.len = static_cast<std::uint32_t>(sizeof out + used);
  std::memcpy(headers_.in_out.data(), &out, sizeof out);
  headers_.ent_in_out.payload_sz = static_cast<std::uint32_t>(used);
  replied_ = true;
  serving_ = 0;  // answered: a second reply is not this request's
  return true;
}

void RingEntry::reply_error(int error) {
  fuse_out_header out{};
  out.len = sizeof out;
  out.error = -error;
  out.unique = serving_ != 0 ? serving_ : headers_.ent_in_out.commit_id;
  std::memcpy(headers_.in_out.data(), &out, sizeof out);
  headers_.ent_in_out.payload_sz = 0;
  replied_ = true;
  serving_ = 0;
}

bool RingEntry::take_replied() {
  const bool r = replied_;
  replied_ = false;
  return r;
}

}  // namespace dhfs
