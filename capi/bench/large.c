/* large: large blocks, 64 KiB to 8 MiB (I/O buffers, images, arenas of other allocators):
 * each thread keeps a few live blocks and many times replaces a random one with a block of a
 * random size (log-uniform, so small and large sizes are both common), touching every page
 * of it as a program that uses its buffer would. This measures how the allocator gets large
 * blocks from the OS and gives them back (mmap/munmap per block, a cache, or a retained
 * region) and what that costs in page faults and peak memory.
 *
 * usage: large [threads=2] [ops=1000] [live=8] [min_kib=64] [max_kib=8192]
 * Every page of a block gets a word derived from the block's tag and the page index (its last
 * byte the tag's low byte); all of them are checked before the block is freed. */
#include "bench.h"

#define PAGE 4096

static long ops, live, min_kib, max_kib;

typedef struct {
    unsigned char *p;
    size_t size;
    uint64_t tag;
} blk;

typedef struct {
    long id;
    uint64_t checked;
} job;

static inline uint64_t page_word(uint64_t tag, size_t page)
{
    return tag ^ (page * 0x9E3779B97F4A7C15ull);
}

static void make(blk *b, bench_rng *r, uint64_t id, uint64_t serial)
{
    /* Roughly log-uniform: an octave [min << k, min << (k + 1)) picked uniformly among those
     * that start below max, then a size uniform in it (capped at max). */
    size_t lo = (size_t)min_kib * 1024, hi = (size_t)max_kib * 1024;
    long octaves = 0;
    while ((lo << (octaves + 1)) <= hi) octaves++;
    size_t base = lo << bench_range(r, 0, (uint64_t)(octaves > 0 ? octaves - 1 : 0));
    size_t size = (size_t)bench_range(r, base, 2 * base - 1);
    if (size > hi) size = hi;
    b->size = size;
    b->tag = bench_mix(id, serial);
    b->p = bench_malloc(size, "large");
    for (size_t pg = 0; pg * PAGE + 8 < size; pg++) {
        uint64_t w = page_word(b->tag, pg);
        memcpy(b->p + pg * PAGE, &w, 8);
    }
    b->p[size - 1] = (unsigned char)b->tag;
}

static void drop(blk *b, uint64_t *checked)
{
    for (size_t pg = 0; pg * PAGE + 8 < b->size; pg++) {
        uint64_t w;
        memcpy(&w, b->p + pg * PAGE, 8);
        if (w != page_word(b->tag, pg))
            bench_fail("large: block %p of %zu bytes: page %zu holds %#llx, expected %#llx",
                       (void *)b->p, b->size, pg, (unsigned long long)w,
                       (unsigned long long)page_word(b->tag, pg));
    }
    if (b->p[b->size - 1] != (unsigned char)b->tag)
        bench_fail("large: block %p of %zu bytes: last byte changed", (void *)b->p, b->size);
    free(b->p);
    ++*checked;
}

static void *worker(void *arg)
{
    job *j = arg;
    bench_rng r;
    bench_seed(&r, (uint64_t)j->id * 1000003);
    uint64_t serial = 0;
    blk *set = bench_malloc((size_t)live * sizeof(blk), "large");
    for (long i = 0; i < live; i++) make(&set[i], &r, (uint64_t)j->id, ++serial);
    for (long i = 0; i < ops; i++) {
        blk *b = &set[bench_next(&r) % (uint64_t)live];
        drop(b, &j->checked);
        make(b, &r, (uint64_t)j->id, ++serial);
    }
    for (long i = 0; i < live; i++) drop(&set[i], &j->checked);
    free(set);
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = bench_arg(argc, argv, 1, 2, "threads");
    ops = bench_arg(argc, argv, 2, 1000, "ops");
    live = bench_arg(argc, argv, 3, 8, "live");
    min_kib = bench_arg(argc, argv, 4, 64, "min_kib");
    max_kib = bench_arg(argc, argv, 5, 8192, "max_kib");
    if (max_kib < min_kib) bench_fail("large: max %ld < min %ld", max_kib, min_kib);
    bench_report_malloc();

    job *jobs = calloc((size_t)threads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    if (!jobs || !tids) bench_fail("large: setup allocation failed");
    double t0 = bench_now();
    for (long t = 0; t < threads; t++) {
        jobs[t].id = t + 1;
        bench_spawn(&tids[t], worker, &jobs[t]);
    }
    for (long t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    double dt = bench_now() - t0;
    for (long t = 0; t < threads; t++)
        if (jobs[t].checked != (uint64_t)(ops + live))
            bench_fail("large: thread %ld checked %llu blocks, expected %ld", t,
                       (unsigned long long)jobs[t].checked, ops + live);
    free(jobs);
    free(tids);
    printf("large: %ld threads x %ld ops (live %ld, %ld KiB-%ld KiB): %.0f blocks/s, checks ok\n",
           threads, ops, live, min_kib, max_kib, (double)threads * (double)(ops + live) / dt);
    return 0;
}
