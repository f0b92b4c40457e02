#include "fs/fsck.h"

#include "fs/block_usage.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <deque>
#include <exception>
#include <map>
#include <optional>
#include <span>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "alloc/allocator.h"
#include "fs/checkpoint.h"
#include "fs/format.h"
#include "fs/inode.h"
#include "fs/inode_table.h"
#include "fs/journal.h"
#include "fs/loader.h"
#include "fs/records.h"
#include "fs/region_policy.h"
#include "fs/units.h"

namespace dhfs {

namespace {

constexpr const char* kLostFound = "lost+found";

// Persisted settings a mount understands (fs/fs_regions.cc apply_settings).
constexpr std::string_view kPatternsKey = "region_patterns";
constexpr std::string_view kRegionSizeKey = "region_size";
constexpr std::string_view kCowUnitKey = "cow_unit";

// Messages of the same kind beyond this many are summed up in one line.
constexpr std::uint64_t kMaxMessages = 20;

// Flags this version knows: inode flags (fs/inode.h) and region record
// flags (none are defined; mount writes 0).
constexpr std::uint32_t kKnownInodeFlags = kInodeRegionRoot;
constexpr std::uint32_t kKnownRegionFlags = 0;

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

std::span<const std::uint8_t> bytes_of(const AlignedBuffer& b) {
  return {reinterpret_cast<const std::uint8_t*>(b.data()), b.size()};
}

const char* slot_name(int i) { return i == 0 ? "A" : "B"; }

const char* type_name(std::uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "regular file";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "symlink";
    case S_IFCHR: return "character device";
    case S_IFBLK: return "block device";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    default: return "inode of unknown type";
  }
}

const char* dtype_name(std::uint8_t dtype) { return type_name(std::uint32_t{dtype} << 12); }

// "12..19" or "12" for one block.
std::string range(std::uint64_t start, std::uint64_t len) {
  if (len == 1) return fmt::format("{}", start);
  return fmt::format("{}..{}", start, start + len - 1);
}

// A name as it can appear in a one-line message: control characters,
// quotes and backslashes as \xNN.
std::string escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '\'' || c == '\\') out += fmt::format("\\x{:02x}", u);
    else out += c;
  }
  return out;
}

std::string quote(std::string_view s) { return "'" + escape(s) + "'"; }

bool all_zero(std::span<const std::uint8_t> b) {
  return std::all_of(b.begin(), b.end(), [](std::uint8_t x) { return x == 0; });
}

// Every field the two superblock copies must agree on; names the ones that
// differ.
std::string superblock_differences(const Superblock& a, const Superblock& b) {
  std::vector<std::string> d;
  if (a.uuid != b.uuid) d.push_back("uuid");
  if (a.version != b.version) d.push_back("version");
  if (a.total_blocks != b.total_blocks || a.journal_start != b.journal_start ||
      a.journal_blocks != b.journal_blocks || a.data_start != b.data_start || a.data_blocks != b.data_blocks)
    d.push_back("geometry");
  if (a.feature_compat != b.feature_compat || a.feature_incompat != b.feature_incompat ||
      a.feature_ro_compat != b.feature_ro_compat)
    d.push_back("features");
  if (a.created_ns != b.created_ns) d.push_back("creation time");
  if (a.salt != b.salt) d.push_back("salt");
  if (a.label != b.label) d.push_back("label");
  std::string out;
  for (const auto& s : d) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// ------------------------------------------------------------------ journal

// Reads `len` bytes of the journal ring at stream position `lsn`.
int ring_read(Device& dev, const JournalGeometry& geo, std::uint64_t lsn, std::byte* buf, std::uint64_t len) {
  DeviceIo ios[2];
  std::size_t n = 0;
  const std::uint64_t base = geo.start * kBlockSize;
  const std::uint64_t pos = lsn % geo.capacity();
  const std::uint64_t first = std::min(len, geo.capacity() - pos);
  ios[n++] = {DeviceIo::Op::Read, base + pos, buf, static_cast<std::uint32_t>(first)};
  if (first < len) ios[n++] = {DeviceIo::Op::Read, base, buf + first, static_cast<std::uint32_t>(len - first)};
  return dev.submit({ios, n});
}

enum class Probe { kValid, kEnd, kDamaged, kIoError };

// What lies at journal position `lsn`, judged as Journal::replay judges it.
// `header` is set whenever the batch header itself verifies.
Probe probe_batch(Device& dev, const JournalGeometry& geo, std::uint64_t lsn, AlignedBuffer& buf,
                  std::optional<BatchHeader>& header) {
  header.reset();
  buf.ensure(kBlockSize);
  if (ring_read(dev, geo, lsn, buf.data(), kBlockSize) < 0) return Probe::kIoError;
  std::span<const std::uint8_t> head(reinterpret_cast<const std::uint8_t*>(buf.data()), kBlockSize);
  std::string why;
  auto h = BatchHeader::decode(head, why);
  if (!h) {
    std::uint64_t magic;
    std::memcpy(&magic, head.data(), 8);
    return magic == kBatchMagic ? Probe::kDamaged : Probe::kEnd;
  }
  if (h->uuid_tag != geo.uuid_tag || h->lsn < lsn) return Probe::kEnd;
  if (h->lsn != lsn || h->padded_bytes() > max_batch_bytes(geo.capacity())) return Probe::kDamaged;
  header = h;
  const std::uint64_t total = h->padded_bytes();
  if (total > kBlockSize) {
    // ensure() does not keep the contents: read the whole batch again.
    buf.ensure(total);
    if (ring_read(dev, geo, lsn, buf.data(), total) < 0) return Probe::kIoError;
  }
  std::span<const std::uint8_t> payload(reinterpret_cast<const std::uint8_t*>(buf.data()) + BatchHeader::kSize,
                                        h->payload_len);
  return checksum(payload, h->lsn) == h->payload_checksum ? Probe::kValid : Probe::kDamaged;
}

// A claimed run of device blocks (allocation check).
struct Claim {
  BlockNo end = 0;
  Ino ino = 0;             // 0: the checkpoint stream
  std::uint64_t lblk = 0;  // file block of `start`
};

}  // namespace

// ====================================================================== Impl

struct Checker::Impl {
  Device& dev;
  const FsckOptions opts;
  FsckReport rep;

  Superblock sb;
  bool rewrite_primary_sb = false;
  bool rewrite_backup_sb = false;
  CheckpointRoot root;
  int root_slot = 0;
  MetaState meta;
  InodeTable& table = meta.inodes;
  std::uint64_t& max_generation = meta.max_generation;
  std::uint64_t next_generation = 1;
  std::uint64_t replay_end_lsn = 0;  // replay_lsn of a repaired checkpoint
  bool metadata_dirty = false;       // the table differs from what is on the device
  std::size_t unfixable = 0;         // problems that no repair addresses
  std::vector<std::string> staged;   // repairs done in memory, reported once durable

  // Tree state.
  std::vector<char> reached;
  std::unordered_map<Ino, std::pair<Ino, std::string>> names;  // first name of each reached inode
  Ino lost_found = 0;
  std::vector<Ino> orphans;

  // Allocation state: accepted claims by start block.
  std::map<BlockNo, Claim> claims;
  std::vector<Extent> checkpoint_pieces;

  Impl(Device& d, FsckOptions o) : dev(d), opts(o) {}

  // ---- reporting
  void problem(std::string msg, bool fixable = true) {
    rep.problems.push_back(std::move(msg));
    if (!fixable) ++unfixable;
  }
  void repaired(std::string msg) { staged.push_back(std::move(msg)); }
  void info(std::string msg) { rep.info.push_back(std::move(msg)); }
  bool unrecoverable(std::string why) {
    rep.unrecoverable = true;
    rep.reason = std::move(why);
    return false;
  }
  bool operational(std::string why) {
    rep.operational_error = true;
    rep.reason = std::move(why);
    return false;
  }

