/*
 * test_dir.c - unit tests of the store directory (ps_dir.c) and of what
 * the file store may touch in it: the marker that makes a directory a
 * store, names of ours and everyone else's, links never followed,
 * read-only opens that change nothing, and any number of scopes within
 * the descriptor budget.
 */
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <xxhash.h>

#include "disk_util.h"
#include "ps_dir.h"

/* A digest of every name, type and byte in dir (not recursive). */
static uint64_t dir_digest(const char *dir)
{
    char *names[256];
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) && n < 256)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            names[n++] = strdup(e->d_name);
    if (d)
        closedir(d);
    for (int i = 1; i < n; i++) /* sort, for a stable digest */
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    uint64_t h = 0;
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat sb;
        lstat(path, &sb);
        h = XXH3_64bits_withSeed(names[i], strlen(names[i]) + 1, h);
        h = XXH3_64bits_withSeed(&sb.st_mode, sizeof sb.st_mode, h);
        if (S_ISLNK(sb.st_mode)) {
            char target[512];
            ssize_t k = readlink(path, target, sizeof target);
            h = XXH3_64bits_withSeed(target, k > 0 ? (size_t)k : 0, h);
        } else if (S_ISREG(sb.st_mode) && strcmp(names[i], "LOCK") != 0) {
            /* (LOCK is the processes' shared memory: a reader takes locks
             * there, which is not a change to the store) */
            size_t len;
            unsigned char *p = slurp(path, &len);
            h = XXH3_64bits_withSeed(p, len, h);
            free(p);
        }
        free(names[i]);
    }
    return h;
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    spit(path, (const unsigned char *)text, strlen(text));
}

static ps_store *open_ro(const char *path, ps_report *rep, int *rc_out)
{
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.read_only = 1;
    ps_store *st = NULL;
    int rc = ps_store_open(&st, &o, rep);
    if (rc_out)
        *rc_out = rc;
    return rc == PS_OK ? st : NULL;
}

/* ---- names ------------------------------------------------------------------------------ */

TEST(only_the_stores_own_names_are_its_own)
{
    CHECK(ps_dir_name_kind("0123456789abcdef.log") == PS_NAME_LOG);
    CHECK(ps_dir_name_kind("0123456789abcdef-12.log") == PS_NAME_LOG);
    CHECK(ps_dir_name_kind("0123456789abcdef.log.tmp-00000000000000ff") == PS_NAME_TEMP);
    CHECK(ps_dir_name_kind("0123456789abcdef-3.log.corrupt-2") == PS_NAME_ASIDE);
    CHECK(ps_dir_name_kind("PYSTATE") == PS_NAME_MARKER);
    CHECK(ps_dir_name_kind("PYSTATE.tmp-0123456789abcdef") == PS_NAME_MARKER_TEMP);
    CHECK(ps_dir_name_kind("LOCK") == PS_NAME_LOCK);
    const char *others[] = {"app.log", "notes.log", "0123456789ABCDEF.log", "0123456789abcde.log",
                            "0123456789abcdef-0.log", "0123456789abcdef-01.log",
                            "0123456789abcdef.log.compact", "0123456789abcdef.log.tmp-1",
                            "0123456789abcdef.log.tmp-00000000000000ffx", "0123456789abcdef.logx",
                            "x.compact", "lock", "PYSTATE.bak", "0123456789abcdef.log.corrupt-0",
                            ".0123456789abcdef.log", ""};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        CHECK(ps_dir_name_kind(others[i]) == PS_NAME_OTHER);
        if (ps_dir_name_kind(others[i]) != PS_NAME_OTHER)
            fprintf(stderr, "  taken for ours: '%s'\n", others[i]);
    }
}

/* ---- what makes a directory a store -------------------------------------------------------- */

TEST(a_non_empty_directory_without_the_marker_is_refused_and_left_alone)
{
    char dir[512];
    fresh_dir(dir, sizeof dir, "foreign");
    REQUIRE(mkdir(dir, 0777) == 0);
    write_file(dir, "app.log", "");
    write_file(dir, "notes.log", "14 bytes here.");
    write_file(dir, "x.compact", "not ours");
    char sub[600];
    snprintf(sub, sizeof sub, "%s/.git", dir);
    mkdir(sub, 0777);
    uint64_t before = dir_digest(dir);
    for (int ro = 0; ro < 2; ro++) {
        ps_report rep;
        int rc;
        ps_store *st = ro ? open_ro(dir, &rep, &rc) : open_dir(dir, PS_SYNC_NEVER, 1, &rep, &rc);
        CHECK(st == NULL && rc == PS_NOTSTORE);
        CHECK(strstr(rep.message, dir) != NULL && strstr(rep.message, "not a pystate store") != NULL);
        CHECK(dir_digest(dir) == before); /* no LOCK, no marker, nothing removed */
        CHECK_RC(ps_store_inspect(&(ps_options){.path = dir}, &rep), PS_NOTSTORE);
        CHECK(dir_digest(dir) == before);
    }
}

