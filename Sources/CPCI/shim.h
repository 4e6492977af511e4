// libpci (pciutils). pci_lookup_name is variadic, so names are looked up through
// fixed-arity inline wrappers that Swift can call.
#include <pci/pci.h>

static inline char *sy_pci_lookup_vendor(struct pci_access *a, char *buf, int size, int vendor) {
    return pci_lookup_name(a, buf, size, PCI_LOOKUP_VENDOR, vendor);
}
static inline char *sy_pci_lookup_device(struct pci_access *a, char *buf, int size, int vendor, int device) {
    return pci_lookup_name(a, buf, size, PCI_LOOKUP_DEVICE, vendor, device);
}
// Vendor and device together, as lspci's main line names a function ("Vendor Device", with
// libpci's own fallbacks when either is unknown).
static inline char *sy_pci_lookup_vendor_device(struct pci_access *a, char *buf, int size, int vendor, int device) {
    return pci_lookup_name(a, buf, size, PCI_LOOKUP_VENDOR | PCI_LOOKUP_DEVICE, vendor, device);
}
static inline char *sy_pci_lookup_subsystem(struct pci_access *a, char *buf, int size,
                                            int vendor, int device, int subvendor, int subdevice) {
    return pci_lookup_name(a, buf, size, PCI_LOOKUP_SUBSYSTEM | PCI_LOOKUP_VENDOR | PCI_LOOKUP_DEVICE,
                           vendor, device, subvendor, subdevice);
}
static inline char *sy_pci_lookup_class(struct pci_access *a, char *buf, int size, int classCode) {
    return pci_lookup_name(a, buf, size, PCI_LOOKUP_CLASS, classCode);
}
static inline char *sy_pci_lookup_progif(struct pci_access *a, char *buf, int size, int classCode, int progif) {
    return pci_lookup_name(a, buf, size, PCI_LOOKUP_PROGIF | PCI_LOOKUP_NO_NUMBERS, classCode, progif);
}

// libpci reports fatal errors through a->error, which must not return (the default handler
// exits the process). These wrappers install a handler that records the message and longjmps
// back into the wrapper, so the caller gets an error instead. Only C frames lie between the
// setjmp and the longjmp.
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

// Per-thread state lives in function-local statics: Swift emits the header's inline functions
// but not its file-scope variables.
struct sy_pci_state { jmp_buf *jump; char message[256]; };

static inline struct sy_pci_state *sy_pci_thread_state(void) {
    static _Thread_local struct sy_pci_state state;
    return &state;
}

static void sy_pci_on_error(char *msg, ...) {
    struct sy_pci_state *state = sy_pci_thread_state();
    va_list ap;
    va_start(ap, msg);
    vsnprintf(state->message, sizeof state->message, msg, ap);
    va_end(ap);
    if (state->jump) longjmp(*state->jump, 1);
    abort();
}

static void sy_pci_on_warning(char *msg, ...) { (void)msg; }

/// pci_alloc + pci_init + pci_scan_bus. Returns NULL and the message in `error` on failure (the
/// half-initialised pci_access is then leaked rather than cleaned up in an unknown state).
static inline struct pci_access *sy_pci_open_and_scan(char *error, int errorSize) {
    struct pci_access *a = pci_alloc();
    if (!a) { snprintf(error, errorSize, "pci_alloc failed"); return NULL; }
    a->error = sy_pci_on_error;
    a->warning = sy_pci_on_warning;
    a->debug = sy_pci_on_warning;
    struct sy_pci_state *state = sy_pci_thread_state();
    jmp_buf here;
    state->jump = &here;
    if (setjmp(here)) {
        state->jump = NULL;
        snprintf(error, errorSize, "%s", state->message);
        return NULL;
    }
    pci_init(a);
    pci_scan_bus(a);
    state->jump = NULL;
    return a;
}

/// pci_fill_info with the same error capture; returns -1 and the message on failure.
static inline int sy_pci_fill_info(struct pci_dev *d, int flags, char *error, int errorSize) {
    struct sy_pci_state *state = sy_pci_thread_state();
    jmp_buf here;
    state->jump = &here;
    if (setjmp(here)) {
        state->jump = NULL;
        snprintf(error, errorSize, "%s", state->message);
        return -1;
    }
    int known = pci_fill_info(d, flags);
    state->jump = NULL;
    return known;
}
