// Lets ThreadSanitizer see Synchronization.Mutex's contended paths in the test binary.
//
// On Linux, Mutex takes and releases its lock word with an inlined compare-and-swap when
// uncontended (instrumented: TSan sees the acquire and the release), but under contention the
// out-of-line `_MutexHandle._lockSlow` / `_unlockSlow` (and `_tryLockSlow`) in the prebuilt,
// uninstrumented libswiftSynchronization.so spin with their own atomics and hand the lock over
// with FUTEX_LOCK_PI / FUTEX_UNLOCK_PI, which the kernel performs. TSan sees neither, so two
// threads taking turns in `withLock` under contention look like a data race on the protected
// value (a stress test reports hundreds). These wrappers stand in for the three entry points
// (the executable's definitions bind our inlined calls to them), call the real ones, and tell
// TSan about the acquire and release on the lock word's address, the same address the inlined
// fast path's atomics use. Compiled only under -fsanitize=thread; empty otherwise.
#include "TSanMutexAnnotations.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#include <dlfcn.h>
#include <stdbool.h>

void __tsan_acquire(void *address);
void __tsan_release(void *address);

// `_MutexHandle` is a borrowed noncopyable struct: Swift passes its address as the context
// (swiftself) argument, and its lock word is its first and only stored property.
#define SWIFTCALL __attribute__((swiftcall))
#define SWIFTSELF __attribute__((swift_context))
#define LOCK_SLOW "$s15Synchronization12_MutexHandleV9_lockSlowyys6UInt32VF"
#define TRY_LOCK_SLOW "$s15Synchronization12_MutexHandleV12_tryLockSlowSbyF"
#define UNLOCK_SLOW "$s15Synchronization12_MutexHandleV11_unlockSlowyyF"

typedef SWIFTCALL void (*LockSlow)(uint32_t owner, void *SWIFTSELF handle);
typedef SWIFTCALL bool (*TryLockSlow)(void *SWIFTSELF handle);
typedef SWIFTCALL void (*UnlockSlow)(void *SWIFTSELF handle);

static LockSlow realLockSlow;
static TryLockSlow realTryLockSlow;
static UnlockSlow realUnlockSlow;

// Resolved before any thread starts, so the pointers are never written concurrently.
__attribute__((constructor)) static void findRealEntryPoints(void) {
    realLockSlow = (LockSlow)dlsym(RTLD_NEXT, LOCK_SLOW);
    realTryLockSlow = (TryLockSlow)dlsym(RTLD_NEXT, TRY_LOCK_SLOW);
    realUnlockSlow = (UnlockSlow)dlsym(RTLD_NEXT, UNLOCK_SLOW);
}

SWIFTCALL void annotatedLockSlow(uint32_t owner, void *SWIFTSELF handle) __asm__(LOCK_SLOW);
SWIFTCALL void annotatedLockSlow(uint32_t owner, void *SWIFTSELF handle) {
    realLockSlow(owner, handle);
    __tsan_acquire(handle);
}

SWIFTCALL bool annotatedTryLockSlow(void *SWIFTSELF handle) __asm__(TRY_LOCK_SLOW);
SWIFTCALL bool annotatedTryLockSlow(void *SWIFTSELF handle) {
    bool locked = realTryLockSlow(handle);
    if (locked) __tsan_acquire(handle);
    return locked;
}

SWIFTCALL void annotatedUnlockSlow(void *SWIFTSELF handle) __asm__(UNLOCK_SLOW);
SWIFTCALL void annotatedUnlockSlow(void *SWIFTSELF handle) {
    __tsan_release(handle);
    realUnlockSlow(handle);
}
#endif
#endif
