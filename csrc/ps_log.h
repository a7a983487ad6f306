/*
 * ps_log.h - the on-disk log of one scope: format, append, recovery scan.
 *
 * A log file is a header followed by records, all little-endian, packed:
 *
 *   header   magic "PSLOG\r\n\x1a" (8) | version u16 | flags u16 |
 *            name_len u32 | check u32 | end u64 | scope name (name_len bytes)
 *   record   check u32 | len u32 | seq u64 | kind u8 | flags u8 |
 *            payload (len bytes): klen as LEB128 varint | key | value
 *
 * `check` is the low 32 bits of XXH3-64 (seed 0): in the header over the
 * bytes before it plus the name, in a record over every byte after it.
 * `end` is a hint, not covered by the check: the offset where the last
 * record appended so far ends (0 until the first). Logs grow in
 * preallocated, zero-filled steps (see ps_disk.c), so after a crash a log
 * may end in zeros that were never written; zeros from a point at or past
 * the hint are that space, and are dropped silently; anything else after
 * the last valid record is a torn tail. A
 * record's seq is 1 for the first record of the file and grows by one per
 * record, so a record out of place is as invalid as a bad checksum. kind
 * is PS_REC_PUT (key and value) or PS_REC_DEL (key, no value); 0 is never
 * valid, so zero-filled space reads as damage. Flags are 0 in version 1.
 *
 * The header carries the scope's real name, so file names can be anything
 * safe (ps_disk.c derives them from a hash) and never need decoding.
 *
 * A record is appended whole before the store changes: copied into the
 * mapped, preallocated end of the file (space that posix_fallocate has
 * already secured, so the copy cannot fail), or with sync=always written
 * with pwrite, where one that fails or comes up short is cut back off
 * with ftruncate (ps_file_append). So a
 * live process never leaves a partial record behind; only a crash of the
 * machine can, and recovery treats it as a torn tail.
 */
#ifndef PS_LOG_H
#define PS_LOG_H

#include <stddef.h>
#include <stdint.h>

#define PS_LOG_MAGIC "PSLOG\r\n\x1a"
#define PS_LOG_VERSION 1
#define PS_LOG_FIXED_HEADER 28 /* header bytes before the name */
#define PS_LOG_END_OFFSET 20   /* where the end hint is */
#define PS_REC_HEADER 18       /* record bytes before the payload */

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

/* Write a record into buf, which holds ps_rec_size(klen, vlen) bytes. */
void ps_rec_encode(unsigned char *buf, int kind, uint64_t seq, const void *key,
                   size_t klen, const void *value, size_t vlen);

/* The same record's first bytes only (header and key length, at most
 * PS_REC_HEADER + 10), checksum included: the caller writes key and value
 * after them itself, so a big value is never copied. Returns the count. */
size_t ps_rec_encode_head(unsigned char *buf, int kind, uint64_t seq, const void *key,
                          size_t klen, const void *value, size_t vlen);

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

/* Parse the record at p, with n bytes available. Returns 1 and fills *r
 * when a whole, valid record is there (seq is not checked: the caller
 * knows what it expects), else 0. */
int ps_rec_parse(const unsigned char *p, size_t n, ps_rec *r);

/* Size of the header for a name of nlen bytes. */
static inline size_t ps_log_header_size(size_t nlen)
{
    return PS_LOG_FIXED_HEADER + nlen;
}

void ps_log_header_encode(unsigned char *buf, const void *name, size_t nlen);

/* Parse a header from the first n bytes of a file. Returns PS_OK and sets
 * *name, *nlen and *size; PS_BADVERSION for a log of another format
 * version; PS_CORRUPT when it is not a valid header. */
int ps_log_header_parse(const unsigned char *p, size_t n, const unsigned char **name,
                        size_t *nlen, size_t *size);

/* The end hint of a header (p: a whole header). */
uint64_t ps_log_end_hint(const unsigned char *p);

/* Store the end hint into a header in place. */
void ps_log_set_end_hint(unsigned char *p, uint64_t end);

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

/* Walk the records of a log image (p, n: the whole file), header excluded
 * (start: the header's size, first_seq: the seq expected first). Returns 0
 * or what fn returned. */
int ps_log_scan(const unsigned char *p, size_t n, size_t start, uint64_t first_seq,
                ps_rec_fn fn, void *ctx, ps_scan *out);

/* The first offset >= from holding a valid record (any seq), or 0 when
 * none does. */
size_t ps_log_find_record(const unsigned char *p, size_t n, size_t from);

/* ---- files ------------------------------------------------------------------ */

/* Write all n bytes at offset off, or restore the file to `off` bytes and
 * fail: returns 0 or an errno (EIO for a write that made no progress). */
int ps_file_append(int fd, const void *buf, size_t n, uint64_t off);

#endif /* PS_LOG_H */
