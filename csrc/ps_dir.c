/*
 * ps_dir.c - the store directory (see ps_dir.h): its marker, its lock, the
 * names that are the store's, and file operations that never follow a
 * link.
 *
 * Why a marker: a store removes files it finds damaged or left over, and
 * creates its own next to them. Pointed at the wrong directory (a
 * checkout, a virtualenv, a log directory full of *.log), that would
 * delete or add files that were never the store's. The marker turns "any
 * directory" into "a directory this library created", and the naming
 * rules below turn "any file in it" into "a file of ours".
 */
#include "ps_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ps_hash.h"
#include "ps_log.h"

#define MARKER_TEXT "pystate store\nformat "
#define MARKER_MAX 256

static void say(char *msg, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(char *msg, size_t cap, const char *fmt, ...)
{
    if (!msg || !cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
}

/* ---- names ------------------------------------------------------------------------ */

static size_t hex_run(const char *s, size_t max)
{
    size_t n = 0;
    while (n < max && ((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
        n++;
    return n;
}

static size_t digit_run(const char *s, size_t max)
{
    size_t n = 0;
    while (n < max && s[n] >= '0' && s[n] <= '9')
        n++;
    return n;
}

/* Length of the log name `<16 hex>[-<n>].log` that s starts with, or 0. */
static size_t log_name_len(const char *s)
{
    if (hex_run(s, 16) != 16)
        return 0;
    size_t n = 16;
    if (s[n] == '-') {
        size_t d = digit_run(s + n + 1, 10);
        if (d == 0 || s[n + 1] == '0')
            return 0;
        n += 1 + d;
    }
    return strncmp(s + n, ".log", 4) == 0 ? n + 4 : 0;
}

/* s is exactly `<prefix>.tmp-<16 hex>`'s tail, starting at ".tmp-"? */
static int is_temp_tail(const char *s)
{
    return strncmp(s, ".tmp-", 5) == 0 && hex_run(s + 5, 16) == 16 && s[21] == 0;
}

int ps_dir_name_kind(const char *name)
{
    if (strcmp(name, PS_DIR_MARKER) == 0)
        return PS_NAME_MARKER;
    if (strcmp(name, PS_DIR_LOCK) == 0)
        return PS_NAME_LOCK;
    if (strncmp(name, PS_DIR_MARKER, sizeof PS_DIR_MARKER - 1) == 0 &&
        is_temp_tail(name + sizeof PS_DIR_MARKER - 1))
        return PS_NAME_MARKER_TEMP;
    size_t n = log_name_len(name);
    if (!n)
        return PS_NAME_OTHER;
    const char *rest = name + n;
    if (!*rest)
        return PS_NAME_LOG;
    if (is_temp_tail(rest))
        return PS_NAME_TEMP;
    if (strncmp(rest, ".corrupt-", 9) == 0) {
        size_t d = digit_run(rest + 9, 10);
        if (d && rest[9] != '0' && rest[9 + d] == 0)
            return PS_NAME_ASIDE;
    }
    return PS_NAME_OTHER;
}

/* ---- files -------------------------------------------------------------------------- */

int ps_dir_open_file(int dirfd, const char *name, int flags)
{
    /* O_NONBLOCK: a FIFO planted under a log's name must not hang open. */
    int fd = openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd < 0)
        return -1;
    struct stat sb;
    int e = fstat(fd, &sb) != 0 ? errno : !S_ISREG(sb.st_mode) ? EINVAL : 0;
    if (e) {
        close(fd);
        errno = e;
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

int ps_dir_create_temp(int dirfd, const char *base, char *name_out)
{
    for (int tries = 0; tries < 64; tries++) {
        snprintf(name_out, PS_DIR_NAME_MAX, "%s.tmp-%016llx", base,
                 (unsigned long long)ps_random_u64());
        int fd = openat(dirfd, name_out, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1u << 0)
#endif

int ps_dir_rename_noreplace(int dirfd, const char *from, const char *to)
{
#ifdef SYS_renameat2
    if (syscall(SYS_renameat2, dirfd, from, dirfd, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != ENOSYS && errno != EINVAL)
        return errno;
#endif
    /* No renameat2 here (old kernel, some file systems): link() refuses an
     * existing name just as atomically. */
    if (linkat(dirfd, from, dirfd, to, 0) != 0)
        return errno;
    (void)unlinkat(dirfd, from, 0);
    return 0;
}

int ps_dir_fsync(int fd)
{
    while (fsync(fd) != 0) {
        if (errno != EINTR)
            return errno;
    }
    return 0;
}

/* ---- the marker ------------------------------------------------------------------------ */

/* PS_OK, ENOENT (no marker), PS_BADVERSION, PS_CORRUPT or an errno. */
static int read_marker(int dirfd, const char *path, char *msg, size_t cap)
{
    int fd = ps_dir_open_file(dirfd, PS_DIR_MARKER, O_RDONLY);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP || e == EINVAL || e == EISDIR)
            say(msg, cap, "%s/%s is not a regular file (a symbolic link?): pystate never creates one "
                "and does not follow links; remove it", path, PS_DIR_MARKER);
        else if (e != ENOENT)
            say(msg, cap, "cannot read %s/%s: %s", path, PS_DIR_MARKER, strerror(e));
        return e;
    }
    char buf[MARKER_MAX + 1];
    ssize_t n;
    do
        n = pread(fd, buf, MARKER_MAX, 0);
    while (n < 0 && errno == EINTR);
    int e = n < 0 ? errno : 0;
    close(fd);
    if (e) {
        say(msg, cap, "cannot read %s/%s: %s", path, PS_DIR_MARKER, strerror(e));
        return e;
    }
    buf[n] = 0;
    size_t t = sizeof MARKER_TEXT - 1;
    size_t d = (size_t)n > t ? digit_run(buf + t, 9) : 0;
    if ((size_t)n < t || memcmp(buf, MARKER_TEXT, t) != 0 || !d || buf[t + d] != '\n') {
        say(msg, cap, "%s/%s is damaged: it does not say which pystate store format the directory holds",
            path, PS_DIR_MARKER);
        return PS_CORRUPT;
    }
    long version = strtol(buf + t, NULL, 10);
    if (version != PS_LOG_VERSION) {
        say(msg, cap, "%s holds a pystate store of format %ld; this version reads format %d",
            path, version, PS_LOG_VERSION);
        return PS_BADVERSION;
    }
    return PS_OK;
}

/* Is `name` in dirfd what creating a store leaves, provably: an empty
 * regular LOCK, or a marker temporary holding the start of the marker? */
static int creation_leftover(int dirfd, const char *name)
{
    int kind = ps_dir_name_kind(name);
    if (kind != PS_NAME_LOCK && kind != PS_NAME_MARKER_TEMP)
        return 0;
    int fd = ps_dir_open_file(dirfd, name, O_RDONLY);
    if (fd < 0)
        return 0;
    char buf[MARKER_MAX + 1], text[64];
    ssize_t n;
    do
        n = pread(fd, buf, sizeof buf, 0);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (kind == PS_NAME_LOCK)
        return n == 0;
    int len = snprintf(text, sizeof text, MARKER_TEXT "%d\n", PS_LOG_VERSION);
    return n >= 0 && n <= len && memcmp(buf, text, (size_t)n) == 0;
}

/* Does dirfd hold nothing but what an interrupted creation of a store
 * leaves (LOCK, marker temporaries)? 0 yes, PS_NOTSTORE no, or an errno. */
static int only_leftovers(int dirfd, const char *path, char *msg, size_t cap)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (!dir) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        say(msg, cap, "cannot read store directory %s: %s", path, strerror(e));
        return e;
    }
    int rc = 0;
    struct dirent *ent;
    while ((ent = readdir(dir)) != NULL) {
        const char *nm = ent->d_name;
        if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0)
            continue;
        if (creation_leftover(dirfd, nm))
            continue;
        say(msg, cap, "%s is not a pystate store: it is not empty (it holds '%.80s') and has no "
            "%s marker; a store is created only in a new or empty directory, and nothing in "
            "this one was touched", path, nm, PS_DIR_MARKER);
        rc = PS_NOTSTORE;
        break;
    }
    closedir(dir);
    return rc;
}

/* Remove what an interrupted creation left: marker temporaries (small
 * regular files under our names, nothing else). */
static void drop_marker_temps(int dirfd)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (!dir) {
        if (fd >= 0)
            close(fd);
        return;
    }
    struct dirent *ent;
    while ((ent = readdir(dir)) != NULL) {
        if (ps_dir_name_kind(ent->d_name) == PS_NAME_MARKER_TEMP &&
            creation_leftover(dirfd, ent->d_name))
            (void)unlinkat(dirfd, ent->d_name, 0);
    }
    closedir(dir);
}

/* Sync the directory that holds `path`, so a directory just made stays. */
static int sync_parent(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    while (n && path[n - 1] != '/')
        n--;
    char *parent = n ? strndup(path, n) : strdup(".");
    if (!parent)
        return ENOMEM;
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(parent);
    if (fd < 0)
        return errno;
    int rc = ps_dir_fsync(fd);
    close(fd);
    return rc;
}

/* Make dirfd a store: the marker, written whole or not at all. */
static int write_marker(int dirfd, const char *path, int made, char *msg, size_t cap)
{
    char tmp[PS_DIR_NAME_MAX], text[64];
    int len = snprintf(text, sizeof text, MARKER_TEXT "%d\n", PS_LOG_VERSION);
    int fd = ps_dir_create_temp(dirfd, PS_DIR_MARKER, tmp);
    int rc = fd < 0 ? errno : ps_file_append(fd, text, (size_t)len, 0);
    if (!rc)
        rc = ps_dir_fsync(fd);
    if (fd >= 0)
        close(fd);
    if (!rc) {
        rc = ps_dir_rename_noreplace(dirfd, tmp, PS_DIR_MARKER);
        if (rc == EEXIST) { /* another process made the store meanwhile */
            (void)unlinkat(dirfd, tmp, 0);
            return read_marker(dirfd, path, msg, cap);
        }
    }
    if (rc) {
        if (fd >= 0)
            (void)unlinkat(dirfd, tmp, 0);
        say(msg, cap, "cannot create a store in %s: %s", path, strerror(rc));
        return rc;
    }
    drop_marker_temps(dirfd);
    rc = ps_dir_fsync(dirfd);
    if (!rc && made)
        rc = sync_parent(path);
    if (rc)
        say(msg, cap, "cannot sync store directory %s: %s", path, strerror(rc));
    return rc;
}

int ps_dir_claim(const char *path, int read_only, ps_dir_claim_out *out, char *msg, size_t cap)
{
    out->dirfd = out->lockfd = -1;
    out->created = out->alone = 0;
    int made = 0;
    if (!read_only) {
        if (mkdir(path, 0777) == 0)
            made = 1;
        else if (errno != EEXIST) {
            int e = errno;
            say(msg, cap, "cannot create store directory %s: %s", path, strerror(e));
            return e;
        }
    }
    int dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        int e = errno;
        if (read_only && e == ENOENT)
            say(msg, cap, "no pystate store at %s: the directory does not exist", path);
        else
            say(msg, cap, "cannot open store directory %s: %s", path, strerror(e));
        return e;
    }
    int rc = read_marker(dirfd, path, msg, cap), fresh = 0;
    if (rc == ENOENT) {
        if (read_only) {
            say(msg, cap, "%s is not a pystate store: it has no %s marker", path, PS_DIR_MARKER);
            rc = PS_NOTSTORE;
        } else {
            rc = only_leftovers(dirfd, path, msg, cap);
            fresh = rc == 0;
        }
    }
    int lockfd = -1, alone = 0;
    if (rc == 0) {
        /* A reader opens the lock read-write where it may, to wait on the
         * slot locks in it; it writes nothing there. */
        lockfd = ps_dir_open_file(dirfd, PS_DIR_LOCK, read_only ? O_RDWR : O_RDWR | O_CREAT);
        if (lockfd < 0 && read_only && (errno == EACCES || errno == EROFS || errno == EPERM))
            lockfd = ps_dir_open_file(dirfd, PS_DIR_LOCK, O_RDONLY);
        if (lockfd < 0 && !(read_only && errno == ENOENT)) {
            rc = errno;
            if (rc == ELOOP || rc == EINVAL || rc == EISDIR)
                say(msg, cap, "%s/%s is not a regular file (a symbolic link?): pystate never "
                    "creates one and does not follow links; remove it", path, PS_DIR_LOCK);
            else
                say(msg, cap, "cannot open %s/%s: %s", path, PS_DIR_LOCK, strerror(rc));
        } else if (lockfd >= 0 && flock(lockfd, LOCK_SH | LOCK_NB) != 0) {
            /* Every version takes this flock: earlier ones exclusively, so
             * a store one of them holds is refused, and it refuses ours. */
            rc = errno;
            if (rc == EWOULDBLOCK) {
                say(msg, cap, "store directory %s is in use by a process of an earlier pystate "
                    "version, which does not share it", path);
                rc = PS_LOCKED;
            } else {
                say(msg, cap, "cannot lock store directory %s: %s", path, strerror(rc));
            }
        } else if (lockfd >= 0) {
            alone = ps_dir_try_alone(lockfd) == 1; /* (never, through a read-only descriptor) */
            if (!alone) {
                /* Waits while a process that had the directory to itself
                 * recovers it; then shares it. */
                struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
                while (fcntl(lockfd, F_OFD_SETLKW, &fl) != 0) {
                    if (errno != EINTR) {
                        rc = errno;
                        say(msg, cap, "cannot lock store directory %s: %s", path, strerror(rc));
                        break;
                    }
                }
            }
        }
    }
    if (rc == 0 && fresh) {
        /* Another process may have made the store between our look and
         * our lock. */
        rc = read_marker(dirfd, path, msg, cap);
        if (rc == ENOENT) {
            rc = write_marker(dirfd, path, made, msg, cap);
            out->created = rc == 0;
        }
    }
    if (rc) {
        if (lockfd >= 0)
            close(lockfd);
        close(dirfd);
        return rc;
    }
    if (msg && cap)
        msg[0] = 0;
    out->dirfd = dirfd;
    out->lockfd = lockfd;
    out->alone = alone;
    return PS_OK;
}

int ps_dir_try_alone(int lockfd)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    if (fcntl(lockfd, F_OFD_SETLK, &fl) == 0)
        return 1;
    return errno == EAGAIN || errno == EACCES ? 0 : -errno;
}

int ps_dir_share(int lockfd)
{
    struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    return fcntl(lockfd, F_OFD_SETLK, &fl) == 0 ? 0 : errno;
}

/* Byte 2 of LOCK serialises writers checking sync modes; byte 8 + mode
 * is held (shared) by every writer in that mode. */
#define JOIN_BYTE 2
#define MODE_BYTE 8

static int ofd_lock(int fd, short type, off_t at, int wait)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = at, .l_len = 1};
    while (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) != 0) {
        if (errno != EINTR)
            return errno;
    }
    return 0;
}