  std::string path_of(Ino ino) const {
    if (ino == kRootIno) return "/";
    std::vector<const std::string*> parts;
    Ino cur = ino;
    while (cur != kRootIno) {
      auto it = names.find(cur);
      if (it == names.end() || parts.size() > 4096) return {};
      parts.push_back(&it->second.second);
      cur = it->second.first;
    }
    std::string out;
    for (auto p = parts.rbegin(); p != parts.rend(); ++p) out += "/" + escape(**p);
    return out;
  }
  std::string describe(Ino ino) const {
    const Inode* in = table.get(ino);
    std::string what = in && in->is_dir() ? fmt::format("directory {}", ino) : fmt::format("inode {}", ino);
    std::string p = path_of(ino);
    return p.empty() ? what : fmt::format("{} ({})", what, p);
  }

  bool read_block(BlockNo b, AlignedBuffer& buf) {
    if (int rc = dev.read(b * kBlockSize, buf.data(), kBlockSize); rc < 0)
      return operational(fmt::format("read error at block {}: {}", b, std::strerror(-rc)));
    return true;
  }

  // ================================================================ phases

  bool check_superblocks() {
    const std::uint64_t size = dev.size_bytes();
    if (size < kMinDeviceBytes)
      return operational(fmt::format("not a dhfs filesystem (smaller than the {} MiB minimum)", kMinDeviceBytes >> 20));
    AlignedBuffer buf(kBlockSize);
    if (!read_block(kSuperBlock, buf)) return false;
    std::string why_primary;
    auto primary = Superblock::decode(bytes_of(buf), why_primary);
    std::uint64_t magic;
    std::memcpy(&magic, buf.data(), 8);
    const bool primary_magic = magic == kSuperMagic;

    if (primary) {
      std::string why;
      if (!primary->check_geometry(size, why)) return unrecoverable(why);
      sb = *primary;
      if (opts.backup_block)
        info(fmt::format("the primary superblock is intact; -b {} was not needed", *opts.backup_block));
      const BlockNo bb = sb.backup_block();
      if (!read_block(bb, buf)) return false;
      std::string why_backup;
      auto backup = Superblock::decode(bytes_of(buf), why_backup);
      if (!backup) {
        problem(fmt::format("backup superblock (block {}): {}", bb, why_backup));
        rewrite_backup_sb = true;
      } else if (std::string d = superblock_differences(*primary, *backup); !d.empty()) {
        problem(fmt::format("backup superblock (block {}) disagrees with the primary ({})", bb, d));
        rewrite_backup_sb = true;
      }
      if (rewrite_backup_sb) repaired(fmt::format("rewrote the backup superblock (block {}) from the primary", bb));
      return true;
    }

    // The primary is unusable: look for an intact backup.
    std::vector<BlockNo> candidates;
    if (opts.backup_block) candidates.push_back(*opts.backup_block);
    else candidates = backup_superblock_candidates(bytes_of(buf), size);
    BlockNo where = 0;
    std::string why_backup;
    const std::optional<Superblock> backup = first_backup_superblock(dev, candidates, where, why_backup);
    if (!backup) {
      if (opts.backup_block)
        return unrecoverable(fmt::format("superblock is damaged ({}) and block {} holds no usable backup ({})",
                                         why_primary, *opts.backup_block, why_backup));
      if (primary_magic)
        return unrecoverable(fmt::format(
            "superblock is damaged ({}) and no usable backup was found at block {}; if the filesystem is smaller "
            "than the device, give its backup with -b (its size in 4 KiB blocks, minus 1)",
            why_primary, fmt::join(candidates, " or ")));
      return operational(fmt::format("not a dhfs filesystem ({})", why_primary));
    }
    if (!primary_magic) {
      // Without our magic in block 0 this may be another filesystem made
      // over an old dhfs whose backup survived at the end: only proceed if
      // a checkpoint root of that dhfs survived too.
      bool root_found = false;
      for (BlockNo b : kRootSlotBlocks) {
        if (!read_block(b, buf)) return false;
        std::string ignored;
        if (CheckpointRoot::decode(bytes_of(buf), backup->uuid_tag(), ignored)) root_found = true;
      }
      if (!root_found) return operational(fmt::format("not a dhfs filesystem ({})", why_primary));
    }
    sb = *backup;
    problem(fmt::format("primary superblock (block 0): {}; the backup at block {} is intact", why_primary, where));
    rewrite_primary_sb = true;
    repaired(fmt::format("rewrote the primary superblock (block 0) from the backup at block {}", where));
    return true;
  }

  bool load_root_slots() {
    const std::uint64_t tag = sb.uuid_tag();
    AlignedBuffer buf(kBlockSize);
    std::optional<CheckpointRoot> slot[2];
    std::string why[2];
    for (int i = 0; i < 2; ++i) {
      if (!read_block(kRootSlotBlocks[i], buf)) return false;
      slot[i] = CheckpointRoot::decode(bytes_of(buf), tag, why[i]);
      if (!slot[i] && all_zero(bytes_of(buf))) why[i] = "empty";
    }
    int cur = -1;
    for (int i = 0; i < 2; ++i)
      if (slot[i] && (cur < 0 || slot[i]->seq > slot[cur]->seq)) cur = i;
    if (cur < 0)
      return unrecoverable(fmt::format("no valid checkpoint root (slot A: {}; slot B: {})", why[0], why[1]));
    root = *slot[cur];
    root_slot = cur;
    rep.checkpoint_seq = root.seq;
    const int other = 1 - cur;
    info(fmt::format("checkpoint root: slot {} is current (seq {})", slot_name(cur), root.seq));
    if (slot[other]) {
      if (slot[other]->seq == root.seq)
        info(fmt::format("checkpoint root slot {} holds the same seq {}; slot {} is used", slot_name(other),
                         root.seq, slot_name(cur)));
      else
        info(fmt::format("checkpoint root slot {}: previous checkpoint (seq {})", slot_name(other),
                         slot[other]->seq));
    } else if (why[other] == "empty") {
      info(fmt::format("checkpoint root slot {}: empty (never written, or retired)", slot_name(other)));
    } else {
      info(fmt::format("checkpoint root slot {}: not valid ({}); an older root is not needed while slot {} is "
                       "valid",
                       slot_name(other), why[other], slot_name(cur)));
    }
    for (const Extent& e : root.extents) {
      const Extent area = sb.data_area();
      if (e.len == 0 || e.start < area.start || e.start > area.end() || e.len > area.end() - e.start)
        return unrecoverable(fmt::format("checkpoint (seq {}) stream extent at blocks {} lies outside the data area",
                                         root.seq, range(e.start, std::max<std::uint64_t>(e.len, 1))));
      rep.checkpoint_blocks += e.len;
    }
    return true;
  }

  bool load_checkpoint() {
    bound_to_device(meta, sb);
    std::string why;
    std::uint64_t skipped = 0;
    bool ok = read_checkpoint(
        dev, root, sb.uuid_tag(),
        [&](const Record& r) {
          if (!apply_record(meta, r)) ++skipped;
          return true;
        },
        why);
    if (!ok) {
      if (why.starts_with("checkpoint read failed")) return operational(why);
      return unrecoverable(fmt::format("checkpoint (seq {}, slot {}) is damaged: {}", root.seq, slot_name(root_slot),
                                       why));
    }
    if (skipped) {
      // Every object comes before what belongs to it in a stream, so mount
      // takes such a record for damage; the rest of the state is usable.
      problem(fmt::format("checkpoint (seq {}): {} records refer to inodes that do not exist or exceed the device", root.seq, skipped));
      repaired(fmt::format("checkpoint rewritten without the {} records for missing inodes or beyond the device", skipped));
      metadata_dirty = true;
    }
    return true;
  }

