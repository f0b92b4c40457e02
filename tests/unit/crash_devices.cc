#include "tests/unit/crash_devices.h"

#include <cerrno>
#include <cstring>

#include "alloc/extent.h"

namespace dhfs::test {

// ------------------------------------------------------------- recording

int RecordingDevice::submit(std::span<const DeviceIo> ios) {
  std::lock_guard lk(mu_);
  int rc = mem_->submit(ios);
  // A failed batch may have written part of its I/O; MemDevice fails only
  // on bad arguments, before writing anything.
  if (rc < 0) return rc;
  for (const DeviceIo& io : ios) {
    if (io.op != DeviceIo::Op::Write) continue;
    LoggedIo e;
    e.offset = io.offset;
    const auto* p = static_cast<const std::byte*>(io.buf);
    e.data.assign(p, p + io.len);
    log_.push_back(std::move(e));
  }
  return 0;
}

void RecordingDevice::set_flush_gate(std::function<void()> gate) {
  std::lock_guard lk(mu_);
  gate_ = std::move(gate);
}

int RecordingDevice::flush() {
  std::function<void()> gate;
  {
    std::lock_guard lk(mu_);
    gate = gate_;
  }
  if (gate) gate();
  std::lock_guard lk(mu_);
  int rc = mem_->flush();
  if (rc == 0) log_.push_back(LoggedIo{true, 0, {}});
  return rc;
}

std::size_t RecordingDevice::position() const {
  std::lock_guard lk(mu_);
  return log_.size();
}

std::vector<LoggedIo> RecordingDevice::log() const {
  std::lock_guard lk(mu_);
  return log_;
}

// --------------------------------------------------------------- overlay

int OverlayDevice::submit(std::span<const DeviceIo> ios) {
  std::lock_guard lk(mu_);
  for (const DeviceIo& io : ios) {
    if (io.offset % kBlockSize || io.len % kBlockSize || io.offset + io.len > base_->size()) return -EINVAL;
  }
  for (const DeviceIo& io : ios) {
    auto* p = static_cast<std::byte*>(io.buf);
    for (std::uint64_t done = 0; done < io.len; done += kBlockSize) {
      const std::uint64_t block = (io.offset + done) / kBlockSize;
      if (io.op == DeviceIo::Op::Write) {
        auto& b = blocks_[block];
        b.assign(p + done, p + done + kBlockSize);
      } else if (auto it = blocks_.find(block); it != blocks_.end()) {
        std::memcpy(p + done, it->second.data(), kBlockSize);
      } else {
        std::memcpy(p + done, base_->data() + block * kBlockSize, kBlockSize);
      }
    }
  }
  return 0;
}

void OverlayDevice::put_block(std::uint64_t block, const std::byte* bytes) {
  std::lock_guard lk(mu_);
  blocks_[block].assign(bytes, bytes + kBlockSize);
}

std::size_t OverlayDevice::overlay_blocks() const {
  std::lock_guard lk(mu_);
  return blocks_.size();
}

// ---------------------------------------------------------------- faulty

void FaultyDevice::arm(std::vector<FaultRule> rules) {
  std::lock_guard lk(mu_);
  rules_.clear();
  for (FaultRule& r : rules) rules_.push_back({r, 0});
}

bool FaultyDevice::should_fail(FaultRule::Kind kind, std::uint64_t off, std::uint64_t len, int* error) {
  bool fail = false;
  for (Armed& a : rules_) {
    const FaultRule& r = a.rule;
    if (r.kind != kind) continue;
    if (kind != FaultRule::Kind::kFlush && (off + len <= r.offset_begin || off >= r.offset_end)) continue;
    const std::uint64_t n = ++a.matched;
    if (r.nth == 0 || n == r.nth || (r.sticky && n > r.nth)) {
      fail = true;
      *error = r.error;
    }
  }
  return fail;
}

int FaultyDevice::submit(std::span<const DeviceIo> ios) {
  {
    std::lock_guard lk(mu_);
    int error = 0;
    bool fail = false;
    for (const DeviceIo& io : ios) {
      if (io.op == DeviceIo::Op::Write) writes_seen_.fetch_add(1);
      const auto kind = io.op == DeviceIo::Op::Write ? FaultRule::Kind::kWrite : FaultRule::Kind::kRead;
      if (should_fail(kind, io.offset, io.len, &error)) fail = true;
    }
    if (fail) {
      injected_.fetch_add(1);
      return error;
    }
  }
  return mem_->submit(ios);
}

int FaultyDevice::flush() {
  {
    std::lock_guard lk(mu_);
    int error = 0;
    if (should_fail(FaultRule::Kind::kFlush, 0, 0, &error)) {
      injected_.fetch_add(1);
      return error;
    }
  }
  return mem_->flush();
}

}  // namespace dhfs::test
