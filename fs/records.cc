#include "fs/records.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include "fs/codec.h"

namespace dhfs {

namespace {

struct Encoder {
  ByteWriter& w;

  void operator()(const InodeRec& r) {
    w.put(r.ino);
    w.put(r.generation);
    w.put(r.mode);
    w.put(r.uid);
    w.put(r.gid);
    w.put(r.nlink);
    w.put(r.rdev);
    w.put(r.size);
    w.put(r.atime_ns);
    w.put(r.mtime_ns);
    w.put(r.ctime_ns);
    w.put(r.btime_ns);
    w.put(r.flags);
    w.put(r.region);
    w.put_string(r.symlink);
  }
  void operator()(const InodeFreeRec& r) { w.put(r.ino); }
  void operator()(const DirentSetRec& r) {
    w.put(r.parent);
    w.put(r.child);
    w.put(r.dtype);
    w.put_string(r.name);
  }
  void operator()(const DirentDelRec& r) {
    w.put(r.parent);
    w.put_string(r.name);
  }
  void operator()(const ExtentSetRec& r) {
    w.put(r.ino);
    w.put(r.lblk);
    w.put(r.len);
    w.put(r.pblk);
    w.put(r.flags);
  }
  void operator()(const XattrSetRec& r) {
    w.put(r.ino);
    w.put(static_cast<std::uint8_t>(r.name.size()));
    w.put_string(r.name);
    w.put_string(r.value);
  }
  void operator()(const XattrDelRec& r) {
    w.put(r.ino);
    w.put_string(r.name);
  }
  void operator()(const RefcountSetRec& r) {
    w.put(r.pblk);
    w.put(r.len);
    w.put(r.count);
  }
  void operator()(const RegionSetRec& r) {
    w.put(r.id);
    w.put(r.root);
    w.put(r.flags);
    w.put(static_cast<std::uint32_t>(r.reserved.size()));
    for (const Extent& e : r.reserved) {
      w.put(e.start);
      w.put(e.len);
    }
  }
  void operator()(const RegionDelRec& r) { w.put(r.id); }
  void operator()(const ConfigSetRec& r) {
    w.put(static_cast<std::uint8_t>(r.name.size()));
    w.put_string(r.name);
    w.put_string(r.value);
  }
  void operator()(const ContentHashRec& r) {
    w.put(r.ino);
    w.put(r.valid);
    w.put(r.size);
    w.put(r.lo);
    w.put(r.hi);
  }
};

RecordType type_of(const Record& r) {
  static constexpr RecordType kTypes[] = {
      RecordType::kInode,    RecordType::kInodeFree,    RecordType::kDirentSet, RecordType::kDirentDel,
      RecordType::kExtentSet, RecordType::kXattrSet,    RecordType::kXattrDel,  RecordType::kRefcountSet,
      RecordType::kRegionSet, RecordType::kRegionDel,   RecordType::kConfigSet, RecordType::kContentHash};
  static_assert(std::size(kTypes) == std::variant_size_v<Record>);
  return kTypes[r.index()];
}

bool decode_body(RecordType type, ByteReader& r, Record& out, std::string& why) {
  switch (type) {
    case RecordType::kInode: {
      InodeRec i;
      i.ino = r.get<std::uint64_t>();
      i.generation = r.get<std::uint64_t>();
      i.mode = r.get<std::uint32_t>();
      i.uid = r.get<std::uint32_t>();
      i.gid = r.get<std::uint32_t>();
      i.nlink = r.get<std::uint32_t>();
      i.rdev = r.get<std::uint32_t>();
      i.size = r.get<std::uint64_t>();
      i.atime_ns = r.get<std::int64_t>();
      i.mtime_ns = r.get<std::int64_t>();
      i.ctime_ns = r.get<std::int64_t>();
      i.btime_ns = r.get<std::int64_t>();
      i.flags = r.get<std::uint32_t>();
      i.region = r.get<std::uint32_t>();
      i.symlink = r.get_string(r.remaining());
      if (i.symlink.size() > kSymlinkMax) {
        why = "symlink target too long";
        return false;
      }
      if (i.ino == 0 || i.ino > kMaxIno || !valid_file_type(i.mode)) {
        why = "invalid inode";
        return false;
      }
      out = i;
      return true;
    }
    case RecordType::kInodeFree:
      out = InodeFreeRec{r.get<std::uint64_t>()};
      return true;
    case RecordType::kDirentSet: {
      DirentSetRec d;
      d.parent = r.get<std::uint64_t>();
      d.child = r.get<std::uint64_t>();
      d.dtype = r.get<std::uint8_t>();
      d.name = r.get_string(r.remaining());
      if (!valid_name(d.name)) {
        why = "invalid directory entry name";
        return false;
      }
      out = d;
      return true;
    }
    case RecordType::kDirentDel: {
      DirentDelRec d;
      d.parent = r.get<std::uint64_t>();
      d.name = r.get_string(r.remaining());
      if (!valid_name(d.name)) {
        why = "invalid directory entry name";
        return false;
      }
      out = d;
      return true;
    }
    case RecordType::kExtentSet: {
      ExtentSetRec e;
      e.ino = r.get<std::uint64_t>();
      e.lblk = r.get<std::uint64_t>();
      e.len = r.get<std::uint64_t>();
      e.pblk = r.get<std::uint64_t>();
      e.flags = r.get<std::uint32_t>();
      if (e.ino == 0 || e.ino > kMaxIno || e.len == 0 || e.lblk + e.len < e.lblk ||
          (e.pblk != 0 && (e.pblk > kMaxBlock || e.len > kMaxBlock)) ||
          !valid_extent_flags(e.lblk, e.len, e.pblk, e.flags)) {
        why = "invalid extent";
        return false;
      }
      out = e;
      return true;
    }
    case RecordType::kXattrSet: {
      XattrSetRec x;
      x.ino = r.get<std::uint64_t>();
      auto n = r.get<std::uint8_t>();
      x.name = r.get_string(n);
      x.value = r.get_string(r.remaining());
      if (x.name.empty() || x.value.size() > kXattrValueMax) {
        why = "invalid xattr";
        return false;
      }
      out = x;
      return true;
    }
    case RecordType::kXattrDel: {
      XattrDelRec x;
      x.ino = r.get<std::uint64_t>();
      x.name = r.get_string(r.remaining());
      if (x.name.empty() || x.name.size() > kXattrNameMax) {
        why = "invalid xattr name";
        return false;
      }
      out = x;
      return true;
    }
    case RecordType::kRefcountSet: {
      RefcountSetRec c;
      c.pblk = r.get<std::uint64_t>();
      c.len = r.get<std::uint64_t>();
      c.count = r.get<std::uint32_t>();
      if (c.pblk == 0 || c.pblk > kMaxBlock || c.len == 0 || c.len > kMaxBlock) {
        why = "invalid reference count range";
        return false;
      }
      out = c;
      return true;
    }
    case RecordType::kRegionSet: {
      RegionSetRec g;
      g.id = r.get<std::uint32_t>();
      g.root = r.get<std::uint64_t>();
      g.flags = r.get<std::uint32_t>();
      auto n = r.get<std::uint32_t>();
      if (g.id == 0 || g.root == 0 || g.root > kMaxIno || n > kMaxRegionSlices) {
        why = "invalid region";
        return false;
      }
      for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
        Extent e{r.get<std::uint64_t>(), r.get<std::uint64_t>()};
        if (e.start == 0 || e.start > kMaxBlock || e.len == 0 || e.len > kMaxBlock) {
          why = "invalid region slice";
          return false;
        }
        g.reserved.push_back(e);
      }
      out = std::move(g);
      return true;
    }
    case RecordType::kRegionDel:
      out = RegionDelRec{r.get<std::uint32_t>()};
      return true;
    case RecordType::kConfigSet: {
      ConfigSetRec c;
      auto n = r.get<std::uint8_t>();
      c.name = r.get_string(n);
      c.value = r.get_string(r.remaining());
      if (c.name.empty() || c.name.size() > 64 || c.value.size() > 4096) {
        why = "invalid setting";
        return false;
      }
      out = c;
      return true;
    }
    case RecordType::kContentHash: {
      ContentHashRec h;
      h.ino = r.get<std::uint64_t>();
      h.valid = r.get<std::uint8_t>();
      h.size = r.get<std::uint64_t>();
      h.lo = r.get<std::uint64_t>();
      h.hi = r.get<std::uint64_t>();
      if (h.ino == 0 || h.ino > kMaxIno || h.valid > kContentHashChunked) {
        why = "invalid content hash";
        return false;
      }
      out = h;
      return true;
    }
  }
  why = fmt::format("unknown record type {}", static_cast<int>(type));
  return false;
}

}  // namespace

