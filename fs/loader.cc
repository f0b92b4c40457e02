#include "fs/loader.h"

#include <algorithm>
#include <cstring>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "fs/checkpoint.h"

namespace dhfs {

namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
// Clang before 17 has no class template argument deduction for aggregates.
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

bool read_block(Device& dev, BlockNo b, AlignedBuffer& buf, std::string& error) {
  if (int rc = dev.read(b * kBlockSize, buf.data(), kBlockSize); rc < 0) {
    error = fmt::format("{}: read error at block {}: {}", dev.describe(), b, std::strerror(-rc));
    return false;
  }
  return true;
}

std::span<const std::uint8_t> bytes_of(const AlignedBuffer& b) {
  return {reinterpret_cast<const std::uint8_t*>(b.data()), b.size()};
}

}  // namespace

std::vector<BlockNo> backup_superblock_candidates(std::span<const std::uint8_t> primary, std::uint64_t device_bytes) {
  const BlockNo last = device_bytes / kBlockSize - 1;
  std::vector<BlockNo> out{last};
  // total_blocks lies in the first sector, so it usually survives a torn
  // or partly overwritten block 0; the backup vouches for itself below.
  std::uint64_t claimed = 0;
  if (primary.size() >= 24) std::memcpy(&claimed, primary.data() + 16, 8);
  if (claimed >= kMinDeviceBytes / kBlockSize && claimed - 1 < last) out.push_back(claimed - 1);
  return out;
}

std::optional<Superblock> read_backup_superblock(Device& dev, BlockNo b, std::string& why) {
  if (const BlockNo last = dev.size_bytes() / kBlockSize - 1; b > last) {
    why = fmt::format("block {} lies beyond the device's last block {}", b, last);
    return std::nullopt;
  }
  AlignedBuffer buf(kBlockSize);
  if (!read_block(dev, b, buf, why)) return std::nullopt;
  auto sb = Superblock::decode(bytes_of(buf), why);
  if (!sb) return std::nullopt;
  if (sb->backup_block() != b) {
    why = fmt::format("a superblock of a filesystem of {} blocks, whose backup is not this block", sb->total_blocks);
    return std::nullopt;
  }
  if (!sb->check_geometry(dev.size_bytes(), why)) return std::nullopt;
  return sb;
}

std::optional<Superblock> first_backup_superblock(Device& dev, const std::vector<BlockNo>& candidates, BlockNo& where,
                                                  std::string& why) {
  for (BlockNo b : candidates) {
    if (auto sb = read_backup_superblock(dev, b, why)) {
      where = b;
      return sb;
    }
  }
  return std::nullopt;
}

bool read_superblock(Device& dev, Superblock& sb, std::optional<SuperblockFallback>& fallback, std::string& error) {
  if (dev.size_bytes() < kMinDeviceBytes) {
    error = fmt::format("{}: not a dhfs filesystem (device too small: {} bytes)", dev.describe(), dev.size_bytes());
    return false;
  }
  AlignedBuffer buf(kBlockSize);
  if (!read_block(dev, kSuperBlock, buf, error)) return false;
  std::string why;
  auto primary = Superblock::decode(bytes_of(buf), why);
  fallback.reset();
  if (!primary) {
    std::uint64_t magic;
    std::memcpy(&magic, buf.data(), 8);
    if (magic != kSuperMagic) {
      error = fmt::format("{}: not a dhfs filesystem ({})", dev.describe(), why);
      return false;
    }
    // Our magic but damaged: a backup copy may still be intact.
    const auto candidates = backup_superblock_candidates(bytes_of(buf), dev.size_bytes());
    BlockNo where = 0;
    std::string ignored;
    primary = first_backup_superblock(dev, candidates, where, ignored);
    if (!primary) {
      error = fmt::format("{}: superblock is damaged ({}) and no usable backup was found (looked at block {}); "
                          "run fsck.dhfs",
                          dev.describe(), why, fmt::join(candidates, " and "));
      return false;
    }
    fallback = SuperblockFallback{why, where};
  }
  if (!primary->check_geometry(dev.size_bytes(), why)) {
    error = fmt::format("{}: {}", dev.describe(), why);
    return false;
  }
  sb = *primary;
  return true;
}

Ino max_inode_number(const Superblock& sb) {
  // The smallest inode record: type, length and an InodeRec without a
  // symlink target (records.cc).
  constexpr std::uint64_t kMinInodeRecordBytes = 1 + 4 + 84;
  return std::min<Ino>(kMaxIno, sb.total_blocks * kBlockSize / kMinInodeRecordBytes);
}

void bound_to_device(MetaState& st, const Superblock& sb) {
  st.max_ino = max_inode_number(sb);
  st.max_extent_blocks = sb.total_blocks;
}

