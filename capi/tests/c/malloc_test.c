/* The C library's test: every exported C function and its glibc 2.36 semantics,
 * threads freeing each other's blocks, fork from a threaded program with allocation in the
 * child, and a first allocation after 40 pthread keys (glibc's pthread_setspecific then
 * callocs while the thread binds its cache: the heap must not recurse).
 *
 * Run as `malloc_test preload` under LD_PRELOAD=libsmpalloc.so, or `malloc_test static` when
 * linked with libsmpalloc.a: it first checks that malloc is smpalloc's. Exit status 0: pass. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

/* A failed realloc leaves the block valid: the test reads it on purpose. */
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wuse-after-free"

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "malloc_test: %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                            \
            __atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);                        \
        }                                                                              \
    } while (0)

#define ALIGNED(p, a) (((uintptr_t)(p) & ((a) - 1)) == 0)

/* Volatile sizes, so the compiler cannot fold calls with impossible sizes away. */
static volatile size_t huge = SIZE_MAX - 4096;
static volatile size_t half = SIZE_MAX / 2 + 2;
static volatile size_t max_half = SIZE_MAX / 2;
static volatile size_t three = 3;

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 7);
}

static int filled(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 7)) return 0;
    return 1;
}

/* ---- the first allocation after many pthread keys (R1) -------------------------------- */

static void *first_alloc(void *arg) {
    (void)arg;
    void *p = malloc(40);
    CHECK(p != NULL);
    free(p);
    return NULL;
}

static void test_keys_first(void) {
    pthread_key_t keys[40];
    for (int i = 0; i < 40; i++) CHECK(pthread_key_create(&keys[i], NULL) == 0);
    first_alloc(NULL);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, first_alloc, NULL) == 0);
    CHECK(pthread_join(t, NULL) == 0);
}

/* ---- which malloc is this ------------------------------------------------------------- */

static void test_is_smpalloc(const char *mode) {
    Dl_info info;
    void *self = dlopen(NULL, RTLD_NOW);
    CHECK(dladdr((void *)(uintptr_t)&malloc, &info) != 0);
    if (strcmp(mode, "preload") == 0) {
        CHECK(info.dli_fname && strstr(info.dli_fname, "libsmpalloc") != NULL);
    } else {
        /* Linked statically: malloc is in the executable, not in libc. */
        CHECK(info.dli_fname && strstr(info.dli_fname, "libc.so") == NULL);
    }
    /* malloc_trim is exported and runs. */
    int r = malloc_trim(0);
    CHECK(r == 0 || r == 1);
    (void)self;
}

/* ---- C semantics ---------------------------------------------------------------------- */

static void test_malloc_free(void) {
    void *a = malloc(0), *b = malloc(0);
    CHECK(a != NULL && b != NULL && a != b);
    CHECK(ALIGNED(a, 16));
    free(a);
    free(b);
    free(NULL);
    CHECK(malloc_usable_size(NULL) == 0);

    static const size_t sizes[] = {1,     8,     15,    16,     17,     24,      48,
                                   100,   255,   512,   1000,   2048,   4096,    4097,
                                   10000, 65536, 70000, 262144, 300000, 1 << 21, 5000000};
    void *blocks[sizeof sizes / sizeof sizes[0]];
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = malloc(sizes[i]);
        CHECK(p != NULL);
        CHECK(ALIGNED(p, 16));
        CHECK(malloc_usable_size(p) >= sizes[i]);
        fill(p, sizes[i], i);
        blocks[i] = p;
    }
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        CHECK(filled(blocks[i], sizes[i], i));
        free(blocks[i]);
    }

    errno = 0;
    CHECK(malloc(huge) == NULL);
    CHECK(errno == ENOMEM);
}

static void test_calloc(void) {
    static const size_t sizes[] = {1, 24, 1000, 4096, 100000, 300000, 1 << 20};
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        /* Dirty a block of the size first, so that calloc may get it back. */
        unsigned char *d = malloc(sizes[i]);
        CHECK(d != NULL);
        memset(d, 0xAA, sizes[i]);
        free(d);
        unsigned char *p = calloc(1, sizes[i]);
        CHECK(p != NULL);
        size_t nonzero = 0;
        for (size_t k = 0; k < sizes[i]; k++) nonzero += p[k] != 0;
        CHECK(nonzero == 0);
        free(p);
    }
    unsigned char *p = calloc(0, 0);
    CHECK(p != NULL);
    free(p);
    errno = 0;
    CHECK(calloc(max_half, three) == NULL);
    CHECK(errno == ENOMEM);
    errno = 0;
    CHECK(calloc(half, half) == NULL);
    CHECK(errno == ENOMEM);
}

