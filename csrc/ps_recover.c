/*
 * ps_recover.c - opening a store directory (reading every log, with
 * recovery) and closing it; ps_check.
 *
 * Recovery
 *   Open reads every log before changing anything. A log whose damage has
 *   no valid record after it has a torn tail, which is cut off and
 *   reported, and so are records the end hint says were there but that
 *   read as zeros or are missing. Damage with valid records after it, and
 *   any damaged header, is corruption: open fails (nothing on disk
 *   changed) or, with repair, salvages every valid record and moves the
 *   damaged file aside.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ps_disk_impl.h"

#define DEFAULT_INTERVAL_MS 5000
#define DEFAULT_MAX_OPEN 256
#define DEFAULT_COMPACT_MIN_DEAD (1u << 20)

/* ---- small helpers -------------------------------------------------------------- */

static void report(ps_report *rep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void report(ps_report *rep, const char *fmt, ...)
{
    if (!rep)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->message, sizeof rep->message, fmt, ap);
    va_end(ap);
}

/* A printable, bounded rendering of a scope name for messages. */
static void printable(char *out, size_t cap, const void *name, size_t n)
{
    const unsigned char *p = name;
    size_t j = 0;
    for (size_t i = 0; i < n && j + 5 < cap; i++) {
        unsigned char c = p[i];
        if (c >= 0x20 && c != 0x7f && c != '\\' && c != '\'')
            out[j++] = (char)c;
        else
            j += (size_t)snprintf(out + j, cap - j, "\\x%02x", c);
    }
    out[j] = 0;
}

static void log_free(ps_store *st, ps_logf *l)
{
    ps_logf_close_fd(st->disk, l);
    ps_mem_free(&st->mem, l->scope_name, l->scope_len);
    ps_mem_free(&st->mem, l, sizeof *l);
}

/* ---- opening: recovery ---------------------------------------------------------- */

/* Work found while reading logs, done only once every log has been read
 * and none is corrupt, so a failed open changes nothing on disk; a
 * read-only open does none of it. */
enum fix_kind {
    FIX_CUT,    /* cut a log back to its last whole record */
    FIX_UNLINK, /* remove a file of ours that holds nothing needed */
    FIX_REPAIR, /* keep a damaged log aside, write what was salvaged */
    FIX_ASIDE,  /* keep an unreadable log aside, whole */
    FIX_ADOPT   /* give a temporary holding a scope's only copy a log's name */
};

typedef struct fix {
    int kind;
    char name[NAME_MAX_LEN];
    uint64_t size;  /* FIX_CUT: the length to keep */
    ps_scope *sc;   /* FIX_REPAIR, FIX_CUT, FIX_ADOPT */
} fix;

typedef struct opener {
    ps_store *st;
    ps_report *rep;
    fix *fixes;
    size_t n_fixes, cap_fixes;
    char first_fix[512]; /* what note() said first */
} opener;

static int add_fix(opener *o, int kind, const char *name, uint64_t size, ps_scope *sc)
{
    if (o->n_fixes == o->cap_fixes) {
        size_t cap = o->cap_fixes ? o->cap_fixes * 2 : 16;
        fix *f = ps_mem_realloc(&o->st->mem, o->fixes, o->cap_fixes * sizeof *f, cap * sizeof *f);
        if (!f)
            return ENOMEM;
        o->fixes = f;
        o->cap_fixes = cap;
    }
    fix *f = &o->fixes[o->n_fixes++];
    f->kind = kind;
    snprintf(f->name, sizeof f->name, "%s", name);
    f->size = size;
    f->sc = sc;
    return 0;
}

/* Describe the first thing opening fixes (or would fix), so a warning can
 * say which file and where; it becomes the report's message if the open
 * succeeds. */
