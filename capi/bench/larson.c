/* larson: a model of Larson and Krishnan's server benchmark ("Memory allocation for
 * long-running server applications", ISMM 1998), written from its description.
 *
 * Each thread owns a window of live blocks and, many times, picks a random slot, frees the
 * block there and allocates one of a random size in its place. The run is cut into epochs;
 * at each epoch the threads exit and new threads take over the windows rotated by one, so
 * every block is freed by a thread other than the one that allocated it (the ownership
 * crosses threads, and dead threads leave their caches behind, as in a server whose worker
 * threads come and go).
 *
 * usage: larson [threads=2] [epochs=10] [ops_per_epoch=250000] [window=4000] [min=10]
 *               [max=1000]
 * Every block is filled with its tag when allocated and its head, middle and last byte are
 * checked before it is freed; at the end every block is checked in full. Prints the
 * throughput in operations (a free and an allocation each) per second. */
#include "bench.h"

typedef struct {
    void *p;
    size_t size;
    uint64_t tag;
} slot;

typedef struct {
    slot *slots;
    long n;
    uint64_t serial; /* allocations made in this window, for its tags */
} window;

static long ops_per_epoch, min_size, max_size;

typedef struct {
    window *w;
    uint64_t seed;
    long id;
} job;

static void *worker(void *arg)
{
    job *j = arg;
    window *w = j->w;
    bench_rng r;
    bench_seed(&r, j->seed);
    for (long i = 0; i < ops_per_epoch; i++) {
        slot *s = &w->slots[bench_next(&r) % (uint64_t)w->n];
        bench_verify(s->p, s->size, s->tag, 0, "larson");
        free(s->p);
        s->size = (size_t)bench_range(&r, (uint64_t)min_size, (uint64_t)max_size);
        s->tag = bench_mix((uint64_t)j->id, ++w->serial);
        s->p = bench_malloc(s->size, "larson");
        bench_fill(s->p, s->size, s->tag);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = bench_arg(argc, argv, 1, 2, "threads");
    long epochs = bench_arg(argc, argv, 2, 10, "epochs");
    ops_per_epoch = bench_arg(argc, argv, 3, 250000, "ops_per_epoch");
    long wsize = bench_arg(argc, argv, 4, 4000, "window");
    min_size = bench_arg(argc, argv, 5, 10, "min");
    max_size = bench_arg(argc, argv, 6, 1000, "max");
    if (max_size < min_size) bench_fail("larson: max %ld < min %ld", max_size, min_size);
    bench_report_malloc();

    window *ws = calloc((size_t)threads, sizeof *ws);
    job *jobs = calloc((size_t)threads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    if (!ws || !jobs || !tids) bench_fail("larson: setup allocation failed");
    bench_rng r;
    bench_seed(&r, 4141);
    /* The main thread allocates the first windows: the first epoch already frees blocks
     * that another thread allocated. */
    for (long t = 0; t < threads; t++) {
        ws[t].n = wsize;
        ws[t].slots = bench_malloc((size_t)wsize * sizeof(slot), "larson");
        for (long i = 0; i < wsize; i++) {
            slot *s = &ws[t].slots[i];
            s->size = (size_t)bench_range(&r, (uint64_t)min_size, (uint64_t)max_size);
            s->tag = bench_mix((uint64_t)(threads + t), ++ws[t].serial);
            s->p = bench_malloc(s->size, "larson");
            bench_fill(s->p, s->size, s->tag);
        }
    }

    double t0 = bench_now();
    for (long e = 0; e < epochs; e++) {
        for (long t = 0; t < threads; t++) {
            jobs[t].w = &ws[(t + e) % threads];
            jobs[t].seed = (uint64_t)(e * threads + t + 1);
            jobs[t].id = e * threads + t + 2 * threads;
            bench_spawn(&tids[t], worker, &jobs[t]);
        }
        for (long t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    }
    double dt = bench_now() - t0;

    uint64_t bytes = 0;
    for (long t = 0; t < threads; t++) {
        for (long i = 0; i < wsize; i++) {
            slot *s = &ws[t].slots[i];
            bench_verify(s->p, s->size, s->tag, 1, "larson (final)");
            bytes += s->size;
            free(s->p);
        }
        free(ws[t].slots);
    }
    free(ws);
    free(jobs);
    free(tids);
    double ops = (double)threads * (double)epochs * (double)ops_per_epoch;
    printf("larson: %ld threads, %ld epochs x %ld ops, window %ld, %ld-%ld B: %.0f ops/s, "
           "%llu live bytes at the end, checks ok\n",
           threads, epochs, ops_per_epoch, wsize, min_size, max_size, ops / dt,
           (unsigned long long)bytes);
    return 0;
}
