/* xmalloc: a model of the xmalloc-test of Lever and Boreham ("malloc() Performance in a
 * Multithreaded Linux Environment", USENIX 2000), written from its description.
 *
 * Producer threads allocate blocks of random small sizes, fill them and hand them to consumer
 * threads through a shared queue; consumers check and free them. Every block is freed by a
 * thread other than the one that allocated it, the pattern that makes per-thread allocators
 * pass memory back to its owner (or strand it). Blocks travel in batches, so the queue's lock
 * is not what is measured.
 *
 * usage: xmalloc [threads=2] [blocks_per_producer=3000000] [batch=256] [min=16] [max=256]
 *                [queue_batches=64]
 * threads/2 producers and threads/2 consumers (at least one of each). The queue holds at most
 * queue_batches batches (a producer waits when it is full). Producers sum the tags they
 * wrote, consumers the tags they checked; the sums and counts must agree. */
#include "bench.h"

static long batch, min_size, max_size, per_producer, queue_cap;

/* A ring of batches; a batch is an array: its length, then that many block pointers. */
static void ***queue_items;
static long q_head, q_len;
static long producers_left;
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_not_full = PTHREAD_COND_INITIALIZER;
static pthread_cond_t q_not_empty = PTHREAD_COND_INITIALIZER;

typedef struct {
    long id;
    uint64_t sum;
    uint64_t count;
} role;

/* Block layout: size (8 bytes), tag (8 bytes), then the tag's low byte. Minimum 16 bytes. */
static void *producer(void *arg)
{
    role *me = arg;
    bench_rng r;
    bench_seed(&r, (uint64_t)me->id * 7919 + 1);
    long made = 0;
    while (made < per_producer) {
        long n = per_producer - made < batch ? per_producer - made : batch;
        void **b = bench_malloc((size_t)(n + 1) * sizeof(void *), "xmalloc batch");
        b[0] = (void *)(uintptr_t)n;
        for (long i = 1; i <= n; i++) {
            size_t size = (size_t)bench_range(&r, (uint64_t)min_size, (uint64_t)max_size);
            uint64_t tag = bench_mix((uint64_t)me->id, (uint64_t)(made + i));
            unsigned char *p = bench_malloc(size, "xmalloc");
            bench_fill(p + 8, size - 8, tag);
            memcpy(p, &size, 8);
            b[i] = p;
            me->sum += tag;
        }
        me->count += (uint64_t)n;
        made += n;
        pthread_mutex_lock(&q_lock);
        while (q_len == queue_cap) pthread_cond_wait(&q_not_full, &q_lock);
        queue_items[(q_head + q_len) % queue_cap] = b;
        q_len++;
        pthread_cond_signal(&q_not_empty);
        pthread_mutex_unlock(&q_lock);
    }
    pthread_mutex_lock(&q_lock);
    producers_left--;
    pthread_cond_broadcast(&q_not_empty);
    pthread_mutex_unlock(&q_lock);
    return NULL;
}

static void *consumer(void *arg)
{
    role *me = arg;
    for (;;) {
        pthread_mutex_lock(&q_lock);
        while (q_len == 0 && producers_left > 0) pthread_cond_wait(&q_not_empty, &q_lock);
        if (q_len == 0) {
            pthread_mutex_unlock(&q_lock);
            return NULL;
        }
        void **b = queue_items[q_head];
        q_head = (q_head + 1) % queue_cap;
        q_len--;
        pthread_cond_signal(&q_not_full);
        pthread_mutex_unlock(&q_lock);
        long n = (long)(uintptr_t)b[0];
        for (long i = 1; i <= n; i++) {
            unsigned char *p = b[i];
            size_t size;
            uint64_t tag;
            memcpy(&size, p, 8);
            if (size < (size_t)min_size || size > (size_t)max_size)
                bench_fail("xmalloc: block %p has a corrupted size field %zu", (void *)p, size);
            memcpy(&tag, p + 8, 8);
            bench_verify(p + 8, size - 8, tag, 0, "xmalloc");
            me->sum += tag;
            free(p);
        }
        me->count += (uint64_t)n;
        free(b);
    }
}

int main(int argc, char **argv)
{
    long threads = bench_arg(argc, argv, 1, 2, "threads");
    per_producer = bench_arg(argc, argv, 2, 3000000, "blocks_per_producer");
    batch = bench_arg(argc, argv, 3, 256, "batch");
    min_size = bench_arg(argc, argv, 4, 16, "min");
    max_size = bench_arg(argc, argv, 5, 256, "max");
    queue_cap = bench_arg(argc, argv, 6, 64, "queue_batches");
    if (min_size < 16) min_size = 16; /* room for the size and the tag */
    if (max_size < min_size) bench_fail("xmalloc: max %ld < min %ld", max_size, min_size);
    bench_report_malloc();

    long np = threads / 2 > 0 ? threads / 2 : 1;
    long nc = threads - np > 0 ? threads - np : 1;
    queue_items = bench_malloc((size_t)queue_cap * sizeof(void **), "xmalloc queue");
    producers_left = np;
    role *roles = calloc((size_t)(np + nc), sizeof *roles);
    pthread_t *tids = calloc((size_t)(np + nc), sizeof *tids);
    if (!roles || !tids) bench_fail("xmalloc: setup allocation failed");
    double t0 = bench_now();
    for (long i = 0; i < np + nc; i++) {
        roles[i].id = i + 1;
        bench_spawn(&tids[i], i < np ? producer : consumer, &roles[i]);
    }
    for (long i = 0; i < np + nc; i++) pthread_join(tids[i], NULL);
    double dt = bench_now() - t0;

    uint64_t made_sum = 0, made = 0, freed_sum = 0, freed = 0;
    for (long i = 0; i < np; i++) made_sum += roles[i].sum, made += roles[i].count;
    for (long i = np; i < np + nc; i++) freed_sum += roles[i].sum, freed += roles[i].count;
    if (made != freed || made_sum != freed_sum || q_len != 0)
        bench_fail("xmalloc: produced %llu blocks (sum %#llx), consumed %llu (sum %#llx)",
                   (unsigned long long)made, (unsigned long long)made_sum,
                   (unsigned long long)freed, (unsigned long long)freed_sum);
    free(queue_items);
    free(roles);
    free(tids);
    printf("xmalloc: %ld producers, %ld consumers, %llu blocks of %ld-%ld B: %.0f blocks/s, "
           "checks ok\n",
           np, nc, (unsigned long long)made, min_size, max_size, (double)made / dt);
    return 0;
}