static void note(opener *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(opener *o, const char *fmt, ...)
{
    if (o->first_fix[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->first_fix, sizeof o->first_fix, fmt, ap);
    va_end(ap);
}

/* One past the last non-zero byte of p[from, n), or `from` when none. */
static size_t data_end(const unsigned char *p, size_t from, size_t n)
{
    while (n > from && p[n - 1] == 0)
        n--;
    return n;
}

/* A log whose header cannot be read: the scope it belongs to is unknown,
 * so none of its records can be put back. Without repair, that refuses
 * the open; with it, the file is kept aside whole and counted lost. */
static int unreadable_log(opener *o, const char *fname, const unsigned char *map, size_t size,
                          const ps_loghdr *h, const char *why)
{
    ps_disk *d = o->st->disk;
    ps_report *rep = o->rep;
    if (!d->repair) {
        report(rep,
               "log %s/%s is corrupt at offset 0: %s; the scope it holds cannot be told, so none "
               "of its records can be salvaged; open with repair to keep it aside as "
               "%s.corrupt-<n> and open the rest",
               d->path, fname, why, fname);
        return PS_CORRUPT;
    }
    uint64_t lost = 0;
    if (h->block_ok) { /* the salt is known: its records can at least be counted */
        size_t off = h->size;
        ps_rec r;
        while (off < size && (off = ps_log_find_record(map, size, off, h->salt)) != 0 &&
               ps_rec_parse(map + off, size - off, h->salt, &r)) {
            lost++;
            off += r.size;
        }
    }
    rep->repaired++;
    rep->logs_lost++;
    rep->records_lost += lost;
    note(o, "log %s/%s: %s; kept aside whole as %s.corrupt-<n> (%llu record(s) in it could "
         "not be salvaged)", d->path, fname, why, fname, (unsigned long long)lost);
    return add_fix(o, FIX_ASIDE, fname, 0, NULL);
}

/* Read one log into memory (its scope into *added, when not NULL).
 * Returns 0, or an error that makes open fail (with o->rep->message set). */
static int load_log(opener *o, const char *fname, ps_scope **added)
{
    ps_store *st = o->st;
    ps_disk *d = st->disk;
    ps_report *rep = o->rep;
    while (d->n_open >= d->max_open && d->lru_tail)
        ps_logf_close_fd(d, d->lru_tail);
    int fd = ps_open_in_store(d, NULL, fname, d->read_only ? O_RDONLY : O_RDWR);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP || e == EINVAL || e == EISDIR) {
            report(rep, "%s/%s is not a regular file (a symbolic link?) where a log should be: "
                   "pystate never creates one and does not follow links; remove it",
                   d->path, fname);
            return PS_CORRUPT;
        }
        report(rep, "cannot open log %s/%s: %s", d->path, fname, strerror(e));
        return e;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return e;
    }
    size_t size = (size_t)sb.st_size;
    rep->logs++;
    const unsigned char *map = NULL;
    if (size) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            report(rep, "cannot read log %s/%s: %s", d->path, fname, strerror(e));
            return e;
        }
    }
    ps_loghdr h;
    int rc = ps_log_header_parse(map, size, &h);
    if (rc != PS_OK) {
        if (rc == PS_BADVERSION)
            report(rep, "log %s/%s was written in another format version (this version reads %d): "
                   "it is neither read nor rewritten", d->path, fname, PS_LOG_VERSION);
        else
            rc = unreadable_log(o, fname, map, size, &h,
                                size == 0 ? "it is empty (a log always starts with a header)"
                                : data_end(map, 0, size) == 0
                                    ? "it holds only zeros (its header and records are gone)"
                                : h.block_ok ? "the scope name in its header is damaged"
                                             : "its header is damaged (both copies)");
        if (map)
            munmap((void *)map, size);
        close(fd);
        return rc;
    }
    char shown[128];
    printable(shown, sizeof shown, h.name, h.nlen);
    if (h.copy_damaged && !d->repair) {
        munmap((void *)map, size);
        close(fd);
        report(rep, "log %s/%s (scope '%s') is corrupt at offset 0: one of the two copies of its "
               "header is damaged (the other is intact); open with repair to rewrite it",
               d->path, fname, shown);
        return PS_CORRUPT;
    }
    ps_where w;
    ps_scope *sc = ps_scope_find(st, h.name, h.nlen, &w);
    if (sc) {
        munmap((void *)map, size);
        close(fd);
        report(rep, "logs %s and %s in %s both hold scope '%s'", sc->log ? sc->log->name : "?",
               fname, d->path, shown);
        return PS_CORRUPT;
    }
    sc = ps_scope_add(st, &w, h.name, h.nlen);
    ps_logf *l = sc ? ps_logf_new(st, fname, h.name, h.nlen) : NULL;
    if (!l) {
        munmap((void *)map, size);
        close(fd);
        return ENOMEM;
    }
    sc->log = l;
    if (added)
        *added = sc;
    l->present = 1;
    l->salt = h.salt;
    l->hsize = h.size;
    l->fd = fd;
    ps_lru_push(d, l);
    d->n_open++;

    ps_replay rp = {st, sc};
    ps_scan scan;
    rc = ps_log_scan(map, size, h.size, 1, h.salt, ps_replay_record, &rp, &scan);
    rep->records += scan.records;
    size_t end = scan.end;
    uint64_t next_seq = scan.next_seq;
    int salvaged = 0;
    if (rc == 0 && scan.damaged && scan.resume) {
        if (!d->repair) {
            report(rep,
                   "log %s/%s (scope '%s') is corrupt at offset %zu: damaged bytes are followed "
                   "by valid records (the first at offset %zu); open with repair to salvage them",
                   d->path, fname, shown, scan.end, scan.resume);
            rc = PS_CORRUPT;
        } else {
            /* Salvage: every valid record after the damage too, in order.
             * Sequence numbers say how many records each gap swallowed. */
            while (rc == 0 && scan.damaged && scan.resume) {
                ps_rec r;
                size_t at = scan.resume;
                (void)ps_rec_parse(map + at, size - at, h.salt, &r);
                if (r.seq > scan.next_seq)
                    rep->records_lost += r.seq - scan.next_seq;
                rc = ps_log_scan(map, size, at, r.seq, h.salt, ps_replay_record, &rp, &scan);
                rep->records += scan.records;
            }
            salvaged = 1;
            note(o, "log %s/%s (scope '%s'): damaged at offset %zu; every valid record salvaged "
                 "into a new log, the damaged file kept as %s.corrupt-<n>", d->path, fname, shown,
                 end, fname);
        }
    }
    if (rc == 0) {
        /* What follows the last whole record (of the last run of them,
         * after a salvage)? Zeros from the end hint on are preallocated
         * space that was never written (the process stopped before
         * truncating it): not damage, and appends reuse it. Anything else
         * there, or a hint past the last record (what it points to reads
         * as zeros, or the file stops short of it), is records lost: cut,
         * and said so. A damaged hint cannot tell: all of it counts lost. */
        size_t tail_at = scan.end;
        uint64_t hint;
        int hint_ok = ps_log_end_hint(map, h.salt, &hint);
        size_t last = data_end(map, tail_at, size);
        if (!hint_ok || hint == PS_LOG_NO_PREALLOC) {
            l->no_prealloc = hint_ok;
            hint = size; /* nothing but records was (or is known to be) there */
        }
        if (last > tail_at || hint > tail_at) {
            uint64_t lost_to = last > hint ? last : hint;
            rep->torn_tails++;
            rep->bytes_cut += lost_to - tail_at;
            if (!hint_ok)
                note(o, "log %s/%s (scope '%s'): its end hint is damaged, so the %llu bytes after "
                     "its last record, at offset %zu, are counted lost and cut", d->path, fname,
                     shown, (unsigned long long)(lost_to - tail_at), tail_at);
            else if (last > tail_at)
                note(o, "log %s/%s (scope '%s'): torn tail of %llu bytes cut at offset %zu",
                     d->path, fname, shown, (unsigned long long)(lost_to - tail_at), tail_at);
            else
                note(o, "log %s/%s (scope '%s'): the records from offset %zu to %llu, where the "
                     "log says its records end, are gone (zeros or cut off); cut at offset %zu",
                     d->path, fname, shown, tail_at, (unsigned long long)lost_to, tail_at);
            /* A log being rewritten by repair keeps its damaged file aside
             * byte for byte: the rewrite drops the tail, not a cut. */
            if (!salvaged && !h.copy_damaged)
                rc = add_fix(o, FIX_CUT, fname, end, sc);
        }
    }
    if (rc == 0 && h.copy_damaged && !salvaged) {
        salvaged = 1;
        note(o, "log %s/%s (scope '%s'): one copy of its header was damaged; rewritten, the "
             "damaged file kept as %s.corrupt-<n>", d->path, fname, shown, fname);
    }
    if (rc == 0 && salvaged) {
        rep->repaired++;
        rc = add_fix(o, FIX_REPAIR, fname, 0, sc);
    }
    munmap((void *)map, size);
    l->size = end;
    l->next_seq = next_seq;
    atomic_store(&l->appended, end);
    l->durable = end; /* what was on disk at open is as durable as it gets */
    return rc;
}

