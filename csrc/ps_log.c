/*
 * ps_log.c - log format, recovery scan and appends (design in ps_log.h).
 *
 * The checksum lives here and only here: encode computes it, parse checks
 * it, so no caller can write or accept a record without it.
 */
#include "ps_log.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "ps_hash.h"
#include "pystate.h"

static inline void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static inline void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint16_t get_u16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static inline uint32_t check_of(const void *p, size_t n, uint64_t salt)
{
    return (uint32_t)XXH3_64bits_withSeed(p, n, salt);
}

static uint64_t end_word(uint64_t end, uint64_t salt);

/* ---- records ------------------------------------------------------------------ */

/* The record head's own check: 16 bits of the salted hash of len, seq,
 * kind and flags. A search for records in damaged bytes (or in a key full
 * of fake heads) rejects all but 1 in 65,536 candidates with it, before
 * hashing any payload: the search stays linear in the bytes searched. */
static inline uint16_t head_tag(const unsigned char *rec, uint64_t salt)
{
    return (uint16_t)XXH3_64bits_withSeed(rec + 4, 14, salt);
}

/* The fixed head of a record and its key-length varint, all but the check;
 * returns where the key goes. */
static unsigned char *put_head(unsigned char *buf, uint64_t salt, int kind, uint64_t seq,
                               size_t klen, size_t vlen)
{
    put_u32(buf + 4, (uint32_t)(ps_varint_size(klen) + klen + vlen));
    put_u64(buf + 8, seq);
    buf[16] = (unsigned char)kind;
    buf[17] = 0;
    put_u16(buf + 18, head_tag(buf, salt));
    unsigned char *p = buf + PS_REC_HEADER;
    uint64_t k = klen;
    while (k >= 0x80) {
        *p++ = (unsigned char)(k | 0x80);
        k >>= 7;
    }
    *p++ = (unsigned char)k;
    return p;
}

size_t ps_rec_encode_head(unsigned char *buf, uint64_t salt, int kind, uint64_t seq,
                          const void *key, size_t klen, const void *value, size_t vlen)
{
    unsigned char *p = put_head(buf, salt, kind, seq, klen, vlen);
    XXH3_state_t s;
    XXH3_64bits_reset_withSeed(&s, salt);
    XXH3_64bits_update(&s, buf + 4, (size_t)(p - buf) - 4);
    XXH3_64bits_update(&s, key, klen);
    XXH3_64bits_update(&s, value, vlen);
    put_u32(buf, (uint32_t)XXH3_64bits_digest(&s));
    return (size_t)(p - buf);
}

void ps_rec_encode(unsigned char *buf, uint64_t salt, int kind, uint64_t seq, const void *key,
                   size_t klen, const void *value, size_t vlen)
{
    unsigned char *p = put_head(buf, salt, kind, seq, klen, vlen);
    if (klen)
        memcpy(p, key, klen);
    if (vlen)
        memcpy(p + klen, value, vlen);
    put_u32(buf, check_of(buf + 4, (size_t)(p - buf) - 4 + klen + vlen, salt));
}

int ps_rec_parse(const unsigned char *p, size_t n, uint64_t salt, ps_rec *r)
{
    if (n < PS_REC_HEADER)
        return 0;
    size_t len = get_u32(p + 4);
    if (len > n - PS_REC_HEADER || len == 0)
        return 0;
    int kind = p[16];
    if ((kind != PS_REC_PUT && kind != PS_REC_DEL) || p[17] != 0)
        return 0;
    if (get_u16(p + 18) != head_tag(p, salt))
        return 0;
    if (get_u32(p) != check_of(p + 4, PS_REC_HEADER - 4 + len, salt))
        return 0;
    /* The checksum matched, but the payload must still make sense. */
    const unsigned char *q = p + PS_REC_HEADER, *end = q + len;
    uint64_t klen = 0;
    int shift = 0;
    for (;;) {
        if (q == end || shift > 35)
            return 0;
        unsigned char b = *q++;
        klen |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
        shift += 7;
    }
    if (klen > (uint64_t)(end - q))
        return 0;
    size_t vlen = (size_t)(end - q) - (size_t)klen;
    if (kind == PS_REC_DEL && vlen)
        return 0;
    r->kind = kind;
    r->seq = get_u64(p + 8);
    r->key = q;
    r->klen = (size_t)klen;
    r->value = q + klen;
    r->vlen = vlen;
    r->size = PS_REC_HEADER + len;
    return 1;
}