int ps_dir_join_mode(int lockfd, int mode, int *other)
{
    int rc = ofd_lock(lockfd, F_WRLCK, JOIN_BYTE, 1);
    if (rc)
        return rc;
    for (int m = 0; m <= 2 && rc == 0; m++) {
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = MODE_BYTE + m, .l_len = 1};
        if (m == mode)
            continue;
        if (fcntl(lockfd, F_OFD_GETLK, &fl) != 0)
            rc = errno;
        else if (fl.l_type != F_UNLCK) {
            *other = m;
            rc = PS_LOCKED;
        }
    }
    if (rc == 0)
        rc = ofd_lock(lockfd, F_RDLCK, MODE_BYTE + mode, 0);
    (void)ofd_lock(lockfd, F_UNLCK, JOIN_BYTE, 0);
    return rc;
}

int ps_dir_reattach(int dirfd, int *lockfd, int mode)
{
    int fd = ps_dir_open_file(dirfd, PS_DIR_LOCK, fcntl(*lockfd, F_GETFL) & O_ACCMODE);
    if (fd < 0)
        return errno;
    int rc = flock(fd, LOCK_SH | LOCK_NB) != 0 ? errno : ofd_lock(fd, F_RDLCK, 0, 0);
    if (!rc && mode >= 0)
        rc = ofd_lock(fd, F_RDLCK, MODE_BYTE + mode, 0);
    if (rc) {
        close(fd);
        return rc;
    }
    close(*lockfd);
    *lockfd = fd;
    return 0;
}