/* A temporary file of ours (an interrupted log creation or compaction),
 * looked at once every log is loaded. Its content must show it is ours
 * (an intact header block, the start of one, or only zeros); anything
 * else under such a name, a link included, is left alone. Whatever it
 * holds is normally also in a log (a log's name is made durable before
 * any record goes into it), so it is removed; but if it holds records of
 * a scope that no log holds, it is the only copy of them (a crash lost
 * the rename): that refuses the open, and repair puts it back as the
 * scope's log. */
static int consider_temp(opener *o, const char *fname)
{
    ps_store *st = o->st;
    ps_disk *d = st->disk;
    int fd = ps_dir_open_file(d->dirfd, fname, O_RDONLY);
    if (fd < 0)
        return 0;
    struct stat sb;
    int ours = 0, orphan = 0;
    size_t records = 0;
    char shown[128] = "";
    if (fstat(fd, &sb) == 0) {
        size_t size = (size_t)sb.st_size;
        const unsigned char *map = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
        if (map == MAP_FAILED) {
            map = NULL;
        } else {
            ps_loghdr h;
            size_t m = size < 8 ? size : 8;
            int hrc = ps_log_header_parse(map, size, &h);
            ours = size == 0 || data_end(map, 0, size) == 0 ||
                   (size < PS_LOG_FIXED_HEADER && memcmp(map, PS_LOG_MAGIC, m) == 0) || h.block_ok;
            if (hrc == PS_OK) {
                ps_scan scan;
                (void)ps_log_scan(map, size, h.size, 1, h.salt, NULL, NULL, &scan);
                records = scan.records;
                ps_where w;
                orphan = records && !ps_scope_find(st, h.name, h.nlen, &w);
                printable(shown, sizeof shown, h.name, h.nlen);
            }
        }
        if (map)
            munmap((void *)map, size);
    }
    close(fd);
    if (!ours)
        return 0;
    if (!orphan) {
        o->rep->stray_files++;
        note(o, "%s/%s: the leftover of an interrupted log write, removed", d->path, fname);
        return add_fix(o, FIX_UNLINK, fname, 0, NULL);
    }
    if (!d->repair) {
        report(o->rep, "%s/%s holds %zu record(s) of scope '%s' that no log holds (a crash lost the "
               "log's name); open with repair to put it back", d->path, fname, records, shown);
        return PS_CORRUPT;
    }
    ps_scope *sc = NULL;
    int rc = load_log(o, fname, &sc);
    if (rc)
        return rc;
    o->rep->repaired++;
    note(o, "%s/%s: the only copy of scope '%s' (%zu record(s)), put back as its log", d->path,
         fname, shown, records);
    return add_fix(o, FIX_ADOPT, fname, 0, sc);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names of the logs and temporary files of ours in the store directory. */
static int list_dir(ps_store *st, char ***names_out, size_t *n_out)
{
    ps_disk *d = st->disk;
    int fd = openat(d->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int e = errno;
        close(fd);
        return e;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        int kind = ps_dir_name_kind(e->d_name);
        if (kind != PS_NAME_LOG && kind != PS_NAME_TEMP)
            continue;
        if (n == cap) {
            size_t c = cap ? cap * 2 : 64;
            char **v = ps_mem_realloc(&st->mem, names, cap * sizeof *v, c * sizeof *v);
            if (!v) {
                rc = ENOMEM;
                break;
            }
            names = v;
            cap = c;
        }
        size_t len = strlen(e->d_name) + 1;
        names[n] = ps_mem_alloc(&st->mem, len);
        if (!names[n]) {
            rc = ENOMEM;
            break;
        }
        memcpy(names[n++], e->d_name, len);
    }
    closedir(dir);
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_str);
    *names_out = names;
    *n_out = n;
    return rc;
}