  bool replay_journal() {
    const JournalGeometry geo{sb.journal_start, sb.journal_blocks, sb.uuid_tag()};
    std::uint64_t lsn = root.replay_lsn;  // start of the batch being replayed
    std::uint64_t skipped = 0;
    std::string decode_why;
    std::vector<Record> recs;
    ReplayStats stats;
    std::string why;
    bool ok = Journal::replay(
        dev, geo, root.replay_lsn,
        [&](std::span<const std::uint8_t> payload) {
          // A batch is all-or-nothing: decode all of it before applying any.
          recs.clear();
          std::string rw;
          if (!decode_records(
                  payload,
                  [&](const Record& r) {
                    recs.push_back(r);
                    return true;
                  },
                  rw)) {
            decode_why = rw.empty() ? "records do not decode" : rw;
            why = decode_why;
            return false;
          }
          for (const Record& r : recs)
            if (!apply_record(meta, r)) ++skipped;
          BatchHeader h;
          h.payload_len = static_cast<std::uint32_t>(payload.size());
          lsn += h.padded_bytes();
          return true;
        },
        stats, why, ReplayMode::kStopAtDamage);
    if (skipped) info(fmt::format("journal: {} records referred to objects missing when they were replayed", skipped));
    if (!ok && decode_why.empty()) return operational(why);  // the device failed
    if (ok && !stats.damaged_at) {
      replay_end_lsn = stats.end_lsn;
      rep.journal_batches = stats.batches;
      if (stats.batches)
        info(fmt::format("journal: replayed {} batches ({} bytes) from position {}", stats.batches,
                         stats.payload_bytes, root.replay_lsn));
      if (stats.torn_tail)
        info(fmt::format("journal: incompletely written last batch at position {} ignored (normal after a crash)",
                         stats.end_lsn));
      return true;
    }

    // Replay stopped at `lsn`, with valid batches after it (or at a batch
    // whose records do not decode). Work out what lies behind it.
    if (stats.damaged_at) lsn = *stats.damaged_at;
    AlignedBuffer buf(kBlockSize);
    std::optional<BatchHeader> bad;
    std::string what;
    if (!decode_why.empty()) {
      probe_batch(dev, geo, lsn, buf, bad);
      what = fmt::format("verifies but its records do not decode ({})", decode_why);
    } else {
      Probe p = probe_batch(dev, geo, lsn, buf, bad);
      if (p == Probe::kIoError) return operational(fmt::format("journal read failed at position {}", lsn));
      what = p == Probe::kValid ? "was rejected by the replay" : bad ? "fails its checksum" : "has a damaged header";
    }
    rep.journal_batches = stats.batches;
    std::uint64_t end = lsn;
    std::uint64_t lost_batches = 1, lost_txns = 0;
    bool txns_known = bad.has_value();
    if (bad) {
      lost_txns += bad->txn_count;
      end = lsn + bad->padded_bytes();
    }
    std::optional<BatchHeader> later;
    for (std::uint64_t pos = lsn + kBlockSize; pos < root.replay_lsn + geo.capacity();) {
      Probe p = probe_batch(dev, geo, pos, buf, later);
      if (p == Probe::kIoError) return operational(fmt::format("journal read failed at position {}", pos));
      if (p == Probe::kValid) {
        ++lost_batches;
        lost_txns += later->txn_count;
        pos += later->padded_bytes();
        end = std::max(end, pos);
      } else {
        pos += kBlockSize;
      }
    }
    // The next mount must neither replay the damage nor anything after it.
    replay_end_lsn = end;
    rep.journal_transactions_lost = lost_txns;
    problem(fmt::format("journal: the batch at position {} {}; it and {} later batches ({}{} transactions) cannot "
                        "be replayed",
                        lsn, what, lost_batches - 1, txns_known ? "" : "at least ", lost_txns));
    repaired(fmt::format("kept the state replayed up to journal position {} ({} batches); {} batches ({}{} "
                         "transactions) after it are lost",
                         lsn, stats.batches, lost_batches, txns_known ? "" : "at least ", lost_txns));
    metadata_dirty = true;
    return true;
  }

  // ---------------------------------------------------------------- inodes

  void count_inodes() {
    table.for_each([&](const Inode& in) {
      ++rep.inodes;
      if (in.is_dir()) ++rep.directories;
      else if (in.is_reg()) ++rep.regular_files;
      else if (in.is_symlink()) ++rep.symlinks;
      else ++rep.special_files;
      if (in.dir()) rep.entries += in.dir()->size();
      if (in.map()) rep.extents += in.map()->extent_count();
    });
  }

  void check_inodes() {
    std::vector<Ino> remove;
    table.for_each([&](const Inode& cin) {
      Inode& in = *table.get(cin.ino);
      if (!valid_file_type(in.mode)) {
        problem(fmt::format("inode {}: unknown file type (mode {:#o})", in.ino, in.mode));
        repaired(fmt::format("inode {}: removed (unknown file type)", in.ino));
        remove.push_back(in.ino);
        return;
      }
      if (in.is_symlink()) {
        std::size_t n = in.target() ? in.target()->size() : 0;
        if (n == 0 || n > kSymlinkMax) {
          problem(fmt::format("inode {}: symlink target of {} bytes (must be 1..{})", in.ino, n, kSymlinkMax));
          repaired(fmt::format("inode {}: removed (invalid symlink)", in.ino));
          remove.push_back(in.ino);
          return;
        }
      }
      // Payloads follow the type (loading guarantees it; checked anyway).
      if (!in.payload_matches_mode()) {
        problem(fmt::format("inode {} ({}): contents do not match the file type", in.ino, type_name(in.mode)));
        repaired(fmt::format("inode {}: contents reset to match the type", in.ino));
        in.init_payload();
        metadata_dirty = true;
      }
    });
    for (Ino ino : remove) table.erase(ino);
    if (!remove.empty()) metadata_dirty = true;
  }

  Inode* make_dir(Ino ino, std::uint32_t perms) {
    Inode* d = ino ? table.create_at(ino) : table.create();
    d->generation = next_generation++;
    d->mode = S_IFDIR | perms;
    d->uid = d->gid = 0;
    d->nlink = 2;
    d->atime_ns = d->mtime_ns = d->ctime_ns = d->btime_ns = now_ns();
    d->init_payload();
    metadata_dirty = true;
    return d;
  }

  void check_root() {
    Inode* r = table.get(kRootIno);
    if (r && r->is_dir()) return;
    if (!r) {
      problem("root directory (inode 1) is missing");
      repaired("created a new, empty root directory (inode 1)");
    } else {
      problem(fmt::format("root (inode 1) is a {}, not a directory", type_name(r->mode)));
      repaired("replaced inode 1 with a new, empty root directory");
      table.erase(kRootIno);
    }
    make_dir(kRootIno, 0755);
  }

  // ------------------------------------------------------------------ tree

