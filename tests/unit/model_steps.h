// How many steps the long random model tests take.
#pragma once

// GCC says AddressSanitizer with __SANITIZE_ADDRESS__, clang with
// __has_feature(address_sanitizer).
#if defined(__SANITIZE_ADDRESS__)
#define DHFS_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DHFS_TEST_ASAN 1
#endif
#endif

namespace dhfs::test {

// All of them in the release build. Under AddressSanitizer a quarter: every
// step runs 10-30 times slower there, and the sanitizer run is for memory and
// undefined-behaviour errors, which the shorter sequences reach through the
// same code. The release build in the same CI run takes every step.
constexpr int model_steps(int steps) {
#ifdef DHFS_TEST_ASAN
  return steps / 4;
#else
  return steps;
#endif
}

}  // namespace dhfs::test
