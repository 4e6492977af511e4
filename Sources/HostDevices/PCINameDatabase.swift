import CPCI
import Synchronization

/// Names for PCI IDs from libpci's database (pci.ids, or udev's hwdb when libpci uses it),
/// formatted exactly as lspci formats them, fallbacks ("Device 1234") included, because the
/// same library call produces them.
///
/// Owns one `pci_access`. libpci's lookups mutate it (a lazily loaded hash, a per-call
/// numeric mode), so every lookup holds a lock; that is what makes the class `Sendable`.
public final class PCINameDatabase: Sendable {
    /// How many `-n` options lspci was given: names, numbers, or both ("Name [8086:29c0]").
    public enum Numbering: Int, Sendable, Hashable {
        case names = 0
        case numbers = 1
        case namesAndNumbers = 2
    }

    /// The raw handle. `@unchecked Sendable` because it is only ever used inside `access`'s lock.
    private struct Handle: @unchecked Sendable {
        let pacc: UnsafeMutablePointer<pci_access>
    }

    private let access: Mutex<Handle>

    public init() {
        let pacc = pci_alloc()!  // pci_alloc never returns NULL: libpci aborts on out-of-memory
        // Name lookups touch no device. The dump method over an empty file makes pci_init
        // deterministic: the automatic probe would call libpci's fatal error handler (exit)
        // on hosts with no usable PCI access method.
        pacc.pointee.method = UInt32(PCI_ACCESS_DUMP.rawValue)
        _ = "dump.name".withCString { name in
            "/dev/null".withCString { value in
                pci_set_param(pacc, UnsafeMutablePointer(mutating: name), UnsafeMutablePointer(mutating: value))
            }
        }
        pci_init(pacc)
        access = Mutex(Handle(pacc: pacc))
    }

    deinit {
        access.withLock { pci_cleanup($0.pacc) }
    }

    /// A vendor's name: PCI_LOOKUP_VENDOR.
    public func vendor(_ vendor: UInt16, numbering: Numbering = .names) -> String {
        lookup(numbering, capacity: 128) { sy_pci_lookup_vendor($0, $1, $2, Int32(vendor)) } ?? ""
    }

    /// A device's name alone: PCI_LOOKUP_DEVICE.
    public func device(vendor: UInt16, device: UInt16, numbering: Numbering = .names) -> String {
        lookup(numbering, capacity: 128) { sy_pci_lookup_device($0, $1, $2, Int32(vendor), Int32(device)) } ?? ""
    }

    /// Vendor and device as lspci's main line shows them. `capacity` is lspci's buffer size
    /// (128 there, 256 in the tree view): names that do not fit come back as libpci's
    /// "<pci_lookup_name: buffer too small>", as they do in lspci.
    public func vendorAndDevice(vendor: UInt16, device: UInt16, numbering: Numbering = .names,
                                capacity: Int = 128) -> String {
        lookup(numbering, capacity: capacity) {
            sy_pci_lookup_vendor_device($0, $1, $2, Int32(vendor), Int32(device))
        } ?? ""
    }

    /// A subsystem as lspci's "Subsystem:" line shows it: the subsystem vendor's name and the
    /// subsystem's name.
    public func subsystem(vendor: UInt16, device: UInt16, subsystemVendor: UInt16, subsystemDevice: UInt16,
                          numbering: Numbering = .names) -> String {
        lookup(numbering, capacity: 256) {
            sy_pci_lookup_subsystem($0, $1, $2, Int32(vendor), Int32(device), Int32(subsystemVendor),
                                    Int32(subsystemDevice))
        } ?? ""
    }

    /// A class's name from its upper 16 bits (base class << 8 | subclass).
    public func className(_ classCode: UInt16, numbering: Numbering = .names) -> String {
        lookup(numbering, capacity: 128) { sy_pci_lookup_class($0, $1, $2, Int32(classCode)) } ?? ""
    }

    /// A programming interface's name, or nil when the database has none (lspci then prints
    /// only the number). Never numeric: lspci asks with PCI_LOOKUP_NO_NUMBERS.
    public func programmingInterface(classCode: UInt16, progIf: UInt8) -> String? {
        lookup(.names, capacity: 128) { sy_pci_lookup_progif($0, $1, $2, Int32(classCode), Int32(progIf)) }
    }

    private func lookup(_ numbering: Numbering, capacity: Int,
                        _ call: (UnsafeMutablePointer<pci_access>, UnsafeMutablePointer<CChar>, Int32)
                            -> UnsafeMutablePointer<CChar>?) -> String? {
        access.withLock { handle in
            let pacc = handle.pacc
            pacc.pointee.numeric_ids = Int32(numbering.rawValue)
            var buffer = [CChar](repeating: 0, count: capacity)
            return buffer.withUnsafeMutableBufferPointer { buf -> String? in
                // libpci returns either our buffer or a pointer into its own name table.
                guard let result = call(pacc, buf.baseAddress!, Int32(capacity)) else { return nil }
                return String(cString: result)
            }
        }
    }
}