  // Marks everything below `start` reached, validating and repairing each
  // entry on the way: a directory keeps the first name by which it is
  // reached, any other name of it is removed.
  void reach_from(Ino start) {
    std::deque<Ino> queue{start};
    reached[start] = 1;
    while (!queue.empty()) {
      const Ino d = queue.front();
      queue.pop_front();
      Inode* dir = table.get(d);
      if (!dir || !dir->dir()) continue;
      // Copies: the repairs below change the directory, which moves names.
      struct Entry {
        std::string name;
        Ino ino;
        std::uint8_t dtype;
      };
      std::vector<Entry> entries;
      dir->dir()->for_each([&](const DirEntry& e) { entries.push_back({std::string(e.name), e.ino, e.dtype}); });
      std::vector<std::string> drop;
      std::vector<Entry> retype;
      for (const Entry& e : entries) {
        // Messages only: built when there is something to say.
        auto where = [&] { return fmt::format("{}: entry {}", describe(d), quote(e.name)); };
        if (!valid_name(e.name)) {
          problem(fmt::format("{}: invalid name", where()));
          repaired(fmt::format("{}: removed", where()));
          drop.push_back(e.name);
          continue;
        }
        Inode* child = table.get(e.ino);
        if (!child || e.ino == 0) {
          problem(fmt::format("{} points at missing inode {}", where(), e.ino));
          repaired(fmt::format("{}: removed", where()));
          drop.push_back(e.name);
          continue;
        }
        if (e.ino == kRootIno) {
          problem(fmt::format("{} points at the root directory", where()));
          repaired(fmt::format("{}: removed", where()));
          drop.push_back(e.name);
          continue;
        }
        if (child->is_dir() && reached[e.ino]) {
          std::string first = path_of(e.ino);
          problem(fmt::format("{}: directory {} has a second name here (first name {})", where(), e.ino,
                              first.empty() ? "is an ancestor" : first));
          repaired(fmt::format("{}: removed the second name of directory {}", where(), e.ino));
          drop.push_back(e.name);
          continue;
        }
        if (e.dtype != dtype_of(child->mode)) {
          problem(fmt::format("{} (inode {}) says {} but the inode is a {}", where(), e.ino, dtype_name(e.dtype),
                              type_name(child->mode)));
          repaired(fmt::format("{}: type set to {}", where(), type_name(child->mode)));
          retype.push_back({e.name, e.ino, dtype_of(child->mode)});
        }
        if (!reached[e.ino]) {
          reached[e.ino] = 1;
          names.emplace(e.ino, std::make_pair(d, e.name));
          if (child->is_dir()) queue.push_back(e.ino);
        }
      }
      for (const auto& n : drop) dir->dir()->remove(n);
      for (const auto& r : retype) dir->dir()->replace(r.name, r.ino, r.dtype);
      if (!drop.empty() || !retype.empty()) metadata_dirty = true;
    }
  }

  // A free name in `dir` based on `base`.
  static std::string free_name(const Inode& dir, const std::string& base) {
    std::string name = base;
    for (int i = 1; dir.dir()->lookup(name); ++i) name = fmt::format("{}.{}", base, i);
    return name;
  }

  Ino lost_and_found() {
    if (lost_found) return lost_found;
    Inode* root_dir = table.get(kRootIno);
    if (auto e = root_dir->dir()->lookup(kLostFound)) {
      Inode* in = table.get(e->ino);
      if (in && in->is_dir() && reached[e->ino]) return lost_found = e->ino;
    }
    table.rebuild_free_list();
    Inode* lf = make_dir(0, 0700);
    if (reached.size() < table.end()) reached.resize(table.end(), 0);
    std::string name = free_name(*root_dir, kLostFound);
    root_dir->dir()->add(name, lf->ino, DT_DIR);
    ++root_dir->nlink;
    reached[lf->ino] = 1;
    names.emplace(lf->ino, std::make_pair(kRootIno, name));
    repaired(fmt::format("created /{} (inode {})", name, lf->ino));
    return lost_found = lf->ino;
  }

  void relink(Inode& in) {
    Ino lf = lost_and_found();
    Inode* lfd = table.get(lf);
    std::string name = free_name(*lfd, fmt::format("#{}", in.ino));
    lfd->dir()->add(name, in.ino, dtype_of(in.mode));
    reached[in.ino] = 1;
    names.emplace(in.ino, std::make_pair(lf, name));
    std::string nl;
    if (in.is_dir()) {
      ++lfd->nlink;
    } else if (in.nlink != 1) {
      nl = fmt::format(" (nlink {} -> 1)", in.nlink);
      in.nlink = 1;
    }
    repaired(fmt::format("inode {}: linked into {} as {}{}", in.ino, path_of(lf), quote(name), nl));
    metadata_dirty = true;
  }

  static bool orphan_like(const Inode& in) { return in.nlink == 0 && (!in.dir() || in.dir()->empty()); }

  void check_tree() {
    reached.assign(table.end(), 0);
    reach_from(kRootIno);

    // Unreachable directories: relink the top of each detached subtree (a
    // directory whose would-be parent is itself detached is reached through
    // it). A cycle of detached directories is cut where the walk closes.
    std::unordered_map<Ino, Ino> detached_parent;
    std::vector<Ino> detached;
    table.for_each([&](const Inode& in) {
      if (!in.is_dir() || reached[in.ino] || orphan_like(in)) return;
      detached.push_back(in.ino);
    });
    table.for_each([&](const Inode& in) {
      if (!in.dir() || reached[in.ino]) return;
      in.dir()->for_each([&](const DirEntry& e) {
        const Inode* c = table.get(e.ino);
        if (c && c->is_dir() && !reached[e.ino] && e.ino != in.ino) detached_parent.try_emplace(e.ino, in.ino);
      });
    });
    for (Ino d : detached) {
      if (reached[d]) continue;
      Ino top = d;
      std::vector<Ino> walked{top};
      while (true) {
        auto it = detached_parent.find(top);
        if (it == detached_parent.end() || reached[it->second]) break;
        if (std::find(walked.begin(), walked.end(), it->second) != walked.end()) break;
        top = it->second;
        walked.push_back(top);
      }
      Inode* in = table.get(top);
      problem(fmt::format("directory {} ({} entries, nlink {}) is not reachable from the root", top, in->dir()->size(),
                          in->nlink));
      relink(*in);
      reach_from(top);
    }

    // Everything else still unreached has no name at all. (Collected first:
    // relinking may add /lost+found to the table.)
    std::vector<Ino> unnamed;
    table.for_each([&](const Inode& in) {
      if (!reached[in.ino]) unnamed.push_back(in.ino);
    });
    for (Ino ino : unnamed) {
      Inode& in = *table.get(ino);
      if (orphan_like(in)) {
        orphans.push_back(in.ino);
        info(fmt::format("inode {} ({}, {} blocks) is an orphan (nlink 0, no names): the next mount frees it",
                         in.ino, type_name(in.mode), in.allocated_blocks()));
        continue;
      }
      problem(fmt::format("inode {} ({}, nlink {}, {} bytes) is not reachable from the root", in.ino,
                          type_name(in.mode), in.nlink, in.size));
      relink(in);
      if (in.is_dir()) reach_from(in.ino);  // (not expected: detached directories were handled above)
    }
    rep.orphans = orphans.size();
  }

  void check_link_counts() {
    std::vector<std::uint64_t> refs(table.end(), 0), subdirs(table.end(), 0);
    table.for_each([&](const Inode& in) {
      if (!in.dir()) return;
      in.dir()->for_each([&](const DirEntry& e) {
        if (e.ino >= refs.size()) return;
        ++refs[e.ino];
        const Inode* c = table.get(e.ino);
        if (c && c->is_dir()) ++subdirs[in.ino];
      });
    });
    std::vector<char> orphan(table.end(), 0);
    for (Ino o : orphans) orphan[o] = 1;
    table.for_each([&](const Inode& cin) {
      if (orphan[cin.ino]) return;
      Inode& in = *table.get(cin.ino);
      std::uint64_t expect = in.is_dir() ? 2 + subdirs[in.ino] : refs[in.ino];
      if (in.nlink == expect) return;
      if (in.is_dir())
        problem(fmt::format("{}: nlink {}, but it has {} subdirectories (expected {})", describe(in.ino), in.nlink,
                            subdirs[in.ino], expect));
      else
        problem(fmt::format("{} ({}): nlink {}, but {} directory entries point at it", describe(in.ino),
                            type_name(in.mode), in.nlink, expect));
      repaired(fmt::format("inode {}: nlink set to {}", in.ino, expect));
      in.nlink = static_cast<std::uint32_t>(std::min<std::uint64_t>(expect, UINT32_MAX));
      metadata_dirty = true;
    });
  }

  // ------------------------------------------------------------ allocation

  std::string owner(const Claim& c, std::uint64_t len) const {
    if (c.ino == 0) return "the checkpoint stream";
    return fmt::format("{} (file blocks {})", describe(c.ino), range(c.lblk, len));
  }

