// How many steps the long random model tests take.
#pragma once

namespace dhfs::test {

// All of them in the release build. Under AddressSanitizer a quarter: every
// step runs 10-30 times slower there, and the sanitizer run is for memory and
// undefined-behaviour errors, which the shorter sequences reach through the
// same code. The release build in the same CI run takes every step.
constexpr int model_steps(int steps) {
#if defined(__SANITIZE_ADDRESS__)
  return steps / 4;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return steps / 4;
#else
  return steps;
#endif
#else
  return steps;
#endif
}

}  // namespace dhfs::test
