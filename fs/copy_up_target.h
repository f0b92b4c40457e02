// Recognises the file kernel overlayfs copies a lower file into, so that
// the FUSE adapter can have the kernel write it around the page cache.
//
// Why: overlayfs copies a file up by splicing the lower file into a new file
// in its work directory, fsyncing it and renaming it into the upper layer.
// When both layers live on dhfs the written bytes equal stored ones and are
// shared, not written (share_stored_chunk). Through the page cache the
// kernel first copies every byte into the new file's pages and later out of
// them again for the write-back; written around it, each 64 KiB piece goes
// to the daemon at once, and neither copy nor the page cache's fresh memory
// is paid. A 1 GiB copy-up took 1.21-1.58 s instead of 1.59-2.39 s, and
// ext4 1.56-1.93 s (one loop device on the bench VM; see the README).
//
// How it is told apart: overlayfs creates that file with vfs_create, which
// FUSE sends as MKNOD (open(2) with O_CREAT sends CREATE), in the directory
// "work" it keeps inside its workdir, under a temporary name of '#' and a
// hexadecimal number, and opens it write-only before it renames it. It
// makes files over whiteouts the same way but renames them before anyone
// opens them: those are users' files, which keep the page cache, whose
// write-back merges small writes and in which the kernel keeps the file's
// times (it changes none for writes that go around it; overlayfs sets the
// copied file's times itself afterwards).
#pragma once

#include <string_view>

namespace dhfs {

// The directory overlayfs makes inside the workdir it is given and creates
// those files in (OVL_WORKDIR_NAME in fs/overlayfs).
inline constexpr std::string_view kOverlayWorkDirName = "work";

// overlayfs's temporary names: "#" and the hexadecimal value of a counter
// (ovl_tempname in fs/overlayfs/dir.c).
inline bool is_overlay_temp_name(std::string_view name) {
  if (name.size() < 2 || name.size() > 17 || name[0] != '#') return false;
  for (char c : name.substr(1))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace dhfs
