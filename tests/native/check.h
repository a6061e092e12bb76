// Minimal assertion helpers for the native tests (no test framework dependency, so CI needs only a compiler).
#pragma once

#include <cstdio>
#include <cstdlib>

namespace test
{
inline int& failures()
{
    static int count = 0;
    return count;
}
} // namespace test

#define CHECK(cond)                                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                            \
            ++test::failures();                                                                                        \
        }                                                                                                              \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                                           \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);                            \
            std::fprintf(stderr, __VA_ARGS__);                                                                         \
            std::fprintf(stderr, "\n");                                                                                \
            ++test::failures();                                                                                        \
        }                                                                                                              \
    } while (0)

#define TEST_RESULT()                                                                                                  \
    (test::failures() == 0 ? (std::printf("all checks passed\n"), 0)                                                   \
                           : (std::fprintf(stderr, "%d check(s) failed\n", test::failures()), 1))
