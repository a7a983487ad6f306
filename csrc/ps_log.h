/*
 * ps_log.h - the on-disk log of one scope: format, append, recovery scan.
 *
 * A log file is a header followed by records, all little-endian, packed
 * (format version 2):
 *
 *   header   block (32) | copy of block (32) | end u64 | scope name (name_len)
 *   block    magic "PSLOG\r\n\x1a" (8) | version u16 | flags u16 |
 *            name_len u32 | salt u64 | name_check u32 | check u32
 *   record   check u32 | len u32 | seq u64 | kind u8 | flags u8 | tag u16 |
 *            payload (len bytes): klen as LEB128 varint | key | value
 *
 * Checks are the low 32 bits of XXH3-64. A block's `check` covers the 28
 * bytes before it (seed 0), so the block, name_len and salt included, is
 * known good on its own, before the name is even read; `name_check`
 * covers the name, seeded with the salt. The block is written twice, so
 * one damaged copy (a flipped bit, a torn sector) does not make the log
 * unreadable: opening refuses it as damaged, and repair salvages it from
 * the other copy.
 *
 * `salt` is 64 random bits drawn when the file is written. A record's
 * check covers every byte after it, seeded with the salt; its `tag` is 16
 * bits of the salted hash of len, seq, kind and flags alone, so that a
 * search through damaged bytes rejects a candidate without hashing the
 * payload it claims. Keys and values
 * are arbitrary bytes, so they can hold the image of a complete record;
 * without the salt nobody can compute a check this log would accept, so
 * recovery, which searches damaged logs for records, never takes user data
 * for one. Data of another log (an older generation of this one included)
 * does not verify either.
 *
 * `end` is an offset in its low 48 bits with 16 bits of its salted hash
 * above them (a damaged hint reads as unknown). Logs of sync modes interval and never grow
 * in preallocated, zero-filled steps (see ps_disk.c), so after a crash a
 * log may end in zeros that were never written; there `end` is the offset
 * where the last record appended so far ends, kept up to date by every
 * append (a store into the mapped header: no system call), and zeros from
 * a point at or past it are that space. Zeros (or anything else) before
 * it are records that are gone, and are reported as cut, never passed
 * over. A sync=always log holds no preallocated space, and says so with
 * end = PS_LOG_NO_PREALLOC, written once, before its first record is
 * acknowledged: then anything after the last whole record, zeros
 * included, is records lost, and no append has to rewrite the header
 * (which would cost every fdatasync a second block).
 *
 * A record's seq is 1 for the first record of the file and grows by one
 * per record, so a record out of place is as invalid as a bad checksum.
 * kind is PS_REC_PUT (key and value) or PS_REC_DEL (key, no value); 0 is
 * never valid, so zero-filled space reads as damage. Flags are 0.
 *
 * The header carries the scope's real name, so file names can be anything
 * safe (ps_disk.c derives them from a hash) and never need decoding.
 *
 * A log file only ever appears under its name complete: its header is
 * written to a temporary file, made durable, then renamed into place, so
 * a log whose header does not parse is damage, never a log still being
 * created.
 *
 * A record is appended whole before the store changes: copied into the
 * mapped, preallocated end of the file (space that posix_fallocate has
 * already secured, so the copy cannot fail), or with sync=always written
 * with pwrite, where one that fails or comes up short is cut back off
 * with ftruncate (ps_file_append). So a live process never leaves a
 * partial record behind; only a crash of the machine can, and recovery
 * treats it as a torn tail.
 */
#ifndef PS_LOG_H
#define PS_LOG_H

#include <stddef.h>
#include <stdint.h>

#define PS_LOG_MAGIC "PSLOG\r\n\x1a"
#define PS_LOG_VERSION 2
#define PS_LOG_BLOCK 32        /* one copy of the header block */
#define PS_LOG_END_OFFSET 64   /* where the end hint is */
#define PS_LOG_FIXED_HEADER 72 /* header bytes before the name */
#define PS_REC_HEADER 20       /* record bytes before the payload */
#define PS_LOG_NO_PREALLOC (((uint64_t)1 << 48) - 1) /* end hint: no preallocated space follows */

enum ps_rec_kind { PS_REC_PUT = 1, PS_REC_DEL = 2 };

/* ---- format ---------------------------------------------------------------- */

static inline size_t ps_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Bytes of a record holding a key and a value (vlen 0 for a delete). */
static inline size_t ps_rec_size(size_t klen, size_t vlen)
{
    return PS_REC_HEADER + ps_varint_size(klen) + klen + vlen;
}

/* Largest payload a record can hold (len is a u32). */
#define PS_REC_MAX_PAYLOAD ((uint64_t)UINT32_MAX)

/* Write a record of the log salted `salt` into buf, which holds
 * ps_rec_size(klen, vlen) bytes. */
