/*
 * ps_shm.h - what the processes sharing a store directory share: the
 * LOCK file, mapped into each of them.
 *
 * Each process keeps its own in-memory copy of the scopes it reads and
 * follows the logs as others append to them. For that it needs, per scope,
 * where that scope's log ends right now and which file holds it, and a
 * lock for appending. Both live in one slot per scope in the LOCK file:
 *
 *   state   one 64-bit word: (generation << 44) | end. `end` is the offset
 *           just past the last record anyone has published; a writer
 *           stores it (release) after the record's bytes are in place, so
 *           a reader that loads it (acquire) may read every byte before
 *           it and must trust none after. The generation changes with the
 *           file: odd while a log is being created, replaced (compaction)
 *           or removed, even when that is done; end 0 with an even
 *           generation means the scope has no log. One word, so a reader
 *           never pairs one file's end with another file.
 *   mu      a robust, process-shared mutex: held to append, create,
 *           compact or remove the scope's log. If its holder dies, the
 *           next locker is told (EOWNERDEAD) and repairs the slot; the
 *           kernel, not the holder, makes that happen.
 *
 * Slots are found by a keyed 128-bit hash of the scope name (the key is
 * drawn when the file is set up, so names cannot be chosen to collide) in
 * open-addressing tables that the file grows by; a slot, once given to a
 * scope, stays its until the next time one process has the directory to
 * itself, which sets the whole file up afresh. Walking the slots lets a
 * process find scopes others created without reading the directory.
 *
 * Who is alone is decided by an open-file-description lock on the LOCK
 * file's first byte (ps_dir.h): the kernel drops it when its holder dies.
 */
#ifndef PS_SHM_H
#define PS_SHM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define PS_SHM_SLOTS (64u * 4095u) /* scopes one shared session can name */
#define PS_SHM_END_BITS 44        /* a log's end: up to 16 TiB */
#define PS_SHM_END_MASK (((uint64_t)1 << PS_SHM_END_BITS) - 1)

static inline uint64_t ps_shm_word(uint64_t gen, uint64_t end)
{
    return (gen << PS_SHM_END_BITS) | end;
}
static inline uint64_t ps_shm_gen(uint64_t w)
{
    return w >> PS_SHM_END_BITS;
}
static inline uint64_t ps_shm_end(uint64_t w)
{
    return w & PS_SHM_END_MASK;
}

typedef struct ps_shm_slot {
    _Atomic uint32_t used;  /* 0: free; 1: the fields below are set */
    uint32_t twin;          /* the log's name: <fhash>.log, or <fhash>-<twin>.log */
    uint64_t key[2];        /* keyed XXH3-128 of the scope name */
    uint64_t fhash;         /* XXH3-64 of the scope name: the log's name */
    _Atomic uint64_t state; /* (generation << 44) | end, see above */
    pthread_mutex_t mu;
    unsigned char pad[128 - 40 - sizeof(pthread_mutex_t)];
} ps_shm_slot;

/* A process's view of the mapped file. */
typedef struct ps_shm {
    int fd;
    int writable;      /* mapped read-write: locks can be taken */
    unsigned char *map;
    size_t size;
    uint64_t seed;     /* the file's hash key */
} ps_shm;

/* Set the LOCK file (descriptor fd, opened read-write, held by a process
 * alone) up afresh, and map it. Returns 0 or an errno. */
int ps_shm_create(ps_shm *s, int fd);

/* Map the LOCK file set up by another process. writable: fd is read-write
 * (locks can be taken). Returns 0, ENOENT (the file is not set up: a
 * store last opened by an older version, or only read since) or another
 * errno. */
int ps_shm_attach(ps_shm *s, int fd, int writable);

/* Unmap (the descriptor stays the caller's). */
void ps_shm_detach(ps_shm *s);

/* The slot of the scope `name`, or NULL when none was given to it. */
ps_shm_slot *ps_shm_find(const ps_shm *s, const void *name, size_t nlen);

/* The slot of `name`, given to it now if it had none (fhash: its log's
 * name). Returns NULL with *err set (ENOSPC: every slot is taken). */
ps_shm_slot *ps_shm_claim(ps_shm *s, const void *name, size_t nlen, uint64_t fhash, int *err);

/* Slots in the file now (used or not), and the i-th of them if it is
 * used (NULL if free). */
uint32_t ps_shm_slots(const ps_shm *s);
ps_shm_slot *ps_shm_slot_at(const ps_shm *s, uint32_t i);

/* The slot's index (0 .. PS_SHM_SLOTS-1). */
uint32_t ps_shm_slot_index(const ps_shm *s, const ps_shm_slot *slot);

/* Does slot belong to `name`? */
int ps_shm_owns(const ps_shm *s, const ps_shm_slot *slot, const void *name, size_t nlen);

/* Lock a slot. Returns 0, or 1 when the previous holder died holding it
 * (the caller now holds it and must repair what it may have left half
 * done: ps_shm_mark_consistent afterwards), or an errno. */
int ps_shm_lock(ps_shm_slot *slot);
void ps_shm_mark_consistent(ps_shm_slot *slot);
void ps_shm_unlock(ps_shm_slot *slot);

#endif /* PS_SHM_H */
