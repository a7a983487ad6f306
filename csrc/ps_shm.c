/*
 * ps_shm.c - the LOCK file as shared memory (see ps_shm.h).
 *
 * Layout: one header page, then segments of slots, each twice the size of
 * the one before (64, 128, ...). A scope's slot is looked for in each
 * segment in turn (open addressing within one); a new one goes into the
 * last, and when that is half full a segment is added. The file grows by
 * whole segments, allocated (posix_fallocate) before the header counts
 * them, so it takes space as scopes come, and a full disk is an ENOSPC
 * from the call that needed a slot, never a SIGBUS from touching a page
 * with nothing behind it.
 */
#include "ps_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ps_hash.h"
#include "pystate.h"

#define SHM_MAGIC "PSSHM\r\n\x1a"
#define SHM_VERSION 2
#define PAGE 4096u
#define SEG0 64u    /* slots in the first segment; each next one doubles */
#define MAX_SEGS 12 /* 64 * (2^12 - 1) = 262,080 slots */
#define SEG_OFF(k) (PAGE + (size_t)SEG0 * (((size_t)1 << (k)) - 1) * sizeof(ps_shm_slot))
#define MAX_SIZE SEG_OFF(MAX_SEGS)

_Static_assert(sizeof(ps_shm_slot) == 128, "a slot is two cache lines");

typedef struct header {
    char magic[8];
    uint32_t version;
    uint32_t slot_size;
    uint64_t seed;
    _Atomic uint32_t segs;  /* segments in the file, each backed by disk */
    uint32_t reserved;
    uint32_t seg_used[MAX_SEGS]; /* under reg_mu: slots given out per segment */
    pthread_mutex_t reg_mu; /* held to give out a slot or add a segment */
} header;

_Static_assert(sizeof(header) <= PAGE, "the header fits its page");

static header *hdr(const ps_shm *s)
{
    return (header *)s->map;
}

static ps_shm_slot *segment(const ps_shm *s, unsigned k)
{
    return (ps_shm_slot *)(s->map + SEG_OFF(k));
}

static int init_mutex(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (rc)
        return rc;
    rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!rc)
        rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!rc)
        rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}

/* Make the file `size` bytes long, every byte backed by disk: a store into
 * (or, on tmpfs, even a read of) a page with no space behind it would be
 * a SIGBUS. */
static int grow(int fd, size_t from, size_t size)
{
    if (ftruncate(fd, (off_t)size) != 0)
        return errno;
    int rc = posix_fallocate(fd, (off_t)from, (off_t)(size - from));
    if (rc == EOPNOTSUPP || rc == ENOSYS)
        rc = 0; /* (then holes are all the file system has) */
    if (rc)
        while (ftruncate(fd, (off_t)from) != 0 && errno == EINTR)
            ;
    return rc;
}