static void free_names(ps_store *st, char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ps_mem_free(&st->mem, names[i], strlen(names[i]) + 1);
    ps_mem_free(&st->mem, names, n * sizeof *names);
}

/* Keep a damaged log as the first free <name>.corrupt-<n>. With *link
 * set, as a second name for the same file (the log's name is then
 * replaced by its salvage, so at no moment is the damaged file under
 * neither name); else, or where hard links are not supported (*link is
 * then cleared), by a rename. Returns 0 or an errno. */
static int set_aside(ps_disk *d, const char *name, int *link)
{
    char aside[NAME_MAX_LEN];
    for (unsigned n = 1;; n++) {
        snprintf(aside, sizeof aside, "%s.corrupt-%u", name, n);
        int rc = 0;
        if (*link && linkat(d->dirfd, name, d->dirfd, aside, 0) != 0)
            rc = errno;
        if (rc == EPERM || rc == ENOTSUP || rc == EOPNOTSUPP || rc == EMLINK || rc == ENOSYS) {
            *link = 0;
            rc = 0;
        }
        if (!*link)
            rc = ps_dir_rename_noreplace(d->dirfd, name, aside);
        if (rc != EEXIST)
            return rc;
    }
}

/* Carry out the fixes found while reading. Open has succeeded by now;
 * a fix that fails makes it fail after all. */
