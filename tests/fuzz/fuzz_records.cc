// libFuzzer target: metadata records (fs/records.cc decode_records) and
// their application to the in-memory state (fs/loader.cc apply_record), the
// path every record of a checkpoint or journal takes once its checksum
// matched. Checks: malformed input is refused with a reason, never a crash;
// every record that decodes encodes back to the same record.
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <vector>

#include "fs/format.h"
#include "fs/loader.h"
#include "fs/records.h"

using namespace dhfs;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  MetaState st;
  bound_to_device(st, Superblock::for_device(kMinDeviceBytes));  // as the loader does
  std::string why;
  std::uint64_t n = 0;
  bool ok = decode_records(
      {data, size},
      [&](const Record& r) {
        std::vector<std::uint8_t> enc;
        RecordWriter w(enc);
        w.add(r);
        int again = 0;
        std::string why2;
        bool ok2 = decode_records(
            enc,
            [&](const Record& r2) {
              if (!(r2 == r)) {
                std::fprintf(stderr, "record %llu does not survive encode/decode\n", static_cast<unsigned long long>(n));
                std::abort();
              }
              ++again;
              return true;
            },
            why2);
        if (!ok2 || again != 1) {
          std::fprintf(stderr, "re-encoded record %llu refused: %s\n", static_cast<unsigned long long>(n), why2.c_str());
          std::abort();
        }
        apply_record(st, r);
        ++n;
        return true;
      },
      why);
  if (!ok && why.empty()) {
    std::fprintf(stderr, "refused without a reason\n");
    std::abort();
  }
  // Use what was loaded the way the loader's callers do.
  st.inodes.rebuild_free_list();
  st.inodes.for_each([&](const Inode& in) {
    if (in.map()) {
      auto segs = in.map()->segments(0, 1 << 20);
      (void)segs;
      (void)in.map()->next_hole(0);
    }
    if (in.dir()) in.dir()->list(0, [](const DirEntry&, std::uint64_t) { return true; });
  });
  return 0;
}
