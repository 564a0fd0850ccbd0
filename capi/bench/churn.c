/* churn: small-object churn, the pattern of programs that build and drop many small nodes
 * (interpreters, compilers, containers of strings): each thread keeps a set of live objects
 * and, in rounds, replaces random ones, then allocates a burst of objects and frees them in
 * reverse order (a temporary tree or list), then a burst freed in allocation order (a queue).
 * Sizes are small and skewed towards the smallest classes: 3 in 4 are 8-64 B, the rest
 * 65-512 B. Run it with 1 thread (the single-threaded fast path) and with several.
 *
 * usage: churn [threads=2] [rounds=60] [live=20000] [replace=20000] [burst=10000]
 * Every object is filled with its tag; its head, middle and last byte are checked before it
 * is freed, and the live set in full at the end. */
#include "bench.h"

static long rounds, live, replace, burst;

typedef struct {
    void *p;
    uint32_t size;
    uint64_t tag;
} obj;

typedef struct {
    long id;
    uint64_t checked;
} job;

static inline uint32_t small_size(bench_rng *r)
{
    uint64_t x = bench_next(r);
    if ((x & 3) != 0) return (uint32_t)(8 + (x >> 8) % 57);
    return (uint32_t)(65 + (x >> 8) % 448);
}

static inline void make(obj *o, bench_rng *r, uint64_t id, uint64_t *serial)
{
    o->size = small_size(r);
    o->tag = bench_mix(id, ++*serial);
    o->p = bench_malloc(o->size, "churn");
    bench_fill(o->p, o->size, o->tag);
}

static inline void drop(obj *o, uint64_t *checked)
{
    bench_verify(o->p, o->size, o->tag, 0, "churn");
    free(o->p);
    ++*checked;
}

static void *worker(void *arg)
{
    job *j = arg;
    bench_rng r;
    bench_seed(&r, (uint64_t)j->id + 99);
    uint64_t serial = 0;
    obj *set = bench_malloc((size_t)live * sizeof(obj), "churn");
    obj *tmp = bench_malloc((size_t)burst * sizeof(obj), "churn");
    for (long i = 0; i < live; i++) make(&set[i], &r, (uint64_t)j->id, &serial);
    for (long round = 0; round < rounds; round++) {
        for (long i = 0; i < replace; i++) {
            obj *o = &set[bench_next(&r) % (uint64_t)live];
            drop(o, &j->checked);
            make(o, &r, (uint64_t)j->id, &serial);
        }
        for (long i = 0; i < burst; i++) make(&tmp[i], &r, (uint64_t)j->id, &serial);
        for (long i = burst - 1; i >= 0; i--) drop(&tmp[i], &j->checked);
        for (long i = 0; i < burst; i++) make(&tmp[i], &r, (uint64_t)j->id, &serial);
        for (long i = 0; i < burst; i++) drop(&tmp[i], &j->checked);
    }
    for (long i = 0; i < live; i++) {
        bench_verify(set[i].p, set[i].size, set[i].tag, 1, "churn (final)");
        free(set[i].p);
        j->checked++;
    }
    free(set);
    free(tmp);
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = bench_arg(argc, argv, 1, 2, "threads");
    rounds = bench_arg(argc, argv, 2, 60, "rounds");
    live = bench_arg(argc, argv, 3, 20000, "live");
    replace = bench_arg(argc, argv, 4, 20000, "replace");
    burst = bench_arg(argc, argv, 5, 10000, "burst");
    bench_report_malloc();

    job *jobs = calloc((size_t)threads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    if (!jobs || !tids) bench_fail("churn: setup allocation failed");
    double t0 = bench_now();
    for (long t = 0; t < threads; t++) {
        jobs[t].id = t + 1;
        bench_spawn(&tids[t], worker, &jobs[t]);
    }
    for (long t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    double dt = bench_now() - t0;
    uint64_t expect = (uint64_t)(rounds * (replace + 2 * burst) + live);
    for (long t = 0; t < threads; t++)
        if (jobs[t].checked != expect)
            bench_fail("churn: thread %ld checked %llu objects, expected %llu", t,
                       (unsigned long long)jobs[t].checked, (unsigned long long)expect);
    free(jobs);
    free(tids);
    printf("churn: %ld threads x %ld rounds (live %ld, replace %ld, burst %ld): %.0f frees/s, "
           "checks ok\n",
           threads, rounds, live, replace, burst, (double)threads * (double)expect / dt);
    return 0;
}