void RecordWriter::add(const Record& r) {
  ByteWriter w(out_);
  w.put(static_cast<std::uint8_t>(type_of(r)));
  std::size_t len_pos = w.size();
  w.put(std::uint32_t{0});
  std::visit(Encoder{w}, r);
  w.patch(len_pos, static_cast<std::uint32_t>(w.size() - len_pos - 4));
  ++count_;
}

bool decode_records(std::span<const std::uint8_t> bytes, const std::function<bool(const Record&)>& fn,
                    std::string& why) {
  ByteReader r(bytes);
  while (r.remaining() > 0) {
    auto type = static_cast<RecordType>(r.get<std::uint8_t>());
    auto len = r.get<std::uint32_t>();
    auto body = r.get_bytes(len);
    if (!r.ok()) {
      why = "truncated record";
      return false;
    }
    ByteReader br(body);
    Record rec;
    if (!decode_body(type, br, rec, why)) return false;
    if (!br.ok() || br.remaining() != 0) {
      why = fmt::format("malformed record of type {}", static_cast<int>(type));
      return false;
    }
    if (!fn(rec)) return false;
  }
  return true;
}

bool valid_file_type(std::uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFCHR: case S_IFBLK: case S_IFIFO: case S_IFSOCK:
      return true;
  }
  return false;
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > kNameMax || name == "." || name == "..") return false;
  return name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

}  // namespace dhfs
