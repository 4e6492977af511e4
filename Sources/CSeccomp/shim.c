#define _GNU_SOURCE
#include "CSeccomp.h"

#include <errno.h>
#include <seccomp.h>
#include <signal.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/ucontext.h>
#include <unistd.h>

void *sy_seccomp_new_trapping_filter(void) { return seccomp_init(SCMP_ACT_TRAP); }

void sy_seccomp_release(void *filter) { seccomp_release(filter); }

int sy_seccomp_syscall_number(const char *name) {
    int number = seccomp_syscall_resolve_name(name);
    return number == __NR_SCMP_ERROR ? -1 : number;
}

int sy_seccomp_allow(void *filter, int syscall) {
    return seccomp_rule_add(filter, SCMP_ACT_ALLOW, syscall, 0);
}

int sy_seccomp_allow_masked(void *filter, int syscall, unsigned index, uint64_t mask, uint64_t value) {
    if (index > 5) return -EINVAL;
    struct scmp_arg_cmp comparison = { .arg = index, .op = SCMP_CMP_MASKED_EQ, .datum_a = mask, .datum_b = value };
    return seccomp_rule_add_array(filter, SCMP_ACT_ALLOW, syscall, 1, &comparison);
}

int sy_seccomp_allow_all_masked(void *filter, int syscall, unsigned count, const unsigned *indexes,
                                const uint64_t *masks, const uint64_t *values) {
    struct scmp_arg_cmp comparisons[6];
    if (count == 0 || count > 6) return -EINVAL;
    for (unsigned i = 0; i < count; i++) {
        if (indexes[i] > 5) return -EINVAL;
        comparisons[i] = (struct scmp_arg_cmp){ .arg = indexes[i], .op = SCMP_CMP_MASKED_EQ,
                                                .datum_a = masks[i], .datum_b = values[i] };
    }
    return seccomp_rule_add_array(filter, SCMP_ACT_ALLOW, syscall, count, comparisons);
}

int sy_seccomp_fail_with(void *filter, int syscall, int error) {
    return seccomp_rule_add(filter, SCMP_ACT_ERRNO(error), syscall, 0);
}

int sy_seccomp_load(void *filter, int all_threads) {
    int rc = seccomp_attr_set(filter, SCMP_FLTATR_CTL_NNP, 1);
    if (rc == 0 && all_threads) rc = seccomp_attr_set(filter, SCMP_FLTATR_CTL_TSYNC, 1);
    if (rc == 0) rc = seccomp_load(filter);
    return rc;
}

// Names by number, filled before any filter is loaded; x86-64 numbers stay below 1024.
enum { syscall_table_size = 1024 };
static const char *syscall_names[syscall_table_size];
// Threads that never named a kind (the main thread, Dispatch workers) run under the filters
// they inherited: the base, and their creator's list if it had one.
static __thread const char *thread_kind = "unset (the main thread or a runtime worker)";

void sy_seccomp_set_thread_kind(const char *kind) { thread_kind = kind; }

static size_t append(char *buffer, size_t used, size_t capacity, const char *text) {
    while (*text && used < capacity) buffer[used++] = *text++;
    return used;
}

static size_t append_hex(char *buffer, size_t used, size_t capacity, unsigned long value) {
    static const char hex[] = "0123456789abcdef";
    char digits[16];
    size_t count = 0;
    do { digits[count++] = hex[value & 15]; value >>= 4; } while (value && count < sizeof digits);
    used = append(buffer, used, capacity, "0x");
    while (count && used < capacity) buffer[used++] = digits[--count];
    return used;
}

static size_t append_number(char *buffer, size_t used, size_t capacity, long value) {
    char digits[24];
    size_t count = 0;
    unsigned long magnitude = value < 0 ? 0UL - (unsigned long)value : (unsigned long)value;
    do { digits[count++] = (char)('0' + magnitude % 10); magnitude /= 10; } while (magnitude && count < sizeof digits);
    if (value < 0 && used < capacity) buffer[used++] = '-';
    while (count && used < capacity) buffer[used++] = digits[--count];
    return used;
}

