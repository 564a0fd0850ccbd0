/* cache-scratch: a model of the passive false-sharing test of Berger et al. ("Hoard: A
 * Scalable Memory Allocator for Multithreaded Applications", ASPLOS 2000), written from its
 * description.
 *
 * The main thread allocates one small object per worker, so they are likely neighbours on
 * one cache line, and hands one to each worker. A worker frees the object it was given, then
 * many times allocates an object of the same size, writes into it repeatedly and frees it.
 * An allocator that gives the worker back the object it just freed (or any memory on a line
 * that another thread's object shares) makes every write fight over that line with the other
 * workers: the run is then several times slower than with thread-private lines.
 *
 * usage: cache_scratch [threads=2] [iterations=25000] [writes=2000] [size=8]
 * Each write increments every byte of the object; the worker checks the object's contents
 * after the writes (each byte must equal the number of writes, mod 256), and exits non-zero
 * on a mismatch. */
#include "bench.h"

static long iterations, writes, size;

typedef struct {
    char *given;
    long id;
    uint64_t checked;
} job;

static void *worker(void *arg)
{
    job *j = arg;
    unsigned char expect = (unsigned char)(writes & 0xff);
    free(j->given);
    for (long it = 0; it < iterations; it++) {
        volatile unsigned char *p = bench_malloc((size_t)size, "cache_scratch");
        for (long b = 0; b < size; b++) p[b] = 0;
        for (long w = 0; w < writes; w++)
            for (long b = 0; b < size; b++) p[b] = (unsigned char)(p[b] + 1);
        for (long b = 0; b < size; b++)
            if (p[b] != expect)
                bench_fail("cache_scratch: thread %ld object %p byte %ld is %u, expected %u",
                           j->id, (void *)p, b, p[b], expect);
        j->checked++;
        free((void *)p);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = bench_arg(argc, argv, 1, 2, "threads");
    iterations = bench_arg(argc, argv, 2, 25000, "iterations");
    writes = bench_arg(argc, argv, 3, 2000, "writes");
    size = bench_arg(argc, argv, 4, 8, "size");
    bench_report_malloc();

    job *jobs = calloc((size_t)threads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    if (!jobs || !tids) bench_fail("cache_scratch: setup allocation failed");
    for (long t = 0; t < threads; t++) {
        jobs[t].given = bench_malloc((size_t)size, "cache_scratch");
        jobs[t].id = t;
    }
    double t0 = bench_now();
    for (long t = 0; t < threads; t++) bench_spawn(&tids[t], worker, &jobs[t]);
    for (long t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    double dt = bench_now() - t0;
    for (long t = 0; t < threads; t++)
        if (jobs[t].checked != (uint64_t)iterations)
            bench_fail("cache_scratch: thread %ld checked %llu objects, expected %ld", t,
                       (unsigned long long)jobs[t].checked, iterations);
    free(jobs);
    free(tids);
    printf("cache_scratch: %ld threads x %ld objects of %ld B x %ld writes: %.3f s, "
           "checks ok\n",
           threads, iterations, size, writes, dt);
    return 0;
}