TEST(files_named_like_a_stores_leftovers_but_not_its_own_are_not_adopted)
{
    /* A directory holding only a LOCK or a marker temporary is what an
     * interrupted creation leaves, but only if they hold what the store
     * writes there (nothing; the start of the marker). */
    const char *cases[][2] = {{"LOCK", "my lock notes"},
                              {"PYSTATE.tmp-0123456789abcdef", "my own text"}};
    for (size_t i = 0; i < 2; i++) {
        char dir[512];
        fresh_dir(dir, sizeof dir, "lookalike");
        REQUIRE(mkdir(dir, 0777) == 0);
        write_file(dir, cases[i][0], cases[i][1]);
        uint64_t before = dir_digest(dir);
        int rc;
        CHECK(open_dir(dir, PS_SYNC_NEVER, 0, NULL, &rc) == NULL && rc == PS_NOTSTORE);
        CHECK(dir_digest(dir) == before);
    }
}

TEST(a_new_or_empty_directory_becomes_a_store_and_says_so)
{
    char dir[512], path[700];
    fresh_dir(dir, sizeof dir, "fresh");
    ps_report rep;
    int rc;
    /* Read-only never creates one. */
    CHECK(open_ro(dir, &rep, &rc) == NULL && rc == ENOENT);
    CHECK(file_size(dir) < 0);
    REQUIRE(mkdir(dir, 0777) == 0);
    CHECK(open_ro(dir, &rep, &rc) == NULL && rc == PS_NOTSTORE);
    snprintf(path, sizeof path, "%s/LOCK", dir);
    CHECK(file_size(path) < 0);
    /* A writer makes the empty directory a store: marker and lock. */
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc);
    REQUIRE(st);
    snprintf(path, sizeof path, "%s/PYSTATE", dir);
    size_t n;
    unsigned char *m = slurp(path, &n);
    REQUIRE(m);
    CHECK(n > 0 && memcmp(m, "pystate store\n", 14) == 0);
    free(m);
    CHECK(put_s(st, "s", "k", "1") == PS_OK);
    ps_store_close(st);
    /* Now anything may be beside it: the store is identified. */
    write_file(dir, "README.txt", "mine");
    st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc);
    REQUIRE(st);
    CHECK(strcmp(get_s(st, "s", "k"), "1") == 0);
    ps_store_close(st);
    /* A marker of another format, or a damaged one, is refused. */
    spit(path, (const unsigned char *)"pystate store\nformat 9\n", 23);
    CHECK(open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc) == NULL && rc == PS_BADVERSION);
    spit(path, (const unsigned char *)"garbage", 7);
    CHECK(open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc) == NULL && rc == PS_CORRUPT);
    CHECK(strstr(rep.message, "PYSTATE") != NULL);
    /* A directory left with only what an interrupted creation leaves. */
    fresh_dir(dir, sizeof dir, "halfmade");
    REQUIRE(mkdir(dir, 0777) == 0);
    write_file(dir, "LOCK", "");
    write_file(dir, "PYSTATE.tmp-00000000000000aa", "pystate st");
    st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc);
    REQUIRE(st);
    ps_store_close(st);
    snprintf(path, sizeof path, "%s/PYSTATE.tmp-00000000000000aa", dir);
    CHECK(file_size(path) < 0);
}

TEST(files_of_others_inside_a_store_are_never_touched)
{
    char dir[512];
    fresh_dir(dir, sizeof dir, "neighbours");
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(st);
    REQUIRE(put_s(st, "s", "k", "1") == PS_OK);
    ps_store_close(st);
    const char *names[] = {"app.log", "notes.log", "x.compact", "0123456789abcdef.log.compact",
                           "0123456789ABCDEF.log", "0123456789abcdef.log.corrupt-1"};
    write_file(dir, names[0], "");
    write_file(dir, names[1], "14 bytes here.");
    for (size_t i = 2; i < sizeof names / sizeof *names; i++)
        write_file(dir, names[i], "\0\0\0\0");
    st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(st);
    CHECK(put_s(st, "s", "k", "2") == PS_OK);
    CHECK(del_s(st, "s", "k") == PS_OK);
    CHECK_RC(ps_compact(st, NULL, 0), PS_OK); /* the emptied log goes, nothing else */
    ps_store_close(st);
    char path[700];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        CHECK(file_size(path) >= 0);
    }
}

/* ---- links ------------------------------------------------------------------------------- */