  // Accepts the parts of [start, start+len) that no earlier claim holds;
  // returns the parts that overlap, with their earlier owners.
  std::vector<std::pair<Extent, Claim>> claim(BlockNo start, std::uint64_t len, Ino ino, std::uint64_t lblk) {
    std::vector<std::pair<Extent, Claim>> clashes;
    const BlockNo end = start + len;
    BlockNo cur = start;
    auto it = claims.upper_bound(start);
    if (it != claims.begin() && std::prev(it)->second.end > start) --it;
    std::vector<Extent> free_parts;
    for (; it != claims.end() && it->first < end; ++it) {
      const BlockNo cs = it->first, ce = it->second.end;
      if (ce <= cur) continue;
      if (cs > cur) free_parts.push_back({cur, cs - cur});
      const BlockNo lo = std::max(cs, cur), hi = std::min(ce, end);
      Claim other = it->second;
      other.lblk = it->second.lblk + (lo - cs);
      clashes.push_back({{lo, hi - lo}, other});
      cur = hi;
    }
    if (cur < end) free_parts.push_back({cur, end - cur});
    for (const Extent& p : free_parts) claims.emplace(p.start, Claim{p.end(), ino, lblk + (p.start - start)});
    return clashes;
  }

  // Parts of [start, start+len) that the checkpoint stream holds.
  std::vector<std::pair<Extent, Claim>> checkpoint_overlaps(BlockNo start, std::uint64_t len) const {
    std::vector<std::pair<Extent, Claim>> out;
    const BlockNo end = start + len;
    auto it = claims.upper_bound(start);
    if (it != claims.begin() && std::prev(it)->second.end > start) --it;
    for (; it != claims.end() && it->first < end; ++it) {
      const BlockNo lo = std::max(it->first, start), hi = std::min(it->second.end, end);
      if (hi > lo) out.push_back({{lo, hi - lo}, it->second});
    }
    return out;
  }

  // Bytes of a packed block that one file holds (several files hold bytes
  // from the same offset once dedup shares them; a truncate shortens one).
  struct PackedRange {
    std::uint64_t from = 0, to = 0;
    Ino ino = 0;
  };

  // Bytes are appended to a pack block, never rewritten: files packed into
  // it one after the other hold disjoint ranges, and only files sharing one
  // file's bytes (dedup, then perhaps a truncate) start at the same offset.
  // Bytes starting elsewhere inside another file's range are a block that
  // was handed out twice: the later file of such a pair loses its block.
  void check_packed_blocks(std::map<BlockNo, std::vector<PackedRange>>& blocks) {
    for (auto& [pblk, ranges] : blocks) {
      std::sort(ranges.begin(), ranges.end(), [](const PackedRange& a, const PackedRange& b) {
        return std::tie(a.from, a.to) < std::tie(b.from, b.to);
      });
      const PackedRange* held = nullptr;  // the range that reaches furthest so far
      for (const PackedRange& r : ranges) {
        if (held && r.from < held->to && r.from != held->from) {
          problem(fmt::format("{}: its packed bytes {}..{} of device block {} overlap those of {}", describe(r.ino),
                              r.from, r.to, pblk, describe(held->ino)));
          repaired(fmt::format("inode {}: unmapped file block 0 (data lost)", r.ino));
          table.get(r.ino)->map()->set(0, 1, 0, 0);
          metadata_dirty = true;
          continue;
        }
        if (!held || r.to > held->to) held = &r;
      }
    }
  }

  // Every reference count must equal the number of block maps referencing
  // the block. The block maps are the truth: repair rebuilds the counts.
  void check_refcounts() {
    RefcountTable derived;
    std::uint64_t wrong = 0;
    for (const BlockRun& r : referenced_runs(table)) {
      if (r.refs >= 2) derived.set(r.extent, r.refs);
      meta.refs.for_runs(r.extent, [&](Extent e, std::uint32_t c) {
        if (c != r.refs) {
          if (wrong++ < 20)
            problem(fmt::format("device blocks {}: reference count {}, but {} block maps reference them",
                                range(e.start, e.len), c, r.refs));
        }
      });
    }
    // With every referenced block right, any difference left is a count
    // for blocks that no map references.
    if (wrong == 0 && (meta.refs.shared_blocks() != derived.shared_blocks() ||
                       meta.refs.saved_blocks() != derived.saved_blocks())) {
      ++wrong;
      problem(fmt::format("reference counts cover {} blocks that no block map references",
                          meta.refs.shared_blocks() - std::min(meta.refs.shared_blocks(), derived.shared_blocks())));
    }
    if (wrong == 0) return;
    if (wrong > 20) problem(fmt::format("... {} reference count problems in all", wrong));
    repaired("reference counts rebuilt from the block maps");
    meta.refs = std::move(derived);
    metadata_dirty = true;
  }

  void check_allocation() {
    const Extent area = sb.data_area();
    rep.data_blocks = area.len;
    for (const Extent& e : root.extents) {
      auto clashes = claim(e.start, e.len, 0, 0);
      if (!clashes.empty()) {
        for (const auto& [x, c] : clashes)
          problem(fmt::format("checkpoint stream: blocks {} are listed twice", range(x.start, x.len)));
        repaired("checkpoint stream rewritten");
        metadata_dirty = true;
      }
    }
    for (const auto& [s, c] : claims) checkpoint_pieces.push_back({s, c.end - s});

    std::map<BlockNo, std::vector<PackedRange>> packed_ranges;
    table.for_each([&](const Inode& cin) {
      if (!cin.map()) return;
      Inode& in = *table.get(cin.ino);
      const std::vector<FileExtent> extents = in.map()->extents();
      std::vector<std::pair<std::uint64_t, std::uint64_t>> unmap;  // file block ranges
      std::vector<FileExtent> reflag;
      for (const FileExtent& e : extents) {
        auto what = [&] {
          return fmt::format("{}: file blocks {} -> device blocks {}", describe(in.ino), range(e.lblk, e.len),
                             range(e.pblk, e.len));
        };
        if (e.pblk < area.start || e.pblk > area.end() || e.len > area.end() - e.pblk) {
          problem(fmt::format("{} lie outside the data area (blocks {})", what(), range(area.start, area.len)));
          repaired(fmt::format("inode {}: unmapped file blocks {} (data lost)", in.ino, range(e.lblk, e.len)));
          unmap.push_back({e.lblk, e.len});
          continue;
        }
        if (e.flags & ~kKnownExtentFlags) {
          problem(fmt::format("{}: unknown extent flags {:#x}", what(), e.flags & ~kKnownExtentFlags));
          repaired(fmt::format("inode {}: cleared unknown flags of file blocks {}", in.ino, range(e.lblk, e.len)));
          reflag.push_back(e);
        }
        if (is_packed(e.flags)) {
          const std::uint64_t at = packed_offset(e.flags);
          if (!valid_extent_flags(e.lblk, e.len, e.pblk, e.flags) || at + in.size > kBlockSize) {
            problem(fmt::format("{}: a packed extent must be file block 0, one block long, and its {} bytes at "
                                "offset {} must lie inside the block",
                                what(), in.size, at));
            repaired(fmt::format("inode {}: unmapped file blocks {} (data lost)", in.ino, range(e.lblk, e.len)));
            unmap.push_back({e.lblk, e.len});
            continue;
          }
          packed_ranges[e.pblk].push_back({at, at + in.size, in.ino});
        }
        // Files may share blocks with each other (clones, copy-ups, dedup:
        // the reference counts are checked below), never with the
        // checkpoint stream.
        for (const auto& [x, c] : checkpoint_overlaps(e.pblk, e.len)) {
          const std::uint64_t l = e.lblk + (x.start - e.pblk);
          problem(fmt::format("{}: device blocks {} (file blocks {}) are also used by {}", describe(in.ino),
                              range(x.start, x.len), range(l, x.len), owner(c, x.len)));
          repaired(fmt::format("inode {}: unmapped file blocks {} (data lost)", in.ino, range(l, x.len)));
          unmap.push_back({l, x.len});
        }
      }
      for (const FileExtent& e : reflag) in.map()->set(e.lblk, e.len, e.pblk, e.flags & kKnownExtentFlags);
      for (const auto& [l, n] : unmap) in.map()->set(l, n, 0, 0);
      if (!unmap.empty() || !reflag.empty()) metadata_dirty = true;
    });
    check_packed_blocks(packed_ranges);
    check_refcounts();
  }

