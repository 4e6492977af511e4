// libseccomp for Swift: its rule builders are variadic (seccomp_rule_add) and its argument
// comparisons are macros (SCMP_A0...), which Swift cannot import; and the SIGSYS reporter
// must be async-signal-safe C.
#ifndef SWITCHYARD_CSECCOMP_H
#define SWITCHYARD_CSECCOMP_H

#include <stdint.h>

/// A filter under construction whose default action traps (SIGSYS, reported by the handler
/// that sy_seccomp_install_reporter installs). NULL when libseccomp cannot allocate one.
void *sy_seccomp_new_trapping_filter(void);
void sy_seccomp_release(void *filter);

/// The system call number libseccomp knows `name` by on this architecture, or -1.
int sy_seccomp_syscall_number(const char *name);

/// Rules; each returns 0 or a negative errno. Rules for the same call are alternatives.
int sy_seccomp_allow(void *filter, int syscall);
/// Allowed when (argument `index` & mask) == value.
int sy_seccomp_allow_masked(void *filter, int syscall, unsigned index, uint64_t mask, uint64_t value);
/// Allows `syscall` when every test (argument index, mask, value) holds: one rule, its tests ANDed.
int sy_seccomp_allow_all_masked(void *filter, int syscall, unsigned count, const unsigned *indexes,
                                const uint64_t *masks, const uint64_t *values);
/// The call fails with `error` (an errno) instead of running or trapping.
int sy_seccomp_fail_with(void *filter, int syscall, int error);

/// Loads the filter into the calling thread (every thread with all_threads, SECCOMP's TSYNC),
/// after setting no_new_privs. 0 or a negative errno.
int sy_seccomp_load(void *filter, int all_threads);

/// Installs the SIGSYS handler that reports a trapped call (its name from a table built here,
/// before any filter traps, so the handler itself only formats and writes) and ends the
/// process by SIGSYS. Idempotent. 0 or a negative errno.
int sy_seccomp_install_reporter(void);

/// The calling thread's kind, named in the report (a string that lives forever).
void sy_seccomp_set_thread_kind(const char *kind);
/// From now on a SIGSYS the process sends itself (tgkill) makes the receiving thread take this
/// Landlock ruleset (with no_new_privs) instead of reporting a trapped call; -1 ends that.
void sy_seccomp_set_confining_ruleset(int ruleset);
/// For thread `tid`: 0 once it took the ruleset, -errno if that failed, 1 while it has not answered.
int sy_seccomp_confined_result(int tid);
/// 0 in a ThreadSanitizer build, whose own thread cannot take a signal; else 1.
int sy_seccomp_signals_reach_every_thread(void);

#endif
