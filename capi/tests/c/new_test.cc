// C++'s operator new and delete through libsmpalloc: every form, alignment, the
// nothrow forms' null, and containers used from threads. Run under LD_PRELOAD or linked with
// libsmpalloc.a; exit status 0: pass.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <map>
#include <new>
#include <string>
#include <thread>
#include <vector>

static int failures;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            std::fprintf(stderr, "new_test: %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                         #cond);                                                       \
            __atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);                        \
        }                                                                              \
    } while (0)

static bool aligned(const void *p, std::size_t a) { return (reinterpret_cast<std::uintptr_t>(p) & (a - 1)) == 0; }

static volatile std::size_t huge = SIZE_MAX / 4;

struct alignas(64) Line {
    char bytes[64];
};

struct alignas(8192) Big {
    char bytes[100];
};

int main() {
    // Plain, array, sized.
    for (std::size_t n : {0, 1, 16, 100, 4096, 70000, 1 << 20}) {
        void *p = ::operator new(n);
        CHECK(p != nullptr && aligned(p, 16) && malloc_usable_size(p) >= n);
        std::memset(p, 1, n);
        ::operator delete(p);
        p = ::operator new[](n);
        CHECK(p != nullptr && malloc_usable_size(p) >= n);
        std::memset(p, 2, n);
        ::operator delete[](p);
        p = ::operator new(n);
        ::operator delete(p, n);
        p = ::operator new[](n);
        ::operator delete[](p, n);
        p = ::operator new(n, std::nothrow);
        CHECK(p != nullptr);
        ::operator delete(p, std::nothrow);
        p = ::operator new[](n, std::nothrow);
        CHECK(p != nullptr);
        ::operator delete[](p, std::nothrow);
    }
    // Aligned (up to above a page).
    for (std::size_t a : {32, 64, 4096, 8192, 1 << 21}) {
        std::align_val_t al{a};
        void *p = ::operator new(100, al);
        CHECK(p != nullptr && aligned(p, a));
        ::operator delete(p, al);
        p = ::operator new[](5000, al);
        CHECK(p != nullptr && aligned(p, a));
        ::operator delete[](p, al);
        p = ::operator new(100, al);
        ::operator delete(p, 100, al);
        p = ::operator new[](100, al);
        ::operator delete[](p, 100, al);
        p = ::operator new(100, al, std::nothrow);
        CHECK(p != nullptr && aligned(p, a));
        ::operator delete(p, al, std::nothrow);
        p = ::operator new[](100, al, std::nothrow);
        CHECK(p != nullptr && aligned(p, a));
        ::operator delete[](p, al, std::nothrow);
    }
    Line *l = new Line[10];
    CHECK(aligned(l, 64));
    delete[] l;
    Big *b = new Big;
    CHECK(aligned(b, 8192));
    delete b;
    // nothrow: null when out of memory (no abort).
    CHECK(::operator new(huge, std::nothrow) == nullptr);
    CHECK(::operator new[](huge, std::nothrow) == nullptr);
    CHECK(::operator new(huge, std::align_val_t{64}, std::nothrow) == nullptr);
    // Containers from threads, destroyed on other threads.
    std::vector<std::map<int, std::string>> maps(8);
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; t++) {
        threads.emplace_back([t, &maps] {
            for (int i = 0; i < 20000; i++) maps[t][i] = std::string(i % 90, char('a' + t));
        });
    }
    for (auto &t : threads) t.join();
    threads.clear();
    for (int t = 0; t < 8; t++) {
        threads.emplace_back([t, &maps] {
            auto &m = maps[(t + 1) % 8];
            for (int i = 0; i < 20000; i++) CHECK(m[i].size() == std::size_t(i % 90));
            m.clear();
        });
    }
    for (auto &t : threads) t.join();
    if (failures) {
        std::fprintf(stderr, "new_test: %d checks failed\n", failures);
        return 1;
    }
    std::printf("new_test: ok\n");
    return 0;
}
