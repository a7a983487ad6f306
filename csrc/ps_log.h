/*
 * ps_log.h - the on-disk log of one scope: format, append, recovery scan.
 *
 * The format (header blocks, salted records, the end hint, how a log
 * comes to exist under its name) is described in one place,
 * docs/format.md; the numbers below are its numbers. Why it is so, in
 * short: every check is seeded with a salt drawn per file, so no key or
 * value can pass for a record of this log; the header block is written
 * twice and checked on its own, so a damaged header is told from a log
 * never written; and the end hint tells zeros that were never written
 * (preallocation) from records that are gone.
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
