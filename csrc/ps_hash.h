/*
 * ps_hash.h - keyed hashing for the hash tables.
 *
 * Tables hash attacker-controlled strings (keys and scope names arrive from
 * the network), so the hash takes a secret that an attacker does not know:
 * without it, nobody can pick keys that all land in one probe chain and make
 * every lookup linear. We use XXH3 with a 192-byte secret derived from 64
 * random bits (XXH3_generateSecret), the mode xxHash documents for this
 * purpose. xxHash is compiled in from its header (CMakeLists.txt defines
 * XXH_INLINE_ALL for the core and all that builds on it), never linked.
 */
#ifndef PS_HASH_H
#define PS_HASH_H

#include <stddef.h>
#include <stdint.h>

#define XXH_STATIC_LINKING_ONLY /* for XXH3_generateSecret */
#include <xxhash.h>

#define PS_HASH_SECRET_SIZE 192

typedef struct ps_hasher {
    unsigned char secret[PS_HASH_SECRET_SIZE];
} ps_hasher;

/* 64 bits from the operating system's random source (never 0). */
uint64_t ps_random_u64(void);

/* Derive the secret from `seed`, or from the OS's random source when seed
 * is 0. */
void ps_hasher_init(ps_hasher *h, uint64_t seed);

static inline uint64_t ps_hash(const ps_hasher *h, const void *p, size_t n)
{
    return XXH3_64bits_withSecret(p, n, h->secret, sizeof h->secret);
}

#endif /* PS_HASH_H */
