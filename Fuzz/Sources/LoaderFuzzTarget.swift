import Firmware
import VMMBase

/// The `loaders` target: a kernel image from an untrusted file. The first byte picks the
/// protocol (even: bzImage, odd: ELF/PVH) and, with the second, the RAM size and initrd
/// length; the rest is the image. Parsing, planning (e820, placement of kernel, initrd, command
/// line, boot structures) and applying the plan to a RAM-sized sink must refuse bad images
/// with an error, never trap, and never write outside RAM.
enum LoaderFuzzRun {
    static func run(_ input: [UInt8]) {
        guard input.count > 2 else { return }
        let lowRAMTop = UInt64(16 + Int(input[1] & 0x3F)) << 20   // 16-79 MiB
        let initrd = [UInt8](repeating: 0xA5, count: Int(input[0] >> 1) << 12)
        let image = Array(input[2...])
        let memory = MemoryLayoutDescription(lowRAMTop: lowRAMTop, reserved: [
            ReservedRange(name: "ecam", base: 0xB000_0000, size: 0x1000_0000),
            ReservedRange(name: "lapic", base: 0xFEE0_0000, size: 0x10_0000),
        ])
        let sink = BoundedRAM(size: lowRAMTop)
        if input[0] & 1 == 0 {
            guard let kernel = try? BzImage(bytes: image),
                  let plan = try? LinuxBootPlan.make(kernel: kernel, initrd: initrd, commandLine: "console=ttyS0",
                                                     memory: memory, acpiRSDPAddress: 0xE_0000) else { return }
            apply { try plan.apply(to: sink) }
        } else {
            guard let kernel = try? ELFKernel(bytes: image),
                  let plan = try? PVHBootPlan.make(kernel: kernel, initrd: initrd, commandLine: "console=ttyS0",
                                                   memory: memory, acpiRSDPAddress: 0xE_0000) else { return }
            apply { try plan.apply(to: sink) }
        }
    }

    /// A plan the planner accepted must fit the RAM it was planned for.
    static func apply(_ body: () throws -> Void) {
        do { try body() } catch { fatalError("an accepted boot plan does not fit its RAM: \(error)") }
    }
}

/// Guest RAM of `size` bytes that checks every write's bounds without keeping the bytes (a
/// bss can be gigabytes long in a hostile ELF: the planner must have refused those already).
struct BoundedRAM: GuestMemoryWriter {
    let size: UInt64
    struct OutOfRAM: Error { let address: UInt64, count: UInt64 }

    func check(_ address: UInt64, _ count: UInt64) throws {
        let (end, overflow) = address.addingReportingOverflow(count)
        guard !overflow, end <= size else { throw OutOfRAM(address: address, count: count) }
    }
    func write(at address: UInt64, bytes: [UInt8]) throws { try check(address, UInt64(bytes.count)) }
    func zero(at address: UInt64, count: UInt64) throws { try check(address, count) }
}