static int apply_fixes(opener *o)
{
    ps_store *st = o->st;
    ps_disk *d = st->disk;
    int dir_changed = 0;
    for (size_t i = 0; i < o->n_fixes; i++) {
        fix *f = &o->fixes[i];
        if (f->kind == FIX_UNLINK) {
            if (unlinkat(d->dirfd, f->name, 0) != 0 && errno != ENOENT)
                return errno;
            dir_changed = 1;
        } else if (f->kind == FIX_CUT) {
            ps_logf *l = f->sc->log;
            if (f->sc->table.n_live == 0)
                continue; /* the whole log goes (FIX_UNLINK below) */
            int rc = ps_logf_fd(d, l);
            if (rc)
                return rc;
            if (ftruncate(l->fd, (off_t)f->size) != 0)
                return errno;
            /* The hint may point into what was cut: it must not outlive it. */
            rc = ps_write_end_hint(l->fd, l->no_prealloc ? PS_LOG_NO_PREALLOC : f->size, l->salt);
            if (rc)
                return rc;
            rc = ps_datasync(l->fd);
            if (rc)
                return rc;
        } else if (f->kind == FIX_ADOPT) {
            ps_logf *l = f->sc->log;
            ps_logf_close_fd(d, l);
            if (f->sc->table.n_live) {
                /* Written afresh under a free log name, like any compaction. */
                unsigned long long h = (unsigned long long)XXH3_64bits(l->scope_name, l->scope_len);
                struct stat sb;
                for (unsigned n = 0;; n++) {
                    if (n == 0)
                        snprintf(l->name, sizeof l->name, "%016llx.log", h);
                    else
                        snprintf(l->name, sizeof l->name, "%016llx-%u.log", h, n);
                    if (fstatat(d->dirfd, l->name, &sb, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT)
                        break;
                }
                int rc = ps_compact_scope(st, f->sc);
                if (rc)
                    return rc;
            } else {
                l->present = 0;
            }
            if (unlinkat(d->dirfd, f->name, 0) != 0 && errno != ENOENT)
                return errno;
            dir_changed = 1;
        } else if (f->kind == FIX_ASIDE) {
            int link = 0;
            int rc = set_aside(d, f->name, &link);
            if (rc)
                return rc;
            dir_changed = 1;
        } else { /* FIX_REPAIR: keep the damaged file aside, write the salvage */
            ps_logf *l = f->sc->log;
            ps_logf_close_fd(d, l);
            int live = f->sc->table.n_live != 0, link = live;
            int rc = set_aside(d, f->name, &link);
            if (rc)
                return rc;
            dir_changed = 1;
            if (live) {
                /* Write the salvaged state over the damaged file's name,
                 * the way compaction writes any log: new file, sync,
                 * rename. Until that rename the damaged file is still
                 * there, so a failure here leaves the store as it was
                 * (and a copy aside). Where links are not supported it
                 * was renamed away instead, as before. */
                rc = ps_compact_scope(st, f->sc);
                if (rc)
                    return rc;
            } else {
                l->present = 0;
            }
        }
    }
    if (dir_changed)
        return ps_fsync_dir(d);
    return 0;
}

/* Drop scopes that hold no key (their logs were removed by apply_fixes).
 * Only at open, before any other thread can hold a log. */
static void drop_empty_scopes(ps_store *st)
{
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        if (!it || ps_scope_of(it)->table.n_live)
            continue;
        ps_scope *sc = ps_scope_of(it);
        ps_where w;
        (void)ps_scope_find(st, ps_item_key(it), ps_item_klen(it), &w);
        ps_table_remove(s, &st->mem, &st->hasher, &w);
        if (sc->log)
            log_free(st, sc->log);
        ps_scope_free(st, sc);
        i = (uint32_t)-1; /* the registry may have been rebuilt: start over */
        if (!s->n_entries)
            break;
    }
}

static void free_all_scopes(ps_store *st)
{
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        if (!it)
            continue;
        ps_scope *sc = ps_scope_of(it);
        if (sc->log)
            log_free(st, sc->log);
        ps_scope_free(st, sc);
    }
    ps_table_free(s, &st->mem);
}

static void disk_free(ps_store *st)
{
    ps_disk *d = st->disk;
    if (!d)
        return;
    ps_shm_detach(&d->shm);
    ps_mem_free(&st->mem, d->ev, d->ev_cap);
    if (d->known)
        ps_mem_free(&st->mem, d->known, PS_SHM_SLOTS / 8 + 1);
    if (d->lockfd >= 0)
        close(d->lockfd); /* releases the flock */
    if (d->dirfd >= 0)
        close(d->dirfd);
    ps_mem_free(&st->mem, d->scratch, d->scratch_cap);
    ps_mem_free(&st->mem, d->path, d->path_cap);
    pthread_cond_destroy(&d->sync_cv);
    pthread_mutex_destroy(&d->sync_mu);
    pthread_mutex_destroy(&d->map_mu);
    ps_mem_free(&st->mem, d, sizeof *d);
    st->disk = NULL;
}

/* Alone, recovery done: set the LOCK file up for this session (a writer)
 * or follow the one set up (a reader), then let others in. */