TEST(links_in_the_store_are_never_followed)
{
    char dir[512], logpath[600], outside[600], link[700];
    make_root();
    snprintf(dir, sizeof dir, "%s/links", root);
    write_log(dir, 3, logpath, sizeof logpath);
    snprintf(outside, sizeof outside, "%s/precious.txt", root);
    spit(outside, (const unsigned char *)"precious", 8);
    ps_report rep;
    int rc;

    /* A link where a log should be: refused, and neither file changes. */
    size_t n;
    unsigned char *log = slurp(logpath, &n);
    REQUIRE(log);
    unlink(logpath);
    REQUIRE(symlink(outside, logpath) == 0);
    uint64_t before = dir_digest(dir);
    CHECK(open_dir(dir, PS_SYNC_NEVER, 1, &rep, &rc) == NULL && rc == PS_CORRUPT);
    CHECK(strstr(rep.message, "link") != NULL);
    CHECK(dir_digest(dir) == before && file_size(outside) == 8);
    unlink(logpath);
    spit(logpath, log, n);
    free(log);

    /* Links under a temporary's name are not ours: left, never opened,
     * and compaction (fresh random names, created exclusively) writes
     * around them. */
    snprintf(link, sizeof link, "%s.tmp-00000000000000aa", logpath);
    REQUIRE(symlink(outside, link) == 0);
    char old[700];
    snprintf(old, sizeof old, "%s.compact", logpath);
    REQUIRE(symlink(outside, old) == 0);
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc);
    REQUIRE(st);
    CHECK(rep.stray_files == 0);
    for (int i = 0; i < 5; i++) {
        CHECK(put_s(st, "s", "k0", "9") == PS_OK);
        CHECK_RC(ps_compact(st, NULL, 0), PS_OK);
    }
    ps_store_close(st);
    struct stat sb;
    CHECK(lstat(link, &sb) == 0 && S_ISLNK(sb.st_mode));
    CHECK(lstat(old, &sb) == 0 && S_ISLNK(sb.st_mode));
    n = 0;
    unsigned char *p = slurp(outside, &n);
    CHECK(p && n == 8 && memcmp(p, "precious", 8) == 0);
    free(p);
    CHECK(lstat(logpath, &sb) == 0 && S_ISREG(sb.st_mode));

    /* Links as the marker or the lock: refused. */
    char marker[700];
    snprintf(marker, sizeof marker, "%s/PYSTATE", dir);
    p = slurp(marker, &n);
    REQUIRE(p);
    unlink(marker);
    REQUIRE(symlink(outside, marker) == 0);
    CHECK(open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc) == NULL && rc == ELOOP);
    unlink(marker);
    spit(marker, p, n);
    free(p);
    char lock[700];
    snprintf(lock, sizeof lock, "%s/LOCK", dir);
    unlink(lock);
    REQUIRE(symlink(outside, lock) == 0);
    CHECK(open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc) == NULL && rc == ELOOP);
    CHECK(file_size(outside) == 8);
    unlink(lock);
}

TEST(a_fifo_or_directory_as_the_lock_is_refused_not_waited_on)
{
    char dir[512], logpath[600], lock[700];
    make_root();
    snprintf(dir, sizeof dir, "%s/fifolock", root);
    write_log(dir, 2, logpath, sizeof logpath);
    snprintf(lock, sizeof lock, "%s/LOCK", dir);
    for (int kind = 0; kind < 2; kind++) {
        unlink(lock);
        rmdir(lock);
        REQUIRE(kind ? mkdir(lock, 0755) == 0 : mkfifo(lock, 0644) == 0);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            alarm(10); /* a hang fails the test instead of the run */
            ps_report rep;
            int rc = open_ro(dir, &rep, NULL) ? 1 : 0;
            if (rc == 0)
                rc = ps_store_inspect(&(ps_options){.path = dir}, &rep) != PS_OK &&
                             open_dir(dir, PS_SYNC_NEVER, 0, &rep, NULL) == NULL &&
                             strstr(rep.message, "LOCK") != NULL
                         ? 0
                         : 2;
            CHILD_EXIT(rc);
        }
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    rmdir(lock);
}

/* ---- read-only ---------------------------------------------------------------------------- */

