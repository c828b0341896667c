// The check every C++ test uses: a failed EXPECT is counted and reported with its place, and the test goes on, so
// one run lists every failure; each test's main returns non-zero when `failures` is.
#pragma once

#include <cstdio>

inline int failures = 0;

#define EXPECT(cond, ...)                                                          \
    do {                                                                           \
        if (!(cond)) {                                                             \
            ++failures;                                                            \
            std::fprintf(stderr, "FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                                     \
            std::fprintf(stderr, "\n");                                            \
        }                                                                          \
    } while (0)