static int start_sharing(ps_store *st)
{
    ps_disk *d = st->disk;
    int rc;
    if (!d->read_only) {
        if ((rc = ps_shm_create(&d->shm, d->lockfd)) != 0)
            return rc;
    } else {
        rc = ps_shm_attach(&d->shm, d->lockfd, 1);
        if (rc == ENOENT)
            return ps_dir_share(d->lockfd); /* nobody shares it: read as it is */
        if (rc)
            return rc;
    }
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        ps_logf *l = it ? ps_scope_of(it)->log : NULL;
        if (!l || !l->present)
            continue;
        const void *name = ps_item_key(it);
        size_t nlen = ps_item_klen(it);
        if (d->read_only) {
            /* The slots say what the last writers published; a scope read
             * differently (records past that) is read again when used. */
            l->slot = ps_shm_find(&d->shm, name, nlen);
            uint64_t w = l->slot ? atomic_load(&l->slot->state) : 0;
            l->seen = !(ps_shm_gen(w) & 1) && ps_shm_end(w) == l->size ? w : 0;
        } else {
            l->slot = ps_shm_claim(&d->shm, name, nlen, XXH3_64bits(name, nlen), &rc);
            if (!l->slot)
                return rc;
            l->slot->twin = l->name[16] == '-' ? (uint32_t)strtoul(l->name + 17, NULL, 10) : 0;
            l->seen = ps_shm_word(2, l->size);
            atomic_store(&l->slot->state, l->seen);
        }
        if (l->slot)
            ps_mark_known(d, l->slot);
    }
    return ps_dir_share(d->lockfd);
}

int ps_disk_open(ps_store *st, const ps_options *o, ps_report *rep)
{
    ps_report scratch_rep;
    if (!rep)
        rep = &scratch_rep;
    memset(rep, 0, sizeof *rep);
    ps_disk *d = ps_mem_alloc(&st->mem, sizeof *d);
    if (!d)
        return ENOMEM;
    memset(d, 0, sizeof *d);
    d->dirfd = d->lockfd = -1;
    pthread_mutex_init(&d->sync_mu, NULL);
    pthread_mutex_init(&d->map_mu, NULL);
    pthread_cond_init(&d->sync_cv, NULL);
    st->disk = d;
    d->path_cap = strlen(o->path) + 1;
    d->path = ps_mem_alloc(&st->mem, d->path_cap);
    if (!d->path) {
        disk_free(st);
        return ENOMEM;
    }
    memcpy(d->path, o->path, d->path_cap);
    d->sync_mode = o->sync;
    d->interval_ms = o->sync_interval_ms ? o->sync_interval_ms : DEFAULT_INTERVAL_MS;
    d->max_open = o->max_open_files ? o->max_open_files : DEFAULT_MAX_OPEN;
    d->compact_min_dead = o->compact_min_dead ? o->compact_min_dead : DEFAULT_COMPACT_MIN_DEAD;
    d->repair = o->repair;
    d->read_only = o->read_only != 0;
    d->hook = o->hook;
    d->hook_ctx = o->hook_ctx;
    if (d->sync_mode < PS_SYNC_INTERVAL || d->sync_mode > PS_SYNC_ALWAYS) {
        report(rep, "unknown sync mode %d", d->sync_mode);
        disk_free(st);
        return EINVAL;
    }

    ps_dir_claim_out claim;
    int rc = ps_dir_claim(d->path, d->read_only, &claim, rep->message, sizeof rep->message);
    if (rc) {
        disk_free(st);
        return rc;
    }
    d->dirfd = claim.dirfd;
    d->lockfd = claim.lockfd;
    if (claim.lockfd >= 0) {
        d->known = ps_mem_alloc(&st->mem, PS_SHM_SLOTS / 8 + 1);
        if (!d->known) {
            disk_free(st);
            return ENOMEM;
        }
        memset(d->known, 0, PS_SHM_SLOTS / 8 + 1);
    }
    if (!d->read_only && claim.lockfd >= 0) {
        int other = 0;
        rc = ps_dir_join_mode(claim.lockfd, d->sync_mode, &other);
        if (rc == PS_LOCKED) {
            static const char *modes[] = {"interval", "never", "always"};
            report(rep, "store directory %s is open in another process with sync=%s; every process "
                   "writing to a store must use the same sync mode", d->path,
                   other >= 0 && other <= 2 ? modes[other] : "?");
        }
        if (rc) {
            disk_free(st);
            return rc;
        }
    }
    if (!claim.alone && claim.lockfd >= 0) {
        /* Others have the directory: join them. Nothing is read now; each
         * scope is read when first used (from its slot), and nothing is
         * recovered: the first of them did that, and a torn record a
         * killed writer left lies past its log's published end. */
        rc = ps_shm_attach(&d->shm, d->lockfd, (fcntl(d->lockfd, F_GETFL) & O_ACCMODE) == O_RDWR);
        if (rc == 0)
            rc = ps_start_thread(st);
        if (rc == 0) {
            d->joined = 1;
            d->recovery = *rep;
            return 0;
        }
        if (rc == ENOENT && !d->read_only) {
            report(rep, "store directory %s is open in another process that does not share it (a "
                   "read-only open of a store no writer of this pystate version has opened yet); "
                   "close that one first", d->path);
            rc = PS_LOCKED;
        }
        if (rc != ENOENT) {
            disk_free(st);
            return rc;
        }
        rc = 0; /* a reader of a store nobody shares: it reads what is there, as it is */
    }

    opener *op = ps_mem_alloc(&st->mem, sizeof *op);
    if (!op) {
        disk_free(st);
        return ENOMEM;
    }
    memset(op, 0, sizeof *op);
    op->st = st;
    op->rep = rep;
    char **names = NULL;
    size_t n = 0;
    rc = list_dir(st, &names, &n);
    /* Logs first, so that a temporary is judged knowing every scope. */
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (ps_dir_name_kind(names[i]) == PS_NAME_LOG)
            rc = load_log(op, names[i], NULL);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (ps_dir_name_kind(names[i]) == PS_NAME_TEMP)
            rc = consider_temp(op, names[i]);
    free_names(st, names, n);
    if (rc == 0) {
        /* A log whose keys were all deleted is garbage: remove it. */
        ps_table *s = &st->scopes;
        for (uint32_t i = 0; rc == 0 && i < s->n_entries; i++) {
            const unsigned char *it = s->entries[i];
            if (it && ps_scope_of(it)->table.n_live == 0 && ps_scope_of(it)->log)
                rc = add_fix(op, FIX_UNLINK, ps_scope_of(it)->log->name, 0, NULL);
        }
    }
    if (rc == 0 && !d->read_only)
        rc = apply_fixes(op);
    if (rc == 0 && !rep->message[0])
        memcpy(rep->message, op->first_fix, sizeof op->first_fix);
    ps_mem_free(&st->mem, op->fixes, op->cap_fixes * sizeof *op->fixes);
    ps_mem_free(&st->mem, op, sizeof *op);
    if (rc == 0)
        drop_empty_scopes(st);
    if (rc == 0 && claim.alone)
        rc = start_sharing(st);
    if (rc == 0 && !d->read_only) {
        /* Everything read from disk counts as durable. */
        pthread_mutex_lock(&d->sync_mu);
        d->dir_dirty = 0;
        pthread_mutex_unlock(&d->sync_mu);
        rc = ps_start_thread(st);
    }
    if (rc) {
        if (!rep->message[0])
            report(rep, "cannot open store %s: %s", d->path, ps_strerror(rc));
        free_all_scopes(st);
        ps_table_init(&st->scopes);
        disk_free(st);
        return rc;
    }
    d->recovery = *rep;
    return 0;
}

