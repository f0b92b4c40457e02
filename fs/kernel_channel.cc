#include "fs/kernel_channel.h"

#include "fs/ring_entry.h"

#include <linux/fuse.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>

namespace dhfs {

namespace {

thread_local RequestExtras t_current;

// The request the calling thread read last and has not answered yet, for
// RequestStats (unique 0: none).
struct PendingRequest {
  std::uint64_t unique = 0;
  std::uint32_t opcode = 0;
  std::chrono::steady_clock::time_point read_at;
};
thread_local PendingRequest t_pending;

// Requests the kernel expects no reply to (an INTERRUPT gets one only when
// it came too early).
bool without_reply(std::uint32_t opcode) {
  return opcode == FUSE_FORGET || opcode == FUSE_BATCH_FORGET || opcode == FUSE_INTERRUPT;
}

// Reads a field of type T at `off` bytes into `raw`; false if it is not all there.
template <typename T>
bool field_at(std::span<const std::byte> raw, std::size_t off, T* out) {
  if (raw.size() < off + sizeof(T)) return false;
  std::memcpy(out, raw.data() + off, sizeof(T));
  return true;
}

// Whether the request body (after the header) asks for setuid/setgid to be cleared.
bool asks_kill_suidgid(std::uint32_t opcode, std::span<const std::byte> body) {
  switch (opcode) {
    case FUSE_WRITE: {
      std::uint32_t write_flags = 0;
      return field_at(body, offsetof(fuse_write_in, write_flags), &write_flags) &&
             (write_flags & FUSE_WRITE_KILL_SUIDGID);
    }
    case FUSE_OPEN: {
      std::uint32_t open_flags = 0;
      return field_at(body, offsetof(fuse_open_in, open_flags), &open_flags) &&
             (open_flags & FUSE_OPEN_KILL_SUIDGID);
    }
    case FUSE_SETATTR: {
      std::uint32_t valid = 0;
      return field_at(body, offsetof(fuse_setattr_in, valid), &valid) && (valid & FATTR_KILL_SUIDGID);
    }
    default:
      return false;
  }
}

}  // namespace

void KernelChannel::on_request(std::span<const std::byte> raw) {
  t_current = {};
  t_pending = {};
  fuse_in_header in{};
  if (!field_at(raw, 0, &in)) return;
  if (without_reply(in.opcode)) requests_.record(in.opcode, 0);
  else t_pending = {in.unique, in.opcode, std::chrono::steady_clock::now()};
  const std::span<const std::byte> body = raw.subspan(sizeof in);
  if (in.opcode == FUSE_INIT) {
    std::uint32_t flags = 0;
    const bool offered = field_at(body, offsetof(fuse_init_in, flags), &flags) && (flags & FUSE_HANDLE_KILLPRIV_V2);
    kernel_offers_v2_.store(offered, std::memory_order_relaxed);
    std::uint32_t flags2 = 0;
    const bool uring = (flags & FUSE_INIT_EXT) && field_at(body, offsetof(fuse_init_in, flags2), &flags2) &&
                       ((std::uint64_t{flags2} << 32) & fuse_uring::kInitOverIoUring);
    kernel_offers_uring_.store(uring, std::memory_order_relaxed);
    init_unique_.store(in.unique, std::memory_order_release);
    return;
  }
  t_current.kill_suidgid = asks_kill_suidgid(in.opcode, body);
}

void KernelChannel::on_reply(const iovec* iov, int count) {
  if (count < 1 || iov[0].iov_len < sizeof(fuse_out_header)) return;
  fuse_out_header out{};
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  if (out.unique != 0 && out.unique == t_pending.unique) {  // not a notification
    const auto took = std::chrono::steady_clock::now() - t_pending.read_at;
    requests_.record(t_pending.opcode,
                     static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(took).count()));
    t_pending = {};
  }
  const std::uint64_t init_unique = init_unique_.load(std::memory_order_acquire);
  if (init_unique == 0 || count < 2 || out.unique != init_unique) return;
  init_unique_.store(0, std::memory_order_relaxed);  // one INIT per connection
  // A refused INIT (an error reply) or a reply shorter than the flags field
  // (a protocol too old for the capability) stays as libfuse made it.
  constexpr std::size_t kFlagsAt = offsetof(fuse_init_out, flags);
  const std::span<const std::byte> body{static_cast<const std::byte*>(iov[1].iov_base), iov[1].iov_len};
  std::uint32_t flags = 0;
  if (out.error != 0 || !field_at(body, kFlagsAt, &flags)) return;
  record_ring_payload_size(body, flags);
  if (!kernel_offers_v2_.load(std::memory_order_relaxed)) return;
  auto* at = static_cast<std::byte*>(iov[1].iov_base) + kFlagsAt;
  flags |= FUSE_HANDLE_KILLPRIV_V2;
  std::memcpy(at, &flags, sizeof flags);
  killpriv_v2_.store(true, std::memory_order_relaxed);
}

void KernelChannel::record_ring_payload_size(std::span<const std::byte> init_out, std::uint32_t flags) {
  std::uint32_t max_write = 0;
  std::uint16_t max_pages = 0;
  if (!field_at(init_out, offsetof(fuse_init_out, max_write), &max_write)) return;
  if (!(flags & FUSE_MAX_PAGES) || !field_at(init_out, offsetof(fuse_init_out, max_pages), &max_pages)) max_pages = 0;
  constexpr std::size_t kMinReadBuffer = 8192;  // the kernel's FUSE_MIN_READ_BUFFER
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  ring_payload_size_.store(std::max({kMinReadBuffer, std::size_t{max_write}, max_pages * page}),
                           std::memory_order_relaxed);
}

const RequestExtras& KernelChannel::current_request() { return t_current; }

}  // namespace dhfs