static void test_realloc(void) {
    /* realloc(NULL, n) is malloc(n). */
    unsigned char *p = realloc(NULL, 10);
    CHECK(p != NULL);
    fill(p, 10, 3);
    /* Growth and shrinking keep the contents, across every route. */
    static const size_t steps[] = {100, 4000, 5000, 300000, 3 << 20, 200000, 1000, 16, 7};
    size_t live = 10;
    for (unsigned i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        unsigned char *q = realloc(p, steps[i]);
        CHECK(q != NULL);
        size_t kept = live < steps[i] ? live : steps[i];
        CHECK(filled(q, kept, 3));
        CHECK(malloc_usable_size(q) >= steps[i]);
        fill(q, steps[i], 3);
        p = q;
        live = steps[i];
    }
    /* Out of memory: null, ENOMEM, the block untouched. */
    errno = 0;
    CHECK(realloc(p, huge) == NULL);
    CHECK(errno == ENOMEM);
    CHECK(filled(p, live, 3));
    /* realloc(p, 0) frees p and returns null (glibc), errno untouched. */
    errno = 0;
    CHECK(realloc(p, 0) == NULL);
    CHECK(errno == 0);

    /* reallocarray. */
    p = reallocarray(NULL, 10, 10);
    CHECK(p != NULL);
    fill(p, 100, 5);
    errno = 0;
    CHECK(reallocarray(p, max_half, three) == NULL);
    CHECK(errno == ENOMEM);
    CHECK(filled(p, 100, 5));
    unsigned char *q = reallocarray(p, 1000, 10);
    CHECK(q != NULL);
    CHECK(filled(q, 100, 5));
    free(q);

    /* A block from memalign keeps its contents through realloc and frees with free. */
    p = memalign(4096, 5000);
    CHECK(p != NULL && ALIGNED(p, 4096));
    fill(p, 5000, 9);
    q = realloc(p, 20000);
    CHECK(q != NULL);
    CHECK(filled(q, 5000, 9));
    free(q);
}

static void test_aligned(void) {
    void *p = (void *)1;
    /* posix_memalign: EINVAL for bad alignments, errno and *out untouched. */
    static const size_t bad[] = {0, 1, 2, 3, 4, 12, 24, 48, 4095};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 1234;
        CHECK(posix_memalign(&p, bad[i], 16) == EINVAL);
        CHECK(errno == 1234);
        CHECK(p == (void *)1);
    }
    errno = 1234;
    CHECK(posix_memalign(&p, 64, huge) == ENOMEM);
    CHECK(errno == 1234);
    CHECK(p == (void *)1);

    static const size_t aligns[] = {8, 16, 32, 64, 256, 4096, 8192, 65536, 1 << 21};
    static const size_t sizes[] = {0, 1, 100, 5000, 300000};
    for (unsigned i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        for (unsigned k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t a = aligns[i], n = sizes[k];
            CHECK(posix_memalign(&p, a, n) == 0);
            CHECK(p != NULL && ALIGNED(p, a));
            CHECK(malloc_usable_size(p) >= n);
            memset(p, 1, n);
            free(p);
            p = aligned_alloc(a, n);
            CHECK(p != NULL && ALIGNED(p, a));
            memset(p, 2, n);
            free(p);
            p = memalign(a, n);
            CHECK(p != NULL && ALIGNED(p, a));
            CHECK(malloc_usable_size(p) >= n);
            memset(p, 3, n);
            free(p);
        }
    }
    /* glibc 2.36: memalign and aligned_alloc round an alignment up to a power of two. */
    p = memalign(24, 10);
    CHECK(p != NULL && ALIGNED(p, 32));
    free(p);
    p = aligned_alloc(3000, 10);
    CHECK(p != NULL && ALIGNED(p, 4096));
    free(p);
    errno = 0;
    CHECK(memalign(half, 1) == NULL);
    CHECK(errno == EINVAL);
    errno = 0;
    CHECK(memalign(64, huge) == NULL);
    CHECK(errno == ENOMEM);

    /* valloc and pvalloc: page-aligned; pvalloc rounds the size to pages. */
    p = valloc(10);
    CHECK(p != NULL && ALIGNED(p, 4096));
    free(p);
    p = pvalloc(1);
    CHECK(p != NULL && ALIGNED(p, 4096));
    CHECK(malloc_usable_size(p) >= 4096);
    memset(p, 4, 4096);
    free(p);
    p = pvalloc(0);
    CHECK(p != NULL && ALIGNED(p, 4096));
    free(p);
    errno = 0;
    CHECK(pvalloc(SIZE_MAX - 10) == NULL);
    CHECK(errno == ENOMEM);
}

