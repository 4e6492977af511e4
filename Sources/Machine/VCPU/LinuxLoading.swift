import Firmware
import VMMBase

/// Why a Linux boot could not be prepared.
public enum LinuxLoadError: Error, CustomStringConvertible {
    case kernelImage(BzImageError)
    case plan(LinuxBootError)
    case memoryLayout(MemoryLayoutError)
    case firmwareTables(FirmwareError)
    /// The plan wrote outside guest RAM (a plan/layout mismatch).
    case outsideRAM(address: UInt64, count: Int)

    public var description: String {
        switch self {
        case .kernelImage(let e): "kernel image: \(e)"
        case .plan(let e): "Linux boot: \(e)"
        case .memoryLayout(let e): "memory layout: \(e)"
        case .firmwareTables(let e): "ACPI tables: \(e)"
        case .outsideRAM(let a, let n): "\(n) bytes at 0x\(String(a, radix: 16)) are not guest RAM"
        }
    }
}

extension Machine {
    /// Bytes of RAM mapped at guest-physical 0 (the rest is at 4 GiB).
    public var lowRAMSize: UInt64 { min(ram.size, configuration.layout.lowMemoryLimit) }

    /// Device ranges the guest must leave alone, reported reserved in the e820 map: ECAM, the
    /// IOAPIC, HPET and LAPIC pages, and the pages KVM uses for VMX real mode (TSS, identity map).
    public var reservedRanges: [ReservedRange] {
        let layout = configuration.layout
        return [
            ReservedRange(name: "ecam", base: layout.ecamBase, size: layout.ecamSize),
            ReservedRange(name: "ioapic", base: 0xFEC0_0000, size: 0x1000),
            ReservedRange(name: "hpet", base: 0xFED0_0000, size: 0x1000),
            ReservedRange(name: "lapic", base: 0xFEE0_0000, size: 0x10_0000),
            ReservedRange(name: "kvm-identity-map", base: 0xFEFF_C000, size: 0x1000),
            ReservedRange(name: "kvm-tss", base: 0xFFFB_D000, size: 0x3000),
        ]
    }

    /// This machine's memory as the Linux boot protocol describes it: RAM below the low limit,
    /// the rest from 4 GiB, and the reserved device ranges.
    public var memoryLayoutDescription: MemoryLayoutDescription {
        MemoryLayoutDescription(lowRAMTop: lowRAMSize, highRAMSize: ram.size - lowRAMSize, reserved: reservedRanges)
    }

    /// The offset in `ram.mapping` of `count` bytes at guest-physical `address`, when all of
    /// them are RAM (below the low top, or in the block at 4 GiB).
    public func ramOffset(ofGuestAddress address: UInt64, count: Int) -> Int? {
        let low = lowRAMSize
        let n = UInt64(count)
        if address < low {
            return n <= low - address ? Int(address) : nil
        }
        let highBase: UInt64 = 1 << 32
        let highSize = ram.size - low
        guard address >= highBase, address - highBase < highSize, n <= highSize - (address - highBase) else {
            return nil
        }
        return Int(low + (address - highBase))
    }

    /// Plans a Linux boot for this machine's memory and writes it (zero page, command line,
    /// GDT, page tables, kernel, initrd) into guest RAM. The returned plan holds the boot
    /// processor's register state. `acpiRSDPAddress` (tables already in RAM) goes into
    /// boot_params.
    public func loadLinux(kernel: [UInt8], initrd: [UInt8]?, commandLine: String,
                          acpiRSDPAddress: UInt64? = nil) throws(LinuxLoadError) -> LinuxBootPlan {
        let image: BzImage
        do { image = try BzImage(bytes: kernel) } catch { throw .kernelImage(error) }
        let plan: LinuxBootPlan
        do {
            plan = try LinuxBootPlan.make(kernel: image, initrd: initrd, commandLine: commandLine,
                                          memory: memoryLayoutDescription, acpiRSDPAddress: acpiRSDPAddress)
        } catch {
            throw .plan(error)
        }
        for write in plan.writes {
            guard let offset = ramOffset(ofGuestAddress: write.address, count: write.bytes.count) else {
                throw .outsideRAM(address: write.address, count: write.bytes.count)
            }
            write.bytes.withUnsafeBytes { source in
                UnsafeMutableRawBufferPointer(rebasing: ram.mapping.bytes[offset..<offset + source.count])
                    .copyMemory(from: source)
            }
        }
        return plan
    }
}
