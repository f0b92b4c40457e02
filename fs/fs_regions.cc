// FileSystem: container regions, persisted settings, and the reports
// dhfsctl shows.
#include <fmt/format.h>

#include <cerrno>
#include <optional>

#include "fs/filesystem.h"
#include "fs/units.h"

namespace dhfs {

namespace {
constexpr char kPatternsKey[] = "region_patterns";
constexpr char kRegionSizeKey[] = "region_size";
constexpr char kCowUnitKey[] = "cow_unit";
}  // namespace

// Settings come from the filesystem (set by an earlier mount) unless this
// mount gives them; given ones are persisted.
void FileSystem::apply_settings(const std::map<std::string, std::string, std::less<>>& stored, Txn& txn) {
  settings_ = stored;
  auto set = [&](const char* key, const std::string& value) {
    if (settings_[key] == value) return;
    settings_[key] = value;
    txn.add(ConfigSetRec{key, settings_[key]});
  };
  if (opts_.region_patterns) set(kPatternsKey, *opts_.region_patterns);
  if (opts_.region_bytes) set(kRegionSizeKey, std::to_string(*opts_.region_bytes));
  if (opts_.cow_unit_bytes) set(kCowUnitKey, std::to_string(*opts_.cow_unit_bytes));

  std::string why;
  auto it = settings_.find(kPatternsKey);
  auto policy = RegionPolicy::parse(it != settings_.end() ? it->second : std::string(kDefaultRegionPatterns), why);
  if (!policy) policy = RegionPolicy::parse(kDefaultRegionPatterns, why);
  region_policy_ = *policy;
  if (auto s = settings_.find(kRegionSizeKey); s != settings_.end())
    if (auto b = parse_size(s->second); b && *b >= kBlockSize && *b <= (1ULL << 40)) region_blocks_ = *b / kBlockSize;
  // The same bounds as the mount options (fs/options.cc) and fsck: a value
  // outside them is damage and the default applies. A cow_unit is a power
  // of two so that its units never straddle two RangeLocks stripes.
  if (auto s = settings_.find(kCowUnitKey); s != settings_.end())
    if (auto b = parse_size(s->second); b && *b >= kBlockSize && *b <= (1 << 20) && !(*b & (*b - 1)))
      cow_unit_blocks_ = *b / kBlockSize;
  alloc_->set_region_growth(region_blocks_);
}

// Mount: the regions' reservations go to the allocator before the blocks in
// use are claimed.
bool FileSystem::load_regions(std::map<std::uint32_t, RegionState> regions, std::string& /*error*/) {
  regions_ = std::move(regions);
  for (const auto& [id, r] : regions_) {
    alloc_->load_region(id, r.reserved);
    next_region_ = std::max(next_region_, id + 1);
  }
  return true;
}

// A region whose root is gone (or not a region root any more) ends.
void FileSystem::check_region_roots(Txn& txn) {
  for (auto it = regions_.begin(); it != regions_.end();) {
    Inode* root = inodes_.get(it->second.root);
    bool ok = root && root->is_dir() && (root->flags & kInodeRegionRoot) && root->region == it->first;
    if (ok) {
      ++it;
      continue;
    }
    alloc_->release_region(it->first);
    txn.add(RegionDelRec{it->first});
    it = regions_.erase(it);
  }
}

std::string FileSystem::name_in(const Inode& dir, Ino child) const {
  std::string name;
  if (dir.dir())
    dir.dir()->for_each([&](const DirEntry& d) {
      if (name.empty() && d.ino == child) name = d.name;
    });
  return name;
}

bool FileSystem::wants_region(const Inode& parent, std::string_view name) const {
  std::vector<std::string> tail{std::string(name)};
  const Inode* dir = &parent;
  while (tail.size() < region_policy_.depth() && dir->ino != kRootIno) {
    const Inode* up = inodes_.get(dir->parent());
    if (!up) break;
    tail.push_back(name_in(*up, dir->ino));
    dir = up;
  }
  return region_policy_.matches(tail);
}

void FileSystem::start_region(Inode& root, std::uint64_t blocks, Txn& txn) {
  const std::uint32_t id = next_region_++;
  alloc_->create_region(id, blocks);
  root.region = id;
  root.flags |= kInodeRegionRoot;
  RegionState r{id, root.ino, 0, {}};
  if (auto info = alloc_->region(id)) r.reserved = info->reserved;
  alloc_->take_changed_regions();  // recorded right here
  txn.add(RegionSetRec{id, root.ino, 0, r.reserved});
  regions_[id] = std::move(r);
}

void FileSystem::end_region(Inode& root, Txn& txn) {
  if (!(root.flags & kInodeRegionRoot)) return;
  const std::uint32_t id = root.region;
  root.flags &= ~kInodeRegionRoot;
  if (regions_.erase(id) == 0) return;
  alloc_->release_region(id);
  txn.add(RegionDelRec{id});
}

// Reservations change when regions grow or are reclaimed; they are persisted
// with the next transaction (a lost change costs nothing: free space is
// always derived from the block maps at mount).
void FileSystem::record_region_changes(Txn& txn) {
  for (const RegionInfo& info : alloc_->take_changed_regions()) {
    auto it = regions_.find(info.id);
    if (it == regions_.end()) continue;
    it->second.reserved = info.reserved;
    txn.add(RegionSetRec{info.id, it->second.root, it->second.flags, info.reserved});
  }
}

int FileSystem::create_region(Ino dir, std::uint64_t bytes) {
  if (opts_.read_only) return -EROFS;
  if (int rc = begin_change(Journal::Change::kGrows); rc) return rc;
  // Everything below the directory moves to the new region: collect it.
  std::unique_lock m(meta_mu_);
  Inode* root = inodes_.get(dir);
  if (!root) return -ENOENT;
  if (!root->is_dir()) return -ENOTDIR;
  if (root->flags & kInodeRegionRoot) return -EEXIST;
  std::optional<Txn> txn(std::in_place);
  start_region(*root, bytes ? (bytes + kBlockSize - 1) / kBlockSize : region_blocks_, *txn);
  txn->inode(*root);
  std::vector<Ino> todo;
  root->dir()->for_each([&](const DirEntry& d) { todo.push_back(d.ino); });
  std::size_t in_txn = 0;
  while (!todo.empty()) {
    Inode* in = inodes_.get(todo.back());
    todo.pop_back();
    // A region root further down keeps its own region.
    if (!in || (in->flags & kInodeRegionRoot) || in->region == root->region) continue;
    in->region = root->region;
    txn->inode(*in);
    if (in->dir()) in->dir()->for_each([&](const DirEntry& d) { todo.push_back(d.ino); });
    if (++in_txn == 1024) {  // keep transactions bounded
      commit(*txn);
      txn.emplace();
      in_txn = 0;
    }
  }
  commit(*txn);
  return 0;
}

std::string FileSystem::path_locked(Ino ino) const {
  if (ino == kRootIno) return "/";
  std::vector<std::string> parts;
  const Inode* in = inodes_.get(ino);
  // Directories know their parent; a file's directory is found through the
  // region root it belongs to, at most, so files report only their name.
  while (in && in->ino != kRootIno) {
    const Inode* up = in->is_dir() ? inodes_.get(in->parent()) : nullptr;
    if (!up) {
      parts.push_back("?");
      break;
    }
    parts.push_back(name_in(*up, in->ino));
    in = up;
  }
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) path += "/" + *it;
  return path;
}