  // --------------------------------------------------------------- regions

  bool is_orphan(Ino ino) const { return std::find(orphans.begin(), orphans.end(), ino) != orphans.end(); }

  // A region must be rooted in a live directory that says it is the root of
  // exactly this region; otherwise it is dropped. What is dropped here is
  // what mount would drop by itself (check_region_roots), and more: a root
  // that is an orphan (removing a root ends its region in the same
  // transaction). Id 0 and root 0 never get here: the record decoder
  // refuses them. Unknown region flags are cleared.
  void check_region_roots() {
    for (auto it = meta.regions.begin(); it != meta.regions.end();) {
      const std::uint32_t id = it->first;
      RegionState& g = it->second;
      const Inode* r = table.get(g.root);
      std::string why;
      if (!r) why = fmt::format("its root inode {} does not exist", g.root);
      else if (!r->is_dir()) why = fmt::format("its root, inode {}, is a {}, not a directory", g.root, type_name(r->mode));
      else if (is_orphan(g.root)) why = fmt::format("its root, directory {}, has been removed (an orphan)", g.root);
      else if (!(r->flags & kInodeRegionRoot)) why = fmt::format("its root, {}, is not marked as a region root", describe(g.root));
      else if (r->region != id) why = fmt::format("its root, {}, belongs to region {}", describe(g.root), r->region);
      if (why.empty()) {
        if (g.flags & ~kKnownRegionFlags) {
          problem(fmt::format("region {}: unknown flags {:#x}", id, g.flags & ~kKnownRegionFlags));
          repaired(fmt::format("region {}: unknown flags cleared", id));
          g.flags &= kKnownRegionFlags;
          metadata_dirty = true;
        }
        ++it;
        continue;
      }
      problem(fmt::format("region {}: {}", id, why));
      repaired(fmt::format("region {}: dropped (its {} reserved slices return to global free space)", id,
                           g.reserved.size()));
      it = meta.regions.erase(it);
      metadata_dirty = true;
    }
  }

  // kInodeRegionRoot on anything but the root of an existing region would
  // make a later rmdir end a region it does not own: cleared. So are inode
  // flags this version does not know.
  void check_region_marks() {
    table.for_each([&](const Inode& cin) {
      if (cin.flags & ~kKnownInodeFlags) {
        Inode& in = *table.get(cin.ino);
        problem(fmt::format("{}: unknown inode flags {:#x}", describe(in.ino), in.flags & ~kKnownInodeFlags));
        repaired(fmt::format("inode {}: unknown flags cleared", in.ino));
        in.flags &= kKnownInodeFlags;
        metadata_dirty = true;
      }
      if (!(cin.flags & kInodeRegionRoot)) return;
      Inode& in = *table.get(cin.ino);
      std::string why;
      auto g = meta.regions.find(in.region);
      if (!in.is_dir())
        why = fmt::format("inode {} ({}) is marked as a region root, but only a directory can be one", in.ino,
                          type_name(in.mode));
      else if (g == meta.regions.end())
        why = fmt::format("{} is marked as the root of region {}, which does not exist", describe(in.ino), in.region);
      else if (g->second.root != in.ino)
        why = fmt::format("{} is marked as the root of region {}, whose root is inode {}", describe(in.ino),
                          in.region, g->second.root);
      else
        return;
      problem(std::move(why));
      repaired(fmt::format("inode {}: region-root mark cleared", in.ino));
      in.flags &= ~kInodeRegionRoot;
      metadata_dirty = true;
    });
  }

  // Reserved slices: inside the data area, coalesced within a region,
  // disjoint between regions (the region with the lower id keeps what two
  // reserve), at most kMaxRegionSlices each. Leaves every region's slices
  // ascending and coalesced, as the allocator reports them.
  void check_region_slices() {
    const Extent area = sb.data_area();
    std::map<BlockNo, std::pair<BlockNo, std::uint32_t>> taken;  // start -> (end, region): earlier regions' slices
    std::uint64_t outside = 0, shared = 0;
    for (auto& [id, g] : meta.regions) {
      // 1. Inside the data area.
      std::vector<Extent> slices;
      bool fixed = false;
      for (const Extent& e : g.reserved) {  // (the decoder refuses empty slices)
        const BlockNo end = e.len > UINT64_MAX - e.start ? UINT64_MAX : e.start + e.len;
        const BlockNo lo = std::max(e.start, area.start), hi = std::min(end, area.end());
        if (lo < hi && lo == e.start && hi == end) {
          slices.push_back(e);
          continue;
        }
        fixed = true;
        if (outside++ < kMaxMessages) {
          problem(fmt::format("region {}: reserved blocks {} {} the data area (blocks {})", id,
                              range(e.start, end - e.start), lo < hi ? "reach outside" : "lie outside",
                              range(area.start, area.len)));
          repaired(lo < hi ? fmt::format("region {}: reserved blocks {} cut to {}", id, range(e.start, end - e.start),
                                         range(lo, hi - lo))
                           : fmt::format("region {}: reserved blocks {} dropped", id, range(e.start, end - e.start)));
        }
        if (lo < hi) slices.push_back({lo, hi - lo});
      }
      // 2. Ascending and coalesced; overlapping slices are damage, touching
      // or unordered ones only a different spelling of the same blocks.
      std::sort(slices.begin(), slices.end(), [](const Extent& a, const Extent& b) { return a.start < b.start; });
      std::vector<Extent> merged;
      std::uint64_t overlaps = 0;
      Extent first_a, first_b;
      for (const Extent& e : slices) {
        if (!merged.empty() && e.start <= merged.back().end()) {
          if (e.start < merged.back().end() && overlaps++ == 0) {
            first_a = merged.back();
            first_b = e;
          }
          merged.back().len = std::max(merged.back().end(), e.end()) - merged.back().start;
        } else {
          merged.push_back(e);
        }
      }
      if (overlaps) {
        problem(fmt::format("region {}: reserved slices {} and {} overlap{}", id, range(first_a.start, first_a.len),
                            range(first_b.start, first_b.len),
                            overlaps > 1 ? fmt::format(" ({} overlapping slices in all)", overlaps) : ""));
        repaired(fmt::format("region {}: overlapping reserved slices coalesced", id));
        fixed = true;
      }
      // 3. Disjoint from the regions before it.
      std::vector<Extent> kept;
      std::map<std::uint32_t, std::uint64_t> given_up;  // other region -> blocks
      for (const Extent& e : merged) {
        BlockNo cur = e.start;
        auto it = taken.upper_bound(e.start);
        if (it != taken.begin() && std::prev(it)->second.first > e.start) --it;
        for (; it != taken.end() && it->first < e.end(); ++it) {
          const BlockNo lo = std::max(it->first, cur), hi = std::min(it->second.first, e.end());
          if (hi <= lo) continue;
          if (lo > cur) kept.push_back({cur, lo - cur});
          if (shared++ < kMaxMessages)
            problem(fmt::format("region {}: reserved blocks {} are also reserved by region {}", id, range(lo, hi - lo),
                                it->second.second));
          given_up[it->second.second] += hi - lo;
          cur = hi;
        }
        if (cur < e.end()) kept.push_back({cur, e.end() - cur});
      }
      for (const auto& [other, n] : given_up)
        repaired(fmt::format("region {}: gave up {} reserved blocks that region {} keeps", id, n, other));
      if (!given_up.empty()) fixed = true;
      // 4. What one record can hold.
      if (kept.size() > kMaxRegionSlices) {
        problem(fmt::format("region {}: {} reserved slices, more than the {} a region record holds", id, kept.size(),
                            kMaxRegionSlices));
        std::vector<Extent> largest = kept;
        std::nth_element(largest.begin(), largest.begin() + kMaxRegionSlices - 1, largest.end(),
                         [](const Extent& a, const Extent& b) { return a.len > b.len; });
        largest.resize(kMaxRegionSlices);
        std::sort(largest.begin(), largest.end(), [](const Extent& a, const Extent& b) { return a.start < b.start; });
        repaired(fmt::format("region {}: kept its {} largest reserved slices, released {} smaller ones", id,
                             kMaxRegionSlices, kept.size() - kMaxRegionSlices));
        kept = std::move(largest);
        fixed = true;
      }
      for (const Extent& e : kept) taken.emplace(e.start, std::make_pair(e.end(), id));
      if (fixed) metadata_dirty = true;
      else if (kept != g.reserved)
        info(fmt::format("region {}: reserved slices are not listed ascending and coalesced (the same blocks; "
                         "rewritten so by the next checkpoint)",
                         id));
      g.reserved = std::move(kept);
    }
    if (outside > kMaxMessages)
      problem(fmt::format("... {} reserved slices outside the data area in all", outside));
    if (shared > kMaxMessages) problem(fmt::format("... {} pieces reserved by two regions in all", shared));
  }

