/* realloc: growing strings and vectors by realloc, the way string builders, buffers and
 * dynamic arrays grow in C programs. Each thread keeps a set of buffers; in turn it picks one
 * and appends a chunk of random length with realloc to exactly the new length (no capacity
 * doubling: every append is a realloc). A buffer that reached its target length (random:
 * most are below 4 KiB, one in 8 below 256 KiB, one in 64 up to 2 MiB, so some cross the
 * large-block threshold while growing) is checked in full, sometimes shrunk by realloc to a
 * prefix (checked again), and freed; a new one starts in its slot.
 *
 * usage: realloc [threads=2] [appends=400000] [buffers=64]
 * The content of a buffer is a function of its id and the offset, written by the appends and
 * verified in full before it is freed; a realloc that loses or moves data fails the run. */
#include "bench.h"

static long appends, nbuf;

typedef struct {
    unsigned char *p;
    size_t len, target;
    uint64_t id;
} buf;

typedef struct {
    long id;
    uint64_t verified;
} job;

static inline unsigned char content(uint64_t id, size_t off)
{
    return (unsigned char)((id * 131u) ^ (off * 7u) ^ (off >> 8));
}

static size_t pick_target(bench_rng *r)
{
    uint64_t x = bench_next(r);
    if ((x & 63) == 0) return (size_t)bench_range(r, 256 << 10, 2 << 20);
    if ((x & 7) == 0) return (size_t)bench_range(r, 4 << 10, 256 << 10);
    return (size_t)bench_range(r, 16, 4 << 10);
}

static void check(const buf *b, size_t len, const char *what)
{
    for (size_t i = 0; i < len; i++)
        if (b->p[i] != content(b->id, i))
            bench_fail("realloc: %s: buffer %llu (%p, %zu bytes) byte %zu is %#x, expected %#x",
                       what, (unsigned long long)b->id, (void *)b->p, len, i, b->p[i],
                       content(b->id, i));
}

static void *worker(void *arg)
{
    job *j = arg;
    bench_rng r;
    bench_seed(&r, (uint64_t)j->id * 31337);
    uint64_t next_id = (uint64_t)j->id << 40;
    buf *bs = calloc((size_t)nbuf, sizeof *bs);
    if (!bs) bench_fail("realloc: setup allocation failed");
    for (long i = 0; i < nbuf; i++) bs[i].id = next_id++, bs[i].target = pick_target(&r);
    for (long a = 0; a < appends; a++) {
        buf *b = &bs[bench_next(&r) % (uint64_t)nbuf];
        /* Appends scale with the target, so a 2 MiB buffer grows in a few hundred steps. */
        size_t chunk = (size_t)bench_range(&r, 1, 16 + b->target / 128);
        if (b->len + chunk > b->target) chunk = b->target - b->len;
        size_t len = b->len + chunk;
        unsigned char *q = realloc(b->p, len);
        if (q == NULL) bench_fail("realloc: realloc(%p, %zu) returned NULL", (void *)b->p, len);
        b->p = q;
        for (size_t i = b->len; i < len; i++) q[i] = content(b->id, i);
        b->len = len;
        if (b->len == b->target) {
            check(b, b->len, "grown");
            if ((bench_next(&r) & 3) == 0) {
                size_t keep = (size_t)bench_range(&r, 1, b->len);
                q = realloc(b->p, keep);
                if (q == NULL) bench_fail("realloc: shrinking to %zu returned NULL", keep);
                b->p = q;
                check(b, keep, "shrunk");
            }
            free(b->p);
            j->verified++;
            b->p = NULL;
            b->len = 0;
            b->id = next_id++;
            b->target = pick_target(&r);
        }
    }
    for (long i = 0; i < nbuf; i++) {
        check(&bs[i], bs[i].len, "final");
        free(bs[i].p);
    }
    free(bs);
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = bench_arg(argc, argv, 1, 2, "threads");
    appends = bench_arg(argc, argv, 2, 400000, "appends");
    nbuf = bench_arg(argc, argv, 3, 64, "buffers");
    bench_report_malloc();

    job *jobs = calloc((size_t)threads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    if (!jobs || !tids) bench_fail("realloc: setup allocation failed");
    double t0 = bench_now();
    for (long t = 0; t < threads; t++) {
        jobs[t].id = t + 1;
        bench_spawn(&tids[t], worker, &jobs[t]);
    }
    uint64_t done = 0;
    for (long t = 0; t < threads; t++) {
        pthread_join(tids[t], NULL);
        done += jobs[t].verified;
    }
    double dt = bench_now() - t0;
    free(jobs);
    free(tids);
    printf("realloc: %ld threads x %ld appends over %ld buffers: %.0f reallocs/s, %llu buffers "
           "grown and checked\n",
           threads, appends, nbuf, (double)threads * (double)appends / dt,
           (unsigned long long)done);
    return 0;
}