void ps_rec_encode(unsigned char *buf, uint64_t salt, int kind, uint64_t seq, const void *key,
                   size_t klen, const void *value, size_t vlen);

/* The same record's first bytes only (header and key length, at most
 * PS_REC_HEADER + 10), checksum included: the caller writes key and value
 * after them itself, so a big value is never copied. Returns the count. */
size_t ps_rec_encode_head(unsigned char *buf, uint64_t salt, int kind, uint64_t seq,
                          const void *key, size_t klen, const void *value, size_t vlen);

/* A record as parsed: pointers into the buffer it was parsed from. */
typedef struct ps_rec {
    int kind;
    uint64_t seq;
    const unsigned char *key;
    size_t klen;
    const unsigned char *value;
    size_t vlen;
    size_t size; /* header + payload */
} ps_rec;

/* Parse the record at p, with n bytes available, in a log salted `salt`.
 * Returns 1 and fills *r when a whole, valid record is there (seq is not
 * checked: the caller knows what it expects), else 0. */
int ps_rec_parse(const unsigned char *p, size_t n, uint64_t salt, ps_rec *r);

/* Size of the header for a name of nlen bytes. */
static inline size_t ps_log_header_size(size_t nlen)
{
    return PS_LOG_FIXED_HEADER + nlen;
}

/* Write the PS_LOG_FIXED_HEADER bytes that precede the name (end hint 0)
 * into buf; the name itself is only read, for its check. */
void ps_log_header_encode_fixed(unsigned char *buf, const void *name, size_t nlen, uint64_t salt);

/* The whole header, name included, into buf (ps_log_header_size bytes). */
void ps_log_header_encode(unsigned char *buf, const void *name, size_t nlen, uint64_t salt);

/* A header as parsed. */
typedef struct ps_loghdr {
    uint64_t salt;
    const unsigned char *name; /* into the parsed buffer */
    size_t nlen;
    size_t size;     /* header bytes: where the first record starts */
    int block_ok;    /* a copy of the block is intact: salt and nlen known */
    int copy_damaged;/* one copy of the block is damaged, the other was used */
} ps_loghdr;

/* Parse a header from the first n bytes of a file. Returns
 *   PS_OK          header intact; h->copy_damaged says whether only one
 *                  copy of the block was (the log is then damaged, but
 *                  everything in it is readable)
 *   PS_BADVERSION  a log of another format version
 *   PS_CORRUPT     neither copy of the block is intact (h->block_ok 0), or
 *                  the name is damaged or cut short (h->block_ok 1: salt,
 *                  nlen and size are known, name is not). */
int ps_log_header_parse(const unsigned char *p, size_t n, ps_loghdr *h);

/* The end hint of a header (p: a whole header) of a log salted `salt`,
 * into *end. Returns 1, or 0 when the hint is damaged (*end is then
 * meaningless). */
int ps_log_end_hint(const unsigned char *p, uint64_t salt, uint64_t *end);

/* Store the end hint into a header in place (one aligned store when the
 * address allows, as in a mapped file). */
void ps_log_set_end_hint(unsigned char *p, uint64_t end, uint64_t salt);

/* The 8 bytes of an end hint, for writing it with pwrite. */
void ps_log_end_hint_bytes(unsigned char out[8], uint64_t end, uint64_t salt);

/* ---- recovery scan ------------------------------------------------------------ */

/* What a scan of a log image found. */
typedef struct ps_scan {
    size_t end;          /* offset just past the last valid record of the clean prefix */
    uint64_t next_seq;   /* seq the next record must carry */
    size_t records;      /* valid records in the clean prefix */
    int damaged;         /* 1 when bytes follow `end` that are not records */
    size_t resume;       /* damaged: offset of the first valid record after the
                            damage, or 0 when there is none (a torn tail) */
} ps_scan;

/* Called for every record of the clean prefix, in order. Returning non-0
 * stops the scan with that code. */
typedef int (*ps_rec_fn)(void *ctx, const ps_rec *r);

/* Walk the records of a log image (p, n: the whole file) salted `salt`,
 * header excluded (start: the header's size, first_seq: the seq expected
 * first). Returns 0 or what fn returned. */
int ps_log_scan(const unsigned char *p, size_t n, size_t start, uint64_t first_seq,
                uint64_t salt, ps_rec_fn fn, void *ctx, ps_scan *out);

/* The first offset >= from holding a valid record (any seq) of the log
 * salted `salt`, or 0 when none does. */
size_t ps_log_find_record(const unsigned char *p, size_t n, size_t from, uint64_t salt);

/* ---- files ------------------------------------------------------------------ */

/* Write all n bytes at offset off, or restore the file to `off` bytes and
 * fail: returns 0 or an errno (EIO for a write that made no progress). */
int ps_file_append(int fd, const void *buf, size_t n, uint64_t off);

#endif /* PS_LOG_H */
