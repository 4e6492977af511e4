import Firmware
import Foundation
import VMMBase

/// Builders and fakes shared by the LinuxBoot tests.
enum LinuxBootFixtures {
    /// A synthetic bzImage: boot sector + `setupSects` setup sectors + a payload of `payloadSize`.
    static func image(version: UInt16 = 0x020F, setupSects: UInt8 = 4, payloadSize: Int = 0x4000,
                      syssize: UInt32? = nil, loadflags: UInt8 = 0x01, xloadflags: UInt16 = 0x7F,
                      relocatable: UInt8 = 1, kernelAlignment: UInt32 = 0x20_0000,
                      cmdlineSize: UInt32 = 0x7FF, initrdAddrMax: UInt32 = 0x7FFF_FFFF,
                      prefAddress: UInt64 = 0x100_0000, initSize: UInt32 = 0x80_0000,
                      jump: UInt8 = 0x6A) -> [UInt8] {
        let sects = setupSects == 0 ? 4 : Int(setupSects)
        var b = [UInt8](repeating: 0, count: (sects + 1) * 512 + payloadSize)
        func put(_ v: UInt64, _ width: Int, _ o: Int) {
            for i in 0..<width { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
        }
        put(UInt64(setupSects), 1, 0x1F1)
        put(UInt64(syssize ?? UInt32((payloadSize + 15) / 16)), 4, 0x1F4)
        put(0xAA55, 2, 0x1FE)
        put(0xEB, 1, 0x200)
        put(UInt64(jump), 1, 0x201)
        put(0x5372_6448, 4, 0x202)
        put(UInt64(version), 2, 0x206)
        put(UInt64(loadflags), 1, 0x211)
        put(0x10_0000, 4, 0x214)
        put(UInt64(initrdAddrMax), 4, 0x22C)
        put(UInt64(kernelAlignment), 4, 0x230)
        put(UInt64(relocatable), 1, 0x234)
        put(21, 1, 0x235)
        put(UInt64(xloadflags), 2, 0x236)
        put(UInt64(cmdlineSize), 4, 0x238)
        put(prefAddress, 8, 0x258)
        put(UInt64(initSize), 4, 0x260)
        // A recognisable payload: byte i of the protected-mode kernel is i & 0xFF.
        for i in 0..<payloadSize { b[(sects + 1) * 512 + i] = UInt8(truncatingIfNeeded: i) }
        return b
    }

    static let ecam = ReservedRange(name: "ECAM", base: 0xB000_0000, size: 0x1000_0000)
    static let ioapic = ReservedRange(name: "IOAPIC", base: 0xFEC0_0000, size: 0x1000)
    static let hpet = ReservedRange(name: "HPET", base: 0xFED0_0000, size: 0x1000)
    static let lapic = ReservedRange(name: "LAPIC", base: 0xFEE0_0000, size: 0x1000)

    /// 2 GiB below the PCI hole, 2 GiB above 4 GiB, q35-like MMIO.
    static let memory = MemoryLayoutDescription(
        lowRAMTop: 0x8000_0000, highRAMSize: 0x8000_0000, reserved: [ecam, ioapic, hpet, lapic])

    static var realKernelPath: String? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/boot")) ?? []
        return names.filter { $0.hasPrefix("vmlinuz-6.1.") }.sorted().last.map { "/boot/" + $0 }
    }
}

/// Guest memory as a list of written chunks; reads find the newest chunk covering each byte.
/// Zeroed ranges are kept as a range, not as bytes (a hostile ELF's bss may be gigabytes).
final class SparseGuestMemory: GuestMemoryWriter {
    /// `bytes` nil: `count` zero bytes.
    private(set) var chunks: [(address: UInt64, count: UInt64, bytes: [UInt8]?)] = []

    func write(at address: UInt64, bytes: [UInt8]) throws { chunks.append((address, UInt64(bytes.count), bytes)) }
    func zero(at address: UInt64, count: UInt64) throws { chunks.append((address, count, nil)) }

    func byte(at a: UInt64) -> UInt8 {
        for c in chunks.reversed() where a >= c.address && a - c.address < c.count {
            return c.bytes?[Int(a - c.address)] ?? 0
        }
        return 0
    }

    func read(at a: UInt64, count: Int) -> [UInt8] { (0..<count).map { byte(at: a + UInt64($0)) } }

    func load64(_ a: UInt64) -> UInt64 {
        read(at: a, count: 8).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
}

/// Little-endian reads from a byte array, for checking boot_params.
extension Array where Element == UInt8 {
    func bootLE(_ offset: Int, _ width: Int) -> UInt64 {
        (0..<width).reversed().reduce(0) { $0 << 8 | UInt64(self[offset + $1]) }
    }
}
