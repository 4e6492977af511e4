import Firmware
import GuestMemory
import VMMBase

/// Why a Linux boot could not be prepared.
public enum LinuxLoadError: Error, CustomStringConvertible {
    case kernelImage(BzImageError)
    /// An ELF kernel file (PVH boot) that cannot be booted.
    case elfKernel(ELFKernelError)
    case plan(LinuxBootError)
    case pvhPlan(PVHBootError)
    case memoryLayout(MemoryLayoutError)
    case firmwareTables(FirmwareError)
    /// The plan wrote outside guest RAM (a plan/layout mismatch).
    case outsideRAM(address: UInt64, count: UInt64)
    /// The kernel or initrd could not be read (again, for a reset).
    case unreadableImage(String)

    public var description: String {
        switch self {
        case .kernelImage(let e): "kernel image: \(e)"
        case .elfKernel(let e): "ELF kernel: \(e)"
        case .plan(let e): "Linux boot: \(e)"
        case .pvhPlan(let e): "PVH boot: \(e)"
        case .memoryLayout(let e): "memory layout: \(e)"
        case .firmwareTables(let e): "ACPI tables: \(e)"
        case .outsideRAM(let a, let n): "\(n) bytes at 0x\(String(a, radix: 16)) are not guest RAM"
        case .unreadableImage(let reason): reason
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

    /// Plans a Linux boot for this machine's memory and writes it into guest RAM. The kernel file
    /// picks the protocol: an ELF `vmlinux` boots through PVH (its segments, hvm_start_info, the
    /// command line, GDT), anything else as a bzImage through the 64-bit boot protocol (zero page,
    /// command line, GDT, page tables). The result holds the boot processor's register state.
    /// `acpiRSDPAddress` (tables already in RAM) goes into boot_params or hvm_start_info.
    public func loadLinux(kernel: [UInt8], initrd: [UInt8]?, commandLine: String,
                          acpiRSDPAddress: UInt64? = nil) throws(LinuxLoadError) -> LinuxBoot {
        let boot: LinuxBoot
        if ELFKernel.isELF(kernel) {
            let image: ELFKernel
            do { image = try ELFKernel(bytes: kernel) } catch { throw .elfKernel(error) }
            do {
                boot = .pvh(try PVHBootPlan.make(kernel: image, initrd: initrd, commandLine: commandLine,
                                                 memory: memoryLayoutDescription, acpiRSDPAddress: acpiRSDPAddress))
            } catch {
                throw .pvhPlan(error)
            }
        } else {
            let image: BzImage
            do { image = try BzImage(bytes: kernel) } catch { throw .kernelImage(error) }
            do {
                boot = .bzImage(try LinuxBootPlan.make(kernel: image, initrd: initrd, commandLine: commandLine,
                                                       memory: memoryLayoutDescription, acpiRSDPAddress: acpiRSDPAddress))
            } catch {
                throw .plan(error)
            }
        }
        for write in boot.writes {
            // Checked here too, not only by the plan: RAM's layout is the Machine's to know.
            // The whole span is checked before anything is written.
            guard let count = write.count, count <= UInt64(Int.max),
                  count == 0 || guestMemory.isMapped(GuestAddress(write.address), length: count) else {
                throw .outsideRAM(address: write.address, count: write.count ?? .max)
            }
            let bytes = Array(write.bytes.prefix(Int(count)))
            do throws(GuestMemoryError) {
                try guestMemory.write(at: GuestAddress(write.address), bytes: bytes)
                try guestMemory.fill(at: GuestAddress(write.address + UInt64(bytes.count)), count: count - UInt64(bytes.count))
            } catch {
                throw .outsideRAM(address: write.address, count: count)
            }
        }
        return boot
    }
}
