/*
 * ps_error.c - descriptions of return codes, and the library version.
 */
#include <string.h>

#include "ps_guard.h"
#include "pystate.h"

const char *ps_strerror(int rc)
{
    switch (rc) {
    case PS_OK:
        return "success";
    case PS_NOTFOUND:
        return "no such scope or key";
    case PS_CONFLICT:
        return "the value changed since it was read";
    case PS_TOOBIG:
        return "scope, key or value longer than 4 GiB - 1";
    case PS_CORRUPT:
        return "a log file is damaged before its end";
    case PS_LOCKED:
        return "the store directory is written by a process in another sync mode, or held by an earlier version";
    case PS_BADVERSION:
        return "a log file or store was written in an unknown format version";
    case PS_NOTSTORE:
        return "the directory is not a pystate store";
    case PS_READONLY:
        return "the store was opened read-only";
    case PS_RANGE:
        return "an integer in the JSON text is outside the 64-bit range";
    /* Not a ps_* code (ps_guard.h), but one a caller can be handed, and
     * codes are described in this one place. */
    case PSG_CLOSED:
        return "the store is closed";
    }
    if (rc > 0)
        return strerror(rc);
    return "unknown pystate error code";
}

void ps_version(int *major, int *minor, int *patch)
{
    if (major)
        *major = PS_VERSION_MAJOR;
    if (minor)
        *minor = PS_VERSION_MINOR;
    if (patch)
        *patch = PS_VERSION_PATCH;
}