/* ---- threads: blocks freed by another thread ------------------------------------------ */

#define THREADS 8
#define BLOCKS 4000
#define ROUNDS 6

static unsigned char *slots[THREADS][BLOCKS];
static size_t lens[THREADS][BLOCKS];
static pthread_barrier_t barrier;

static void *cross(void *arg) {
    unsigned id = (unsigned)(uintptr_t)arg;
    unsigned seed = id * 2654435761u;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < BLOCKS; i++) {
            seed = seed * 1103515245u + 12345u;
            size_t n = (seed >> 8) % (i % 50 == 0 ? 20000 : 600);
            unsigned char *p = (i & 1) ? malloc(n) : calloc(1, n);
            CHECK(p != NULL);
            fill(p, n, id + (unsigned)i);
            slots[id][i] = p;
            lens[id][i] = n;
        }
        pthread_barrier_wait(&barrier);
        unsigned from = (id + 1 + (unsigned)round) % THREADS;
        for (int i = 0; i < BLOCKS; i++) {
            CHECK(filled(slots[from][i], lens[from][i], from + (unsigned)i));
            if (i % 3 == 0) {
                unsigned char *q = realloc(slots[from][i], lens[from][i] + 100);
                CHECK(q != NULL);
                CHECK(filled(q, lens[from][i], from + (unsigned)i));
                free(q);
            } else {
                free(slots[from][i]);
            }
        }
        pthread_barrier_wait(&barrier);
    }
    return NULL;
}

static void test_threads(void) {
    pthread_t t[THREADS];
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (unsigned i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, cross, (void *)(uintptr_t)i) == 0);
    for (unsigned i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
}

/* ---- fork from a threaded, allocating program ----------------------------------------- */

static volatile int stop;

static void *churn(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *held[64] = {0};
    while (!stop) {
        seed = seed * 1103515245u + 12345u;
        unsigned k = (seed >> 4) % 64;
        free(held[k]);
        size_t n = (seed >> 12) % ((seed & 15) == 0 ? 400000 : 3000);
        held[k] = (seed & 1) ? malloc(n) : realloc(NULL, n);
    }
    for (int k = 0; k < 64; k++) free(held[k]);
    return NULL;
}

static int child_work(void) {
    int inherited = failures;
    /* Watchdog: a child stuck on a lock held by a thread it does not have dies of SIGALRM. */
    alarm(30);
    void *blocks[2000];
    for (int i = 0; i < 2000; i++) {
        blocks[i] = malloc((size_t)(i * 37 % 9000));
        if (!blocks[i]) return 2;
        memset(blocks[i], 7, (size_t)(i * 37 % 9000));
    }
    for (int i = 0; i < 2000; i++) {
        void *q = realloc(blocks[i], (size_t)(i * 53 % 300000) + 1);
        if (!q) return 3;
        free(q);
    }
    void *p;
    if (posix_memalign(&p, 8192, 100) != 0) return 4;
    free(p);
    pthread_t t;
    if (pthread_create(&t, NULL, first_alloc, NULL) != 0) return 5;
    pthread_join(t, NULL);
    return failures == inherited ? 0 : 6;
}

static void test_fork(void) {
    pthread_t t[4];
    for (unsigned i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1)) == 0);
    for (int i = 0; i < 30; i++) {
        void *before = malloc(100);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) _exit(child_work());
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        free(before);
    }
    stop = 1;
    for (unsigned i = 0; i < 4; i++) pthread_join(t[i], NULL);
}

int main(int argc, char **argv) {
    /* First, before anything here allocates. */
    test_keys_first();
    if (argc != 2 || (strcmp(argv[1], "preload") != 0 && strcmp(argv[1], "static") != 0)) {
        fprintf(stderr, "usage: malloc_test preload|static\n");
        return 2;
    }
    test_is_smpalloc(argv[1]);
    test_malloc_free();
    test_calloc();
    test_realloc();
    test_aligned();
    test_threads();
    test_fork();
    if (failures) {
        fprintf(stderr, "malloc_test: %d checks failed\n", failures);
        return 1;
    }
    printf("malloc_test (%s): ok\n", argv[1]);
    return 0;
}