TEST(a_read_only_open_reports_damage_and_changes_nothing)
{
    char dir[512], logpath[600], tmp[700];
    make_root();
    snprintf(dir, sizeof dir, "%s/ro", root);
    write_log(dir, 4, logpath, sizeof logpath);
    /* A torn tail, a leftover temporary and a log of an emptied scope. */
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(st);
    REQUIRE(put_s(st, "gone", "k", "1") == PS_OK && del_s(st, "gone", "k") == PS_OK);
    ps_store_close(st);
    size_t n;
    unsigned char *p = slurp(logpath, &n);
    REQUIRE(p);
    unsigned char *torn = malloc(n + 9);
    memcpy(torn, p, n);
    memcpy(torn + n, "half-rec!", 9);
    spit(logpath, torn, n + 9);
    snprintf(tmp, sizeof tmp, "%s.tmp-00000000000000aa", logpath);
    spit(tmp, p, n);
    uint64_t before = dir_digest(dir);

    ps_report rep;
    int rc;
    st = open_ro(dir, &rep, &rc);
    REQUIRE(st);
    CHECK(rep.torn_tails == 1 && rep.bytes_cut == 9 && rep.stray_files == 1);
    CHECK(strcmp(list_s(st, "s"), "[0,1,2,3]") == 0);
    /* A second reader at once, and a writer: it joins them, so it
     * recovers nothing (the reader is there), and changes nothing by
     * joining. */
    ps_store *st2 = open_ro(dir, NULL, &rc);
    CHECK(st2 != NULL);
    ps_store *w = open_dir(dir, PS_SYNC_NEVER, 0, NULL, &rc);
    CHECK(w != NULL);
    CHECK(strcmp(list_s(w, "s"), "[0,1,2,3]") == 0);
    ps_store_close(w);
    ps_store_close(st2);
    CHECK_RC(put_s(st, "s", "k9", "9"), PS_READONLY);
    CHECK_RC(del_s(st, "s", "k0"), PS_READONLY);
    CHECK_RC(ps_put_if(st, "s", 1, "k0", 2, "1", 1, NULL, 0), PS_READONLY);
    CHECK_RC(ps_compact(st, NULL, 0), PS_READONLY);
    CHECK_RC(ps_sync(st), PS_OK);
    ps_report chk;
    ps_check(st, &chk);
    ps_store_close(st);
    CHECK(dir_digest(dir) == before);
    free(p);
    free(torn);
}

/* ---- descriptors ------------------------------------------------------------------------------ */

/* In a child, under a descriptor limit of 64: more scopes than that,
 * max_open_files 16, in each sync mode: write, sync, let the background
 * sync run, close, reopen, check, inspect. */
static int many_scopes_child(const char *dir, int mode)
{
    struct rlimit rl = {64, 64};
    int scopes = 300;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        /* valgrind keeps the limit to itself: exceed the one it gives. */
        if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
            return 20;
        scopes = (int)rl.rlim_cur + 50;
    }
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = dir;
    o.sync = mode;
    o.sync_interval_ms = 100;
    /* sync=never: the default budget (256), above the process's limit, so
     * the store meets EMFILE itself and must give descriptors back. */
    o.max_open_files = mode == PS_SYNC_NEVER ? 0 : 16;
    ps_store *st = NULL;
    if (ps_store_open(&st, &o, NULL) != PS_OK)
        return 21;
    char scope[32];
    for (int i = 0; i < scopes; i++) {
        snprintf(scope, sizeof scope, "scope-%d", i);
        if (put_s(st, scope, "k", "1") != PS_OK)
            return 22;
    }
    if (ps_sync(st) != PS_OK)
        return 23;
    for (int i = 0; i < scopes; i += 3) {
        snprintf(scope, sizeof scope, "scope-%d", i);
        if (put_s(st, scope, "k", "2") != PS_OK)
            return 24;
    }
    usleep(300 * 1000); /* a background sync or two (sync=interval) */
    ps_stats s;
    ps_stats_get(st, &s);
    if (s.sync_errors != 0)
        return 25;
    if (ps_store_close(st) != PS_OK)
        return 26;
    if (ps_store_open(&st, &o, NULL) != PS_OK)
        return 27;
    ps_report rep;
    if (ps_check(st, &rep) != PS_OK)
        return 28;
    for (int i = 0; i < scopes; i++) {
        snprintf(scope, sizeof scope, "scope-%d", i);
        if (strcmp(get_s(st, scope, "k"), i % 3 ? "1" : "2") != 0)
            return 29;
    }
    if (ps_compact(st, NULL, 0) != PS_OK)
        return 30;
    if (ps_store_close(st) != PS_OK)
        return 31;
    if (ps_store_inspect(&o, &rep) != PS_OK || rep.logs != (uint64_t)scopes)
        return 32;
    return 0;
}

TEST(any_number_of_scopes_works_within_the_descriptor_budget)
{
    char dir[512];
    for (int mode = PS_SYNC_INTERVAL; mode <= PS_SYNC_ALWAYS; mode++) {
        fresh_dir(dir, sizeof dir, "fds");
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            int rc = many_scopes_child(dir, mode);
            CHILD_EXIT(rc);
        }
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status))
            fprintf(stderr, "  sync mode %d: child exit %d\n", mode, WEXITSTATUS(status));
    }
}

RUN_TESTS()