/* ---- closing, and what opening found -------------------------------------------- */

int ps_disk_close(ps_store *st)
{
    ps_disk *d = st->disk;
    if (d->thread_running) {
        pthread_mutex_lock(&d->sync_mu);
        d->stopping = 1;
        pthread_cond_broadcast(&d->sync_cv);
        pthread_mutex_unlock(&d->sync_mu);
        pthread_join(d->thread, NULL);
        d->thread_running = 0;
    }
    int rc = d->sync_mode == PS_SYNC_NEVER || d->read_only ? 0 : ps_sync_all(st);
    /* The last one out gives back preallocated space (nobody maps it). */
    if (!d->read_only && d->lockfd >= 0 && ps_dir_try_alone(d->lockfd) == 1)
        d->may_trim = 1;
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        if (it && ps_scope_of(it)->log) {
            log_free(st, ps_scope_of(it)->log);
            ps_scope_of(it)->log = NULL;
        }
    }
    disk_free(st);
    return rc;
}

void ps_recovery_get(ps_store *st, ps_report *out)
{
    if (st->disk)
        *out = st->disk->recovery;
    else
        memset(out, 0, sizeof *out);
}

int ps_disk_joined(ps_store *st)
{
    return st->disk && st->disk->joined;
}

/* ---- check ---------------------------------------------------------------------- */

typedef struct checker {
    ps_store *st;
    ps_table table; /* the replay */
} checker;

static int check_record(void *ctx, const ps_rec *r)
{
    checker *c = ctx;
    ps_where w;
    ps_table *t = &c->table;
    const unsigned char *it = ps_table_find(t, r->key, r->klen, ps_hash(&c->st->hasher, r->key, r->klen), &w);
    if (r->kind == PS_REC_PUT)
        return it ? ps_table_replace(t, &c->st->mem, &w, r->value, r->vlen)
                  : ps_table_insert(t, &c->st->mem, &c->st->hasher, &w, r->key, r->klen, r->value, r->vlen);
    if (it)
        ps_table_remove(t, &c->st->mem, &c->st->hasher, &w);
    return 0;
}

/* Same keys, values and order? */
static int same_table(const ps_table *a, const ps_table *b)
{
    if (a->n_live != b->n_live)
        return 0;
    uint32_t i = 0, j = 0;
    for (;;) {
        while (i < a->n_entries && !a->entries[i])
            i++;
        while (j < b->n_entries && !b->entries[j])
            j++;
        if (i == a->n_entries || j == b->n_entries)
            return i == a->n_entries && j == b->n_entries;
        const unsigned char *x = a->entries[i++], *y = b->entries[j++];
        if (ps_item_size(x) != ps_item_size(y) || ps_item_klen(x) != ps_item_klen(y) ||
            memcmp(x, y, ps_item_size(x)) != 0)
            return 0;
    }
}