  // Settings are stored only from mount options (fs/options.cc), which
  // refuse these values: a stored one is damage, and repair removes it (the
  // default applies, as a mount does: fs/fs_regions.cc apply_settings
  // ignores values outside the same bounds).
  void check_settings() {
    for (auto it = meta.config.begin(); it != meta.config.end();) {
      const std::string& key = it->first;
      const std::string& value = it->second;
      const std::string shown = quote(value.size() > 80 ? value.substr(0, 80) + "..." : value);
      std::string bad;
      if (key == kPatternsKey) {
        std::string why;
        if (!RegionPolicy::parse(value, why)) bad = why;
      } else if (key == kRegionSizeKey) {
        auto b = parse_size(value);
        if (!b || *b < kBlockSize || *b > (1ULL << 40)) bad = "not a region size from 4K to 1T";
      } else if (key == kCowUnitKey) {
        auto b = parse_size(value);
        if (!b || *b < kBlockSize || *b > (1ULL << 20) || (*b & (*b - 1)))
          bad = "not a copy-on-write unit (a power of two from 4K to 1M)";
      } else {
        info(fmt::format("setting {} = {} is unknown to this version of dhfs: kept", quote(key), shown));
        ++it;
        continue;
      }
      if (bad.empty()) {
        ++it;
        continue;
      }
      problem(fmt::format("setting {} = {}: {}; no mount option stores such a value", key, shown, bad));
      repaired(fmt::format("setting {} removed (the default applies)", key));
      it = meta.config.erase(it);
      metadata_dirty = true;
    }
    rep.settings = meta.config.size();
  }

  void check_regions() {
    check_region_roots();
    check_region_marks();
    check_region_slices();
    check_settings();
    // Inodes of regions that are gone: normal (a file moved out of a region
    // root that was removed later keeps its number); they allocate from
    // global space.
    std::map<std::uint32_t, std::uint64_t> stray;
    table.for_each([&](const Inode& in) {
      if (in.region != 0 && !meta.regions.count(in.region)) ++stray[in.region];
    });
    if (!stray.empty()) {
      std::uint64_t n = 0;
      std::string ids;
      for (const auto& [id, count] : stray) {
        n += count;
        if (ids.size() < 60) ids += fmt::format("{}{}", ids.empty() ? "" : ", ", id);
        else if (!ids.ends_with("...")) ids += ", ...";
      }
      rep.stray_region_inodes = n;
      info(fmt::format("{} inodes name regions that do not exist ({}): their new blocks come from global space", n,
                       ids));
    }
  }

  // ------------------------------------------------------------ accounting

  // Blocks of `e` inside the ascending, disjoint `set`.
  static std::uint64_t blocks_inside(const std::vector<Extent>& set, Extent e) {
    std::uint64_t n = 0;
    auto it = std::upper_bound(set.begin(), set.end(), e.start, [](BlockNo b, const Extent& x) { return b < x.start; });
    if (it != set.begin()) --it;
    for (; it != set.end() && it->start < e.end(); ++it) {
      const BlockNo lo = std::max(it->start, e.start), hi = std::min(it->end(), e.end());
      if (hi > lo) n += hi - lo;
    }
    return n;
  }

  // Counts what is in use, per region as well, and cross-checks it with
  // the allocator loaded the way mount loads it (regions, then the blocks in
  // use).
  void account() {
    const Extent area = sb.data_area();
    Allocator alloc(area);
    for (const auto& [id, g] : meta.regions) alloc.load_region(id, g.reserved);
    std::uint64_t used = 0;
    bool marked = true;
    std::vector<Extent> referenced;
    for (const Extent& e : checkpoint_pieces) {
      used += e.len;
      if (!alloc.mark_used(e)) marked = false;
    }
    for (const BlockRun& r : referenced_runs(table)) {
      used += r.extent.len;
      rep.file_blocks += r.extent.len;
      if (r.refs >= 2) {
        rep.shared_blocks += r.extent.len;
        rep.saved_blocks += r.extent.len * (r.refs - 1);
      }
      if (!referenced.empty() && referenced.back().end() == r.extent.start) referenced.back().len += r.extent.len;
      else referenced.push_back(r.extent);
      if (!alloc.mark_used(r.extent)) marked = false;
    }
    rep.blocks_used = used;
    rep.free_blocks = area.len - std::min(used, area.len);
    if (!marked || alloc.free_blocks() != rep.free_blocks)
      problem(fmt::format("free space: the allocator counts {} free blocks, the extent maps leave {}",
                          alloc.free_blocks(), rep.free_blocks),
              false);

    std::vector<Extent> stream = checkpoint_pieces;  // ascending (from the claims map), disjoint
    std::map<std::uint32_t, std::size_t> index;
    for (const auto& [id, g] : meta.regions) {
      FsckRegion u;
      u.id = id;
      u.root = g.root;
      u.root_path = path_of(g.root);
      u.slices = g.reserved.size();
      for (const Extent& e : g.reserved) {
        u.reserved_blocks += e.len;
        u.used_blocks += blocks_inside(referenced, e);
        u.checkpoint_blocks += blocks_inside(stream, e);
      }
      // (Saturating: file blocks and the stream are disjoint after the
      // checks above, so used + checkpoint never exceeds reserved.)
      u.free_blocks = u.reserved_blocks - std::min(u.reserved_blocks, u.used_blocks + u.checkpoint_blocks);
      rep.reserved_blocks += u.reserved_blocks;
      if (auto info = alloc.region(id); !info || info->free_blocks != u.free_blocks || info->reserved != g.reserved)
        problem(fmt::format("region {}: the allocator counts {} unused reserved blocks, the extent maps leave {}", id,
                            info ? info->free_blocks : 0, u.free_blocks),
                false);
      index[id] = rep.regions.size();
      rep.regions.push_back(std::move(u));
    }
    table.for_each([&](const Inode& in) {
      auto it = index.find(in.region);
      if (in.region == 0 || it == index.end()) return;
      FsckRegion& u = rep.regions[it->second];
      ++u.inodes;
      if (!in.map()) return;
      const std::vector<Extent>& slices = meta.regions.at(in.region).reserved;
      for (const FileExtent& e : in.map()->extents()) {
        u.file_blocks += e.len;
        u.file_blocks_inside += blocks_inside(slices, {e.pblk, e.len});
      }
    });
    for (const FsckRegion& u : rep.regions) {
      if (u.checkpoint_blocks)
        info(fmt::format("region {}: {} of its reserved blocks hold the checkpoint stream (harmless: blocks in use "
                         "are never handed out, and they return to the region when that checkpoint is replaced)",
                         u.id, u.checkpoint_blocks));
      info(fmt::format("region {} (root {}): {} blocks reserved in {} slices: {} in use, {} free; {} inodes with {} "
                       "blocks, {} of them inside the region",
                       u.id, u.root_path.empty() ? fmt::format("inode {}", u.root) : u.root_path, u.reserved_blocks,
                       u.slices, u.used_blocks + u.checkpoint_blocks, u.free_blocks, u.inodes, u.file_blocks,
                       u.file_blocks_inside));
    }
  }

