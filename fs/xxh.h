// XXH3 as dhfs uses it: on x86-64, calls go to libxxhash's runtime
// dispatch, which picks the widest vector unit the CPU has (AVX2,
// AVX-512). Debian's libxxhash is built for the x86-64 baseline, SSE2
// only, and hashes about 3x slower without it (8.5 against 25 GB/s over
// 64 KiB windows on the bench VM); an overlay copy-up hashes every byte
// it copies three times. The hashes are the same either way.
#pragma once

#include <xxhash.h>

#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#endif