static int map_all(ps_shm *s, int fd, int writable)
{
    /* The whole range the file may grow to: only what the header says
     * exists is ever touched. */
    void *m = mmap(NULL, MAX_SIZE, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        return errno;
    s->fd = fd;
    s->map = m;
    s->size = MAX_SIZE;
    s->writable = writable;
    return 0;
}

int ps_shm_create(ps_shm *s, int fd)
{
    memset(s, 0, sizeof *s);
    /* Truncating to zero first discards whatever an earlier session left,
     * dead processes' mutexes included. */
    if (ftruncate(fd, 0) != 0)
        return errno;
    int rc = grow(fd, 0, SEG_OFF(1));
    if (!rc)
        rc = map_all(s, fd, 1);
    if (rc)
        return rc;
    header *h = hdr(s);
    h->version = SHM_VERSION;
    h->slot_size = sizeof(ps_shm_slot);
    h->seed = s->seed = ps_random_u64();
    atomic_store(&h->segs, 1);
    rc = init_mutex(&h->reg_mu);
    if (rc) {
        ps_shm_detach(s);
        return rc;
    }
    memcpy(h->magic, SHM_MAGIC, 8);
    return 0;
}

int ps_shm_attach(ps_shm *s, int fd, int writable)
{
    memset(s, 0, sizeof *s);
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return errno;
    if ((uint64_t)sb.st_size < SEG_OFF(1))
        return ENOENT;
    int rc = map_all(s, fd, writable);
    if (rc)
        return rc;
    header *h = hdr(s);
    if (memcmp(h->magic, SHM_MAGIC, 8) != 0 || h->version != SHM_VERSION ||
        h->slot_size != sizeof(ps_shm_slot) || atomic_load(&h->segs) < 1 ||
        atomic_load(&h->segs) > MAX_SEGS || (uint64_t)sb.st_size < SEG_OFF(atomic_load(&h->segs))) {
        ps_shm_detach(s);
        return ENOENT;
    }
    s->seed = h->seed;
    return 0;
}

void ps_shm_detach(ps_shm *s)
{
    if (s->map)
        munmap(s->map, s->size);
    s->map = NULL;
    s->size = 0;
}

static void key_of(const ps_shm *s, const void *name, size_t nlen, uint64_t key[2])
{
    XXH128_hash_t h = XXH3_128bits_withSeed(name, nlen, s->seed);
    key[0] = h.low64;
    key[1] = h.high64;
}

/* Probe segment k for key: its slot; or NULL, with the first free slot of
 * the probe in *free_at (NULL when the segment is full). */
static ps_shm_slot *probe_seg(const ps_shm *s, unsigned k, const uint64_t key[2], ps_shm_slot **free_at)
{
    ps_shm_slot *v = segment(s, k);
    uint32_t n = SEG0 << k, mask = n - 1;
    *free_at = NULL;
    for (uint32_t i = (uint32_t)(key[0] >> 7) & mask, j = 0; j < n; i = (i + 1) & mask, j++) {
        if (!atomic_load_explicit(&v[i].used, memory_order_acquire)) {
            *free_at = &v[i];
            return NULL;
        }
        if (v[i].key[0] == key[0] && v[i].key[1] == key[1])
            return &v[i];
    }
    return NULL;
}

static ps_shm_slot *probe(const ps_shm *s, const uint64_t key[2], ps_shm_slot **free_at, unsigned *last)
{
    unsigned segs = atomic_load_explicit(&hdr(s)->segs, memory_order_acquire);
    ps_shm_slot *f = NULL;
    for (unsigned k = 0; k < segs; k++) {
        ps_shm_slot *hit = probe_seg(s, k, key, &f);
        if (hit)
            return hit;
    }
    if (free_at)
        *free_at = f; /* in the last segment */
    if (last)
        *last = segs - 1;
    return NULL;
}

ps_shm_slot *ps_shm_find(const ps_shm *s, const void *name, size_t nlen)
{
    uint64_t key[2];
    key_of(s, name, nlen, key);
    return probe(s, key, NULL, NULL);
}

int ps_shm_owns(const ps_shm *s, const ps_shm_slot *slot, const void *name, size_t nlen)
{
    uint64_t key[2];
    key_of(s, name, nlen, key);
    return slot->key[0] == key[0] && slot->key[1] == key[1];
}

ps_shm_slot *ps_shm_claim(ps_shm *s, const void *name, size_t nlen, uint64_t fhash, int *err)
{
    uint64_t key[2];
    key_of(s, name, nlen, key);
    ps_shm_slot *slot = probe(s, key, NULL, NULL);
    if (slot)
        return slot;
    if (!s->writable) {
        *err = PS_READONLY;
        return NULL;
    }
    header *h = hdr(s);
    int rc = pthread_mutex_lock(&h->reg_mu);
    if (rc == EOWNERDEAD) {
        /* A claimer died: its slot is either whole (used) or free. */
        pthread_mutex_consistent(&h->reg_mu);
        rc = 0;
    }
    if (rc) {
        *err = rc;
        return NULL;
    }
    ps_shm_slot *free_at = NULL;
    unsigned last = 0;
    slot = probe(s, key, &free_at, &last); /* someone may have claimed it meanwhile */
    if (!slot && (!free_at || h->seg_used[last] * 2 >= (SEG0 << last))) {
        /* The last segment is half full: add one twice its size. */
        if (last + 1 >= MAX_SEGS) {
            rc = ENOSPC;
        } else if ((rc = grow(s->fd, SEG_OFF(last + 1), SEG_OFF(last + 2))) == 0) {
            atomic_store_explicit(&h->segs, last + 2, memory_order_release);
            (void)probe_seg(s, ++last, key, &free_at);
        }
    }
    if (!slot && !rc) {
        rc = init_mutex(&free_at->mu);
        if (!rc) {
            h->seg_used[last]++;
            free_at->key[0] = key[0];
            free_at->key[1] = key[1];
            free_at->fhash = fhash;
            free_at->twin = 0;
            atomic_store(&free_at->state, 0);
            atomic_store_explicit(&free_at->used, 1, memory_order_release);
            slot = free_at;
        }
    }
    pthread_mutex_unlock(&h->reg_mu);
    if (!slot)
        *err = rc;
    return slot;
}

uint32_t ps_shm_slots(const ps_shm *s)
{
    unsigned segs = atomic_load_explicit(&hdr(s)->segs, memory_order_acquire);
    return SEG0 * ((1u << segs) - 1);
}

ps_shm_slot *ps_shm_slot_at(const ps_shm *s, uint32_t i)
{
    /* Segments are contiguous, so index i is the i-th slot of the file. */
    ps_shm_slot *v = segment(s, 0) + i;
    return atomic_load_explicit(&v->used, memory_order_acquire) ? v : NULL;
}

uint32_t ps_shm_slot_index(const ps_shm *s, const ps_shm_slot *slot)
{
    return (uint32_t)(slot - segment(s, 0));
}

int ps_shm_lock(ps_shm_slot *slot)
{
    int rc = pthread_mutex_lock(&slot->mu);
    if (rc == EOWNERDEAD)
        return 1;
    return rc;
}

void ps_shm_mark_consistent(ps_shm_slot *slot)
{
    pthread_mutex_consistent(&slot->mu);
}

void ps_shm_unlock(ps_shm_slot *slot)
{
    pthread_mutex_unlock(&slot->mu);
}