std::string FileSystem::path_of(Ino ino) {
  std::shared_lock m(meta_mu_);
  return path_locked(ino);
}

RegionReport FileSystem::report_locked(const RegionState& r) const {
  RegionReport rep;
  rep.id = r.id;
  rep.root = r.root;
  rep.root_path = path_locked(r.root);
  if (auto info = alloc_->region(r.id)) {
    rep.reserved_blocks = info->reserved_blocks;
    rep.used_blocks = info->reserved_blocks - info->free_blocks;
    rep.reclaimed_blocks = info->reclaimed_blocks;
    rep.slices = static_cast<std::uint32_t>(info->reserved.size());
    for (const Extent& e : info->reserved)
      refs_.for_runs(e, [&](Extent run, std::uint32_t c) {
        if (c > 1) rep.shared_blocks += run.len;
      });
  }
  return rep;
}

std::vector<RegionReport> FileSystem::region_reports() {
  std::shared_lock m(meta_mu_);
  std::vector<RegionReport> out;
  for (const auto& [id, r] : regions_) out.push_back(report_locked(r));
  return out;
}

int FileSystem::region_report(Ino ino, RegionReport* out) {
  std::shared_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  auto it = regions_.find(in->region);
  if (it == regions_.end()) return -ENODATA;  // not in a region
  *out = report_locked(it->second);
  return 0;
}

int FileSystem::frag_report(Ino ino, FragReport* out) {
  std::shared_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  if (!in->is_reg()) return -EINVAL;
  *out = {};
  out->size = in->size;
  out->region = in->region;
  out->extents = in->map()->extent_count();
  out->mapped_blocks = in->map()->mapped_blocks();
  const bool own_region = regions_.count(in->region) > 0;
  for (const FileExtent& e : *in->map()) {
    refs_.for_runs({e.pblk, e.len}, [&](Extent run, std::uint32_t c) {
      if (c > 1) out->shared_blocks += run.len;
    });
    if (own_region)
      for (BlockNo b = e.pblk; b < e.pblk + e.len; ++b)
        if (alloc_->region_of(b) == in->region) ++out->in_region_blocks;
  }
  return 0;
}

}  // namespace dhfs