/* ---- header ------------------------------------------------------------------- */

void ps_log_header_encode_fixed(unsigned char *buf, const void *name, size_t nlen, uint64_t salt)
{
    memcpy(buf, PS_LOG_MAGIC, 8);
    put_u16(buf + 8, PS_LOG_VERSION);
    put_u16(buf + 10, 0);
    put_u32(buf + 12, (uint32_t)nlen);
    put_u64(buf + 16, salt);
    put_u32(buf + 24, check_of(name, nlen, salt));
    put_u32(buf + 28, check_of(buf, 28, 0));
    memcpy(buf + PS_LOG_BLOCK, buf, PS_LOG_BLOCK);
    put_u64(buf + PS_LOG_END_OFFSET, end_word(0, salt));
}

void ps_log_header_encode(unsigned char *buf, const void *name, size_t nlen, uint64_t salt)
{
    ps_log_header_encode_fixed(buf, name, nlen, salt);
    if (nlen)
        memcpy(buf + PS_LOG_FIXED_HEADER, name, nlen);
}

static int block_intact(const unsigned char *b)
{
    return memcmp(b, PS_LOG_MAGIC, 8) == 0 && get_u32(b + 28) == check_of(b, 28, 0);
}

int ps_log_header_parse(const unsigned char *p, size_t n, ps_loghdr *h)
{
    memset(h, 0, sizeof *h);
    int a = n >= PS_LOG_BLOCK && block_intact(p);
    int b = n >= 2 * PS_LOG_BLOCK && block_intact(p + PS_LOG_BLOCK);
    if (a && b && memcmp(p, p + PS_LOG_BLOCK, PS_LOG_BLOCK) != 0)
        return PS_CORRUPT; /* two intact copies that disagree: trust neither */
    if (!a && !b) {
        /* Another format keeps the magic and the version field where they
         * are. Version 1 (neither copy nor salt) proves itself by its own
         * check, so a damaged version 2 header is not taken for one; a
         * later version cannot be checked here and is refused as such. */
        if (n < 10 || memcmp(p, PS_LOG_MAGIC, 8) != 0)
            return PS_CORRUPT;
        unsigned v = get_u16(p + 8);
        if (v > PS_LOG_VERSION)
            return PS_BADVERSION;
        if (v == 1 && n >= 28) {
            size_t len = get_u32(p + 12);
            if (len <= n - 28) {
                XXH3_state_t st;
                XXH3_64bits_reset(&st);
                XXH3_64bits_update(&st, p, 16);
                XXH3_64bits_update(&st, p + 28, len);
                if (get_u32(p + 16) == (uint32_t)XXH3_64bits_digest(&st))
                    return PS_BADVERSION;
            }
        }
        return PS_CORRUPT;
    }
    const unsigned char *blk = a ? p : p + PS_LOG_BLOCK;
    if (get_u16(blk + 8) != PS_LOG_VERSION || get_u16(blk + 10) != 0)
        return PS_BADVERSION;
    h->block_ok = 1;
    h->copy_damaged = !(a && b);
    h->salt = get_u64(blk + 16);
    h->nlen = get_u32(blk + 12);
    h->size = PS_LOG_FIXED_HEADER + h->nlen;
    if (n < PS_LOG_FIXED_HEADER || h->nlen > n - PS_LOG_FIXED_HEADER)
        return PS_CORRUPT;
    if (get_u32(blk + 24) != check_of(p + PS_LOG_FIXED_HEADER, h->nlen, h->salt))
        return PS_CORRUPT;
    h->name = p + PS_LOG_FIXED_HEADER;
    return PS_OK;
}

