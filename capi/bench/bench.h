/* Shared helpers of the C allocator benchmarks (capi/bench): argument parsing, a fast
 * deterministic random generator, block tagging and verification, and a report of which
 * malloc the process really uses (an LD_PRELOAD that failed to load must not pass for a
 * fast allocator).
 *
 * Every program checks what it wrote before it frees it; a mismatch prints what was found
 * and exits with status 2, so a broken allocator fails the run instead of looking fast. */
#ifndef SMPALLOC_BENCH_H
#define SMPALLOC_BENCH_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Exit status of a failed self-check (the runner reports it as a failure of the allocator). */
#define BENCH_CHECK_FAILED 2

#define bench_fail(...)                                                                    \
    do {                                                                                   \
        fprintf(stderr, "CHECK FAILED (%s:%d): ", __FILE__, __LINE__);                     \
        fprintf(stderr, __VA_ARGS__);                                                      \
        fputc('\n', stderr);                                                               \
        exit(BENCH_CHECK_FAILED);                                                          \
    } while (0)

/* argv[i] as a positive integer, or `def` when absent; anything else is a usage error. */
static long bench_arg(int argc, char **argv, int i, long def, const char *name)
{
    if (i >= argc) return def;
    char *end = NULL;
    errno = 0;
    long v = strtol(argv[i], &end, 0);
    if (errno != 0 || end == argv[i] || *end != '\0' || v <= 0) {
        fprintf(stderr, "usage: argument %d (%s) must be a positive integer, got '%s'\n", i,
                name, argv[i]);
        exit(64);
    }
    return v;
}

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* xorshift64*: deterministic per seed, a few cycles per number. */
typedef struct {
    uint64_t s;
} bench_rng;

static inline void bench_seed(bench_rng *r, uint64_t seed)
{
    r->s = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    if (r->s == 0) r->s = 1;
}

static inline uint64_t bench_next(bench_rng *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [lo, hi]. */
static inline uint64_t bench_range(bench_rng *r, uint64_t lo, uint64_t hi)
{
    return lo + bench_next(r) % (hi - lo + 1);
}

/* A tag that is never zero: the byte pattern of a block (tag & 0xff) | 1. */
static inline uint64_t bench_mix(uint64_t a, uint64_t b)
{
    uint64_t x = a * 0xD6E8FEB86659FD93ull ^ (b + 0x9E3779B97F4A7C15ull);
    x ^= x >> 32;
    x *= 0xD6E8FEB86659FD93ull;
    x ^= x >> 32;
    return x | 1;
}

/* Fills a block of `size` bytes: the tag in its first 8 bytes (when it has them), the tag's
 * low byte in every other byte. `size` >= 1. */
static inline void bench_fill(void *p, size_t size, uint64_t tag)
{
    unsigned char *b = p;
    if (size >= 8) {
        memcpy(b, &tag, 8);
        memset(b + 8, (int)(tag & 0xff), size - 8);
    } else {
        memset(b, (int)(tag & 0xff), size);
    }
}

/* Checks a block filled by bench_fill: its head, middle and last byte (the whole block when
 * `full`); exits on a mismatch. */
static inline void bench_verify(const void *p, size_t size, uint64_t tag, int full,
                                const char *what)
{
    const unsigned char *b = p;
    unsigned char byte = (unsigned char)(tag & 0xff);
    size_t start = 0;
    if (size >= 8) {
        uint64_t head;
        memcpy(&head, b, 8);
        if (head != tag)
            bench_fail("%s: block %p of %zu bytes: head %#llx, expected %#llx", what, p, size,
                       (unsigned long long)head, (unsigned long long)tag);
        start = 8;
    }
    if (full) {
        for (size_t i = start; i < size; i++)
            if (b[i] != byte)
                bench_fail("%s: block %p of %zu bytes: byte %zu is %#x, expected %#x", what, p,
                           size, i, b[i], byte);
    } else if (size > start) {
        size_t probe[3] = {start, start + (size - start) / 2, size - 1};
        for (int i = 0; i < 3; i++)
            if (b[probe[i]] != byte)
                bench_fail("%s: block %p of %zu bytes: byte %zu is %#x, expected %#x", what, p,
                           size, probe[i], b[probe[i]], byte);
    }
}

static inline void *bench_malloc(size_t size, const char *what)
{
    void *p = malloc(size);
    if (p == NULL) bench_fail("%s: malloc(%zu) returned NULL", what, size);
    return p;
}

/* Prints the file that defines the malloc this process calls, as "malloc: PATH" on stderr
 * (the runner checks that it is the preloaded library). */
static void bench_report_malloc(void)
{
    Dl_info info;
    void *(*volatile m)(size_t) = malloc;
    if (dladdr((void *)m, &info) != 0 && info.dli_fname != NULL)
        fprintf(stderr, "malloc: %s\n", info.dli_fname);
    else
        fprintf(stderr, "malloc: unknown\n");
}

/* pthread_create that exits on failure (a benchmark without its threads measures nothing). */
static void bench_spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int e = pthread_create(t, NULL, fn, arg);
    if (e != 0) {
        fprintf(stderr, "pthread_create: %s\n", strerror(e));
        exit(1);
    }
}

#endif