static int check_log(ps_store *st, ps_scope *sc, const unsigned char *name, size_t nlen,
                     ps_report *rep)
{
    ps_disk *d = st->disk;
    ps_logf *l = sc->log;
    char shown[128];
    printable(shown, sizeof shown, name, nlen);
    if (!l || !l->present) {
        if (sc->table.n_live) {
            report(rep, "scope '%s' holds %u keys but has no log in %s", shown, sc->table.n_live, d->path);
            return PS_CORRUPT;
        }
        return 0;
    }
    int fd = ps_open_in_store(d, NULL, l->name, O_RDONLY);
    if (fd < 0) {
        int e = errno;
        report(rep, "cannot open log %s/%s: %s", d->path, l->name, strerror(e));
        return e;
    }
    struct stat sb;
    int rc = fstat(fd, &sb) != 0 ? errno : 0;
    size_t size = rc ? 0 : (size_t)sb.st_size;
    const unsigned char *map = NULL;
    if (!rc && size) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            rc = errno;
            map = NULL;
        }
    }
    close(fd);
    if (rc) {
        report(rep, "cannot read log %s/%s: %s", d->path, l->name, strerror(rc));
        return rc;
    }
    ps_loghdr h;
    rep->logs++;
    if (ps_log_header_parse(map, size, &h) != PS_OK || h.copy_damaged || h.nlen != nlen ||
        memcmp(h.name, name, nlen) != 0 || h.salt != l->salt) {
        report(rep, "log %s/%s (scope '%s') is corrupt at offset 0: bad header", d->path, l->name, shown);
        rc = PS_CORRUPT;
    } else {
        checker c = {st, {0}};
        ps_table_init(&c.table);
        ps_scan scan;
        rc = ps_log_scan(map, size, h.size, 1, h.salt, check_record, &c, &scan);
        rep->records += scan.records;
        /* Past the last record there may be preallocated zeros, nothing
         * else, and the end hint must not point past it. */
        uint64_t hint;
        int hint_ok = ps_log_end_hint(map, h.salt, &hint);
        if (rc == 0 && (scan.end != l->size || !hint_ok || data_end(map, scan.end, size) != scan.end ||
                        (hint == PS_LOG_NO_PREALLOC ? size != scan.end : hint > scan.end))) {
            report(rep, "log %s/%s (scope '%s') is corrupt at offset %zu (file %zu bytes, %llu expected)",
                   d->path, l->name, shown, scan.end, size, (unsigned long long)l->size);
            rc = PS_CORRUPT;
        } else if (rc == 0 && !same_table(&c.table, &sc->table)) {
            report(rep, "log %s/%s (scope '%s') does not replay to the keys in memory",
                   d->path, l->name, shown);
            rc = PS_CORRUPT;
        }
        ps_table_free(&c.table, &st->mem);
    }
    if (map)
        munmap((void *)map, size);
    return rc;
}

int ps_check(ps_store *st, ps_report *rep)
{
    ps_report scratch_rep;
    if (!rep)
        rep = &scratch_rep;
    memset(rep, 0, sizeof *rep);
    int rc = 0;
    pthread_mutex_lock(&st->mu);
    if (st->disk)
        rc = ps_disk_follow_all(st);
    ps_table *s = &st->scopes;
    if (rc == 0 && ps_table_check(s, &st->hasher) != 0) {
        report(rep, "the scope index is inconsistent");
        rc = PS_CORRUPT;
    }
    for (uint32_t i = 0; i < s->n_entries && rc == 0; i++) {
        const unsigned char *it = s->entries[i];
        if (!it)
            continue;
        ps_scope *sc = ps_scope_of(it);
        if (ps_table_check(&sc->table, &st->hasher) != 0) {
            char shown[128];
            printable(shown, sizeof shown, ps_item_key(it), ps_item_klen(it));
            report(rep, "the index of scope '%s' is inconsistent", shown);
            rc = PS_CORRUPT;
        } else if (st->disk) {
            /* Holding the slot's lock, nobody appends while it is read. */
            int held = 0;
            if (sc->log && sc->log->slot && st->disk->shm.writable) {
                rc = ps_slot_lock(st, sc);
                held = rc == 0;
                if (held)
                    rc = ps_follow(st, sc, 1);
            }
            if (rc == 0)
                rc = check_log(st, sc, ps_item_key(it), ps_item_klen(it), rep);
            if (held)
                ps_shm_unlock(sc->log->slot);
        }
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}