  // ------------------------------------------------------------- write-back

  // (Content hashes are left out: a repair may have changed a file's
  // contents. Dedup hashes such files again when they are next closed or
  // by `dhfsctl dedup`.)
  static int emit(const Inode& in, CheckpointWriter& w) {
    int rc = w.add(in.to_record());
    if (in.map())
      for (const FileExtent& e : in.map()->extents())
        if (rc == 0) rc = w.add(ExtentSetRec{in.ino, e.lblk, e.len, e.pblk, e.flags});
    if (in.xattrs)
      for (const auto& [name, value] : *in.xattrs)
        if (rc == 0) rc = w.add(XattrSetRec{in.ino, name, value});
    if (in.dir())
      in.dir()->for_each([&](const DirEntry& d) {
        if (rc == 0) rc = w.add(DirentSetRec{in.ino, d.ino, d.dtype, d.name});
      });
    return rc;
  }

  bool write_checkpoint() {
    for (Ino o : orphans) {
      const Inode* in = table.get(o);
      repaired(fmt::format("inode {}: orphan freed ({} blocks)", o, in ? in->allocated_blocks() : 0));
      table.erase(o);
    }
    // The new stream goes into blocks that neither the current stream nor
    // any file uses, so that a crash before the root slot is written leaves
    // the old checkpoint intact. The regions' reservations are loaded first,
    // as mount loads them, so that the stream goes to global free space
    // before any region's unused reservation.
    Allocator alloc(sb.data_area());
    for (const auto& [id, g] : meta.regions) alloc.load_region(id, g.reserved);
    for (const Extent& e : checkpoint_pieces)
      if (!alloc.mark_used(e)) return operational("internal error: checkpoint blocks cannot be reserved");
    bool ok = true;
    for (const BlockRun& r : referenced_runs(table))
      if (!alloc.mark_used(r.extent)) ok = false;
    if (!ok) return operational("internal error: file blocks overlap the checkpoint after the repair");

    CheckpointWriter writer(dev, alloc, sb.uuid_tag());
    // The order of a checkpoint written by mount: inodes with what they
    // own, regions and settings, reference counts.
    int rc = 0;
    for (Ino ino = kRootIno; ino < table.end() && rc == 0; ++ino)
      if (const Inode* in = table.get(ino)) rc = emit(*in, writer);
    for (const auto& [id, g] : meta.regions)
      if (rc == 0) rc = writer.add(RegionSetRec{id, g.root, g.flags, g.reserved});
    for (const auto& [name, value] : meta.config)
      if (rc == 0) rc = writer.add(ConfigSetRec{name, value});
    meta.refs.for_each([&](Extent e, std::uint32_t c) {
      if (rc == 0) rc = writer.add(RefcountSetRec{e.start, e.len, c});
    });
    CheckpointRoot fresh;
    if (rc == 0) rc = writer.finish(fresh);
    if (rc != 0) return operational(fmt::format("writing the repaired checkpoint failed: {}", std::strerror(-rc)));
    fresh.seq = root.seq + 1;
    fresh.replay_lsn = replay_end_lsn;
    fresh.next_generation = next_generation;
    fresh.written_ns = now_ns();
    // The slot that is not current: the current root stays valid until the
    // new one is durable.
    const int slot = 1 - root_slot;
    AlignedBuffer block(kBlockSize);
    auto bytes = fresh.encode();
    std::memcpy(block.data(), bytes.data(), kBlockSize);
    rc = dev.write(kRootSlotBlocks[slot] * kBlockSize, block.data(), kBlockSize);
    if (rc == 0) rc = dev.flush();
    if (rc != 0) return operational(fmt::format("writing checkpoint root slot {} failed: {}", slot_name(slot),
                                                std::strerror(-rc)));
    rep.wrote = true;
    // The repaired checkpoint is current. The old root points at a stream
    // whose blocks the next mount reuses: retire it (as mount does), so that
    // damage to the new root can never fall back to it.
    std::memset(block.data(), 0, kBlockSize);
    rc = dev.write(kRootSlotBlocks[root_slot] * kBlockSize, block.data(), kBlockSize);
    if (rc == 0) rc = dev.flush();
    if (rc != 0) return operational(fmt::format("retiring checkpoint root slot {} failed: {}", slot_name(root_slot),
                                                std::strerror(-rc)));
    info(fmt::format("wrote checkpoint seq {} ({} bytes) and root slot {}", fresh.seq, fresh.stream_bytes,
                     slot_name(slot)));
    return true;
  }

  bool write_superblocks() {
    if (!rewrite_primary_sb && !rewrite_backup_sb) return true;
    AlignedBuffer block(kBlockSize);
    auto bytes = sb.encode();
    std::memcpy(block.data(), bytes.data(), kBlockSize);
    int rc = 0;
    // Backup first: while the primary is being rewritten, the backup is good.
    if (rewrite_backup_sb) rc = dev.write(sb.backup_block() * kBlockSize, block.data(), kBlockSize);
    if (rc == 0 && rewrite_backup_sb) rc = dev.flush();
    if (rc == 0 && rewrite_primary_sb) rc = dev.write(kSuperBlock * kBlockSize, block.data(), kBlockSize);
    if (rc == 0) rc = dev.flush();
    if (rc != 0) return operational(fmt::format("writing the superblock failed: {}", std::strerror(-rc)));
    rep.wrote = true;
    return true;
  }

  // ================================================================== run

  void run() {
    try {
      if (!check_superblocks() || !load_root_slots() || !load_checkpoint() || !replay_journal()) return;
      next_generation = std::max(root.next_generation, max_generation + 1);
      count_inodes();
      check_inodes();
      check_root();
      check_tree();
      check_link_counts();
      check_allocation();
      check_regions();
      account();
    } catch (const std::exception& e) {
      unrecoverable(fmt::format("metadata cannot be loaded: {}", e.what()));
      return;
    }
    if (!opts.repair) return;
    if ((metadata_dirty || !orphans.empty()) && !write_checkpoint()) return;
    write_superblocks();
  }

  void finish() {
    rep.problems_left = rep.problems.size();
    if (opts.repair && !rep.operational_error && !rep.unrecoverable) rep.problems_left = unfixable;
    if (rep.operational_error) {
      rep.exit_code = kFsckOperationalError;
    } else if (rep.unrecoverable) {
      rep.exit_code = kFsckProblemsLeft;
    } else if (opts.repair) {
      rep.repaired = std::move(staged);
      if (rep.problems.empty()) rep.exit_code = kFsckClean;
      else rep.exit_code = unfixable == 0 ? kFsckRepaired : kFsckProblemsLeft;
    } else {
      rep.exit_code = rep.problems.empty() ? kFsckClean : kFsckProblemsLeft;
    }
  }
};

Checker::Checker(Device& dev, FsckOptions opts) : dev_(dev), opts_(opts) {}

Checker::~Checker() = default;

FsckReport Checker::run() {
  if (opts_.repair && dev_.read_only()) {
    FsckReport r;
    r.operational_error = true;
    r.reason = "device is read-only; cannot repair";
    r.exit_code = kFsckOperationalError;
    return r;
  }
  Impl impl(dev_, opts_);
  impl.run();
  impl.finish();
  return std::move(impl.rep);
}

}  // namespace dhfs
