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