// Landlock confines only the calling thread (Linux has no TSYNC for it before 6.18), so at
// lock-down every thread already running is sent SIGSYS with tgkill, which Dispatch's workers
// leave unblocked (of the asynchronous signals only SIGPIPE and SIGPROF besides). The handler tells that signal
// from a trapped call by its code, takes the ruleset set here and records the outcome.
enum { confined_slots = 4096 };
static atomic_int confining_ruleset = -1;
static atomic_int confined_count;
static struct { atomic_int tid; atomic_int result; } confined[confined_slots];

void sy_seccomp_set_confining_ruleset(int ruleset) { atomic_store(&confining_ruleset, ruleset); }

// ThreadSanitizer runs a thread of its own from before main; a signal delivered to it fails
// TSan's own check (its interceptor finds no thread state), so under TSan no request is sent.
#if defined(__SANITIZE_THREAD__)
#define SY_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SY_THREAD_SANITIZER 1
#endif
#endif
int sy_seccomp_signals_reach_every_thread(void) {
#ifdef SY_THREAD_SANITIZER
    return 0;
#else
    return 1;
#endif
}

int sy_seccomp_confined_result(int tid) {
    int count = atomic_load(&confined_count);
    if (count > confined_slots) count = confined_slots;
    for (int i = count - 1; i >= 0; i--) {
        if (atomic_load(&confined[i].tid) == tid) return atomic_load(&confined[i].result);
    }
    return 1;
}

static void confine_on_request(void) {
    int saved = errno;
    int result = 0;
    int ruleset = atomic_load(&confining_ruleset);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) result = -errno;
    else if (syscall(SYS_landlock_restrict_self, ruleset, 0) != 0) result = -errno;
    int slot = atomic_fetch_add(&confined_count, 1);
    if (slot < confined_slots) {
        atomic_store(&confined[slot].result, result);
        atomic_store(&confined[slot].tid, (int)syscall(SYS_gettid));
    }
    errno = saved;
}

// Async-signal-safe: formats into a stack buffer, one write(2), then dies by SIGSYS (the
// default action, now that the handler is gone); exit_group(128 + SIGSYS) if that returns.
// A SIGSYS this process sent itself (tgkill, while a ruleset is set) is lock-down's request
// to confine the thread instead.
static void report_trapped_call(int signal, siginfo_t *info, void *context) {
    if (info->si_code == SI_TKILL && info->si_pid == getpid() && atomic_load(&confining_ruleset) >= 0) {
        confine_on_request();
        return;
    }
    const greg_t *registers = ((const ucontext_t *)context)->uc_mcontext.gregs;
    char line[256];
    size_t used = 0, capacity = sizeof line - 1;
    int number = info->si_syscall;
    const char *name = (number >= 0 && number < syscall_table_size) ? syscall_names[number] : NULL;
    used = append(line, used, capacity, "switchyard: sandbox: forbidden system call ");
    used = append(line, used, capacity, name ? name : "unknown");
    used = append(line, used, capacity, " (number ");
    used = append_number(line, used, capacity, number);
    // The first two arguments tell an ioctl's request or a prctl's option from another.
    used = append(line, used, capacity, ", arguments ");
    used = append_hex(line, used, capacity, (unsigned long)registers[REG_RDI]);
    used = append(line, used, capacity, " ");
    used = append_hex(line, used, capacity, (unsigned long)registers[REG_RSI]);
    used = append(line, used, capacity, ") in a thread of kind ");
    used = append(line, used, capacity, thread_kind);
    used = append(line, used, capacity, "; the process ends (-sandbox off runs without the filter)\n");
    ssize_t ignored = write(STDERR_FILENO, line, used);
    (void)ignored;
    struct sigaction fallback;
    memset(&fallback, 0, sizeof fallback);
    fallback.sa_handler = SIG_DFL;
    sigaction(signal, &fallback, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signal);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), signal);
    syscall(SYS_exit_group, 128 + signal);
}

int sy_seccomp_install_reporter(void) {
    for (int number = 0; number < syscall_table_size; number++) {
        if (syscall_names[number]) continue;
        char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, number);
        if (name) syscall_names[number] = name;  // kept for the process's life
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = report_trapped_call;
    // SA_RESTART: a thread interrupted by lock-down's request resumes its call.
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    return sigaction(SIGSYS, &action, NULL) == 0 ? 0 : -errno;
}
