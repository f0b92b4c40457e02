#include "fs/request_stats.h"

namespace dhfs {

void RequestStats::record(std::uint32_t opcode, std::uint64_t ns) {
  if (opcode >= kOpcodes) return;
  Counter& c = kinds_[opcode];
  c.count.fetch_add(1, std::memory_order_relaxed);
  c.total_ns.fetch_add(ns, std::memory_order_relaxed);
  std::uint64_t seen = c.max_ns.load(std::memory_order_relaxed);
  while (ns > seen && !c.max_ns.compare_exchange_weak(seen, ns, std::memory_order_relaxed)) {
  }
}

std::array<RequestStats::Kind, RequestStats::kOpcodes> RequestStats::snapshot() const {
  std::array<Kind, kOpcodes> out{};
  for (std::size_t i = 0; i < kOpcodes; ++i) {
    out[i].count = kinds_[i].count.load(std::memory_order_relaxed);
    out[i].total_ns = kinds_[i].total_ns.load(std::memory_order_relaxed);
    out[i].max_ns = kinds_[i].max_ns.load(std::memory_order_relaxed);
  }
  return out;
}

}  // namespace dhfs