/* The end field: the offset in the low 48 bits, 16 bits of its salted
 * hash above them, so that a damaged hint reads as unknown, not as a
 * wrong offset. One aligned 8-byte word: written by one store. */
static uint64_t end_word(uint64_t end, uint64_t salt)
{
    unsigned char b[6];
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(end >> (8 * i));
    uint64_t tag = (uint16_t)XXH3_64bits_withSeed(b, 6, salt);
    return (end & PS_LOG_NO_PREALLOC) | tag << 48;
}

int ps_log_end_hint(const unsigned char *p, uint64_t salt, uint64_t *end)
{
    uint64_t w = get_u64(p + PS_LOG_END_OFFSET);
    *end = w & PS_LOG_NO_PREALLOC;
    return end_word(*end, salt) == w;
}

void ps_log_set_end_hint(unsigned char *p, uint64_t end, uint64_t salt)
{
    unsigned char b[8];
    put_u64(b, end_word(end, salt));
    unsigned char *at = p + PS_LOG_END_OFFSET;
    if (((uintptr_t)at & 7) == 0) {
        /* In a shared mapping the page may be written back at any moment:
         * one aligned store, so it never holds half of two hints. */
        uint64_t v;
        memcpy(&v, b, 8);
        __atomic_store_n((uint64_t *)(void *)at, v, __ATOMIC_RELAXED);
    } else {
        memcpy(at, b, 8);
    }
}

void ps_log_end_hint_bytes(unsigned char out[8], uint64_t end, uint64_t salt)
{
    put_u64(out, end_word(end, salt));
}

/* ---- scanning ------------------------------------------------------------------- */

size_t ps_log_find_record(const unsigned char *p, size_t n, size_t from, uint64_t salt)
{
    ps_rec r;
    /* Every offset is a candidate: damage can end anywhere. Most are
     * rejected by the length, kind and flag tests before any hashing. */
    for (size_t off = from; off + PS_REC_HEADER <= n; off++) {
        if (ps_rec_parse(p + off, n - off, salt, &r))
            return off;
    }
    return 0;
}

int ps_log_scan(const unsigned char *p, size_t n, size_t start, uint64_t first_seq,
                uint64_t salt, ps_rec_fn fn, void *ctx, ps_scan *out)
{
    size_t off = start;
    uint64_t seq = first_seq;
    ps_rec r;
    memset(out, 0, sizeof *out);
    while (off < n) {
        if (!ps_rec_parse(p + off, n - off, salt, &r) || r.seq != seq)
            break;
        if (fn) {
            int rc = fn(ctx, &r);
            if (rc)
                return rc;
        }
        off += r.size;
        seq++;
        out->records++;
    }
    out->end = off;
    out->next_seq = seq;
    if (off < n) {
        out->damaged = 1;
        out->resume = ps_log_find_record(p, n, off + 1, salt);
    }
    return 0;
}

/* ---- appends ---------------------------------------------------------------------- */

int ps_file_append(int fd, const void *buf, size_t n, uint64_t off)
{
    const unsigned char *b = buf;
    size_t done = 0;
    int err = 0;
    while (done < n) {
        ssize_t w = pwrite(fd, b + done, n - done, (off_t)(off + done));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            err = errno;
            break;
        }
        if (w == 0) {
            err = EIO;
            break;
        }
        done += (size_t)w;
    }
    if (!err)
        return 0;
    /* Take back whatever part of the record reached the file, so the log
     * ends at its last whole record. If even that fails the next append
     * still starts at `off` and overwrites the partial bytes. */
    if (done) {
        while (ftruncate(fd, (off_t)off) != 0 && errno == EINTR)
            ;
    }
    return err;
}
