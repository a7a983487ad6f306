/*
 * ps_hash.c - secret generation for ps_hash (see ps_hash.h for why).
 */
#include "ps_hash.h"

#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

uint64_t ps_random_u64(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) == (ssize_t)sizeof seed && seed)
        return seed;
    /* No usable OS randomness (very old kernel or a seccomp jail): fall back
     * to the clock and an address; weaker, but still unknown to a remote
     * attacker. */
    static _Atomic uint64_t calls; /* two calls in one clock tick still differ */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&ts ^
           (++calls * 0x9e3779b97f4a7c15u);
    return seed ? seed : 0x9e3779b97f4a7c15u;
}

void ps_hasher_init(ps_hasher *h, uint64_t seed)
{
    if (!seed)
        seed = ps_random_u64();
    /* generateSecret spreads every bit of the seed over the whole secret,
     * which a raw 64-bit value copied into the buffer would not do. */
#if XXH_VERSION_NUMBER >= 801
    XXH3_generateSecret(h->secret, sizeof h->secret, &seed, sizeof seed);
#else
    /* xxHash 0.8.0 (still some distributions' header) always writes
     * XXH3_SECRET_DEFAULT_SIZE bytes and takes no size. */
    _Static_assert(PS_HASH_SECRET_SIZE == XXH3_SECRET_DEFAULT_SIZE, "secret size");
    XXH3_generateSecret(h->secret, &seed, sizeof seed);
#endif
}