bool apply_record(MetaState& st, const Record& rec) {
  InodeTable& table = st.inodes;
  return std::visit(
      Overloaded{
          [&](const InodeRec& r) {
            if (r.ino == 0 || r.ino > st.max_ino) return false;
            Inode* in = table.get(r.ino);
            bool fresh = !in || (in->mode & S_IFMT) != (r.mode & S_IFMT);
            if (!in) in = table.create_at(r.ino);
            in->apply_attrs(r);
            if (fresh) in->init_payload();
            if (in->target()) in->target()->assign(r.symlink);
            st.max_generation = std::max(st.max_generation, r.generation);
            return true;
          },
          [&](const InodeFreeRec& r) {
            table.erase(r.ino);
            return true;
          },
          [&](const DirentSetRec& r) {
            Inode* p = table.get(r.parent);
            if (!p || !p->dir()) return false;
            if (!p->dir()->replace(r.name, r.child, r.dtype)) p->dir()->add(r.name, r.child, r.dtype);
            return true;
          },
          [&](const DirentDelRec& r) {
            Inode* p = table.get(r.parent);
            if (!p || !p->dir()) return false;
            p->dir()->remove(r.name);
            return true;
          },
          [&](const ExtentSetRec& r) {
            if (r.pblk != 0 && r.len > st.max_extent_blocks) return false;
            Inode* in = table.get(r.ino);
            if (!in || !in->map()) return false;
            in->map()->set(r.lblk, r.len, r.pblk, r.flags);
            return true;
          },
          [&](const XattrSetRec& r) {
            Inode* in = table.get(r.ino);
            if (!in) return false;
            if (!in->xattrs) in->xattrs = std::make_unique<XattrMap>();
            (*in->xattrs)[std::string(r.name)] = std::string(r.value);
            return true;
          },
          [&](const XattrDelRec& r) {
            Inode* in = table.get(r.ino);
            if (!in) return false;
            if (in->xattrs) {
              auto it = in->xattrs->find(r.name);
              if (it != in->xattrs->end()) in->xattrs->erase(it);
              if (in->xattrs->empty()) in->xattrs.reset();
            }
            return true;
          },
          [&](const RefcountSetRec& r) {
            st.refs.set({r.pblk, r.len}, r.count);
            return true;
          },
          [&](const RegionSetRec& r) {
            st.regions[r.id] = RegionState{r.id, r.root, r.flags, r.reserved};
            return true;
          },
          [&](const RegionDelRec& r) {
            st.regions.erase(r.id);
            return true;
          },
          [&](const ConfigSetRec& r) {
            st.config[std::string(r.name)] = std::string(r.value);
            return true;
          },
          [&](const ContentHashRec& r) {
            Inode* in = table.get(r.ino);
            if (!in || !in->is_reg()) return false;
            // A hash of other contents than the file's (its size says so),
            // or of the retired whole-file kind, is dropped; dedup finds
            // the file again once it is rehashed.
            in->hash_valid = r.valid == kContentHashChunked && r.size == in->size;
            in->content_hash = {r.lo, r.hi};
            return true;
          },
      },
      rec);
}

bool load_state(Device& dev, LoadedState& st, std::string& error) {
  if (!read_superblock(dev, st.sb, st.superblock_fallback, error)) return false;
  const std::uint64_t tag = st.sb.uuid_tag();
  bound_to_device(st.meta, st.sb);

  // Newest valid root slot.
  AlignedBuffer buf(kBlockSize);
  std::optional<CheckpointRoot> best;
  std::string slot_why[2];
  for (int i = 0; i < 2; ++i) {
    if (!read_block(dev, kRootSlotBlocks[i], buf, error)) return false;
    auto r = CheckpointRoot::decode(bytes_of(buf), tag, slot_why[i]);
    if (r && (!best || r->seq > best->seq)) {
      best = r;
      st.root_slot = i;
    }
  }
  if (!best) {
    error = fmt::format("{}: no valid checkpoint root (slot A: {}; slot B: {}); run fsck.dhfs", dev.describe(),
                        slot_why[0], slot_why[1]);
    return false;
  }
  st.root = *best;
  for (const Extent& e : st.root.extents) {
    if (!Extent{st.sb.data_start, st.sb.data_blocks}.contains(e.start) || e.end() > st.sb.data_start + st.sb.data_blocks) {
      error = fmt::format("{}: checkpoint lies outside the data area; run fsck.dhfs", dev.describe());
      return false;
    }
  }

  std::string why;
  bool ok = read_checkpoint(
      dev, st.root, tag,
      [&](const Record& r) {
        // A checkpoint lists every object before what belongs to it: a
        // record whose owner is missing means the stream is damaged.
        if (!apply_record(st.meta, r)) {
          why = "record for a missing inode, or beyond what the device can hold";
          return false;
        }
        return true;
      },
      why);
  if (!ok) {
    error = fmt::format("{}: checkpoint is damaged ({}); run fsck.dhfs", dev.describe(), why);
    return false;
  }

  JournalGeometry geo{st.sb.journal_start, st.sb.journal_blocks, tag};
  why.clear();
  ok = Journal::replay(
      dev, geo, st.root.replay_lsn,
      [&](std::span<const std::uint8_t> payload) {
        std::string rec_why;
        bool good = decode_records(
            payload,
            [&](const Record& r) {
              if (!apply_record(st.meta, r)) ++st.skipped_records;
              return true;
            },
            rec_why);
        if (!good) why = rec_why;
        return good;
      },
      st.replay, why);
  if (!ok) {
    error = fmt::format("{}: {}; run fsck.dhfs", dev.describe(), why);
    return false;
  }
  st.next_generation = std::max(st.root.next_generation, st.meta.max_generation + 1);
  return true;
}

}  // namespace dhfs
