import HostOS
import Synchronization
import VMMBase

/// Whether this host's KVM runs 64-bit guest code at a usable speed, found out by running some:
/// a vCPU entered directly in long mode (identity-mapped 2 MiB page, no firmware) counts down a
/// loop of 2^20 iterations, writes a marker to a port and halts. Some hosts enter a 64-bit
/// guest but execute it about a thousand times slower than native (measured on the
/// development host: 1.7 s for the loop, where hardware takes about 1 ms and a nested guest
/// under TCG about 20 ms); a Linux boot there never gets past its decompressor. So the answer
/// is measured, never assumed from CPUID or KVM capabilities.
///
/// ```swift
/// switch LongModeProbe.run() {
/// case .runs: boot Linux here
/// case .hangs, .unavailable, .failed: use the nested rig
/// }
/// ```
public enum LongModeProbe {
    public enum Outcome: Sendable, Equatable, CustomStringConvertible {
        /// The guest ran the loop, wrote `marker` to `port` and halted within the speed limit.
        case runs(microseconds: UInt64)
        /// It did, but slower than `limit`: too slow to boot an operating system.
        case tooSlow(microseconds: UInt64, limit: UInt64)
        /// The vCPU did not come back within the timeout (stopped by a kick afterwards).
        case hangs(milliseconds: Int)
        /// No KVM here (no /dev/kvm, no permission).
        case unavailable(SystemError)
        /// KVM refused the set-up or the vCPU stopped another way.
        case failed(String)

        public var runs64BitGuests: Bool {
            if case .runs = self { return true }
            return false
        }

        public var description: String {
            switch self {
            case .runs(let us): "KVM runs 64-bit guests (2^20 loop iterations took \(us) µs)"
            case .tooSlow(let us, let limit):
                "KVM runs 64-bit guest code, but \(us / 1000) ms for 2^20 loop iterations is too slow to boot a guest (limit \(limit / 1000) ms)"
            case .hangs(let ms): "KVM did not return from a 64-bit guest within \(ms) ms (this host runs only real-mode guests)"
            case .unavailable(let error): "no usable KVM: \(error)"
            case .failed(let why): "the 64-bit probe failed: \(why)"
            }
        }
    }

    /// The port and value the probe program writes.
    public static let port: UInt16 = 0x510
    public static let marker: UInt8 = 0x64

    /// Guest-physical layout: PML4, PDPT and page directory, then the code.
    static let pml4: Int = 0x1000, pdpt: Int = 0x2000, pageDirectory: Int = 0x3000, code: Int = 0x8000
    /// mov rcx, 2^20; loop: dec rcx; jnz loop; mov rax, marker << 32; shr rax, 32;
    /// mov dx, port; out dx, al; hlt. Only 64-bit code writes the marker: in 32-bit mode 0x48
    /// is `dec eax` and the rest decodes differently.
    static var program: [UInt8] {
        [0x48, 0xC7, 0xC1, 0x00, 0x00, 0x10, 0x00,
         0x48, 0xFF, 0xC9, 0x75, 0xFB,
         0x48, 0xB8, 0, 0, 0, 0, marker, 0, 0, 0,
         0x48, 0xC1, 0xE8, 0x20,
         0x66, 0xBA, UInt8(port & 0xFF), UInt8(port >> 8),
         0xEE, 0xF4]
    }

    /// `speedLimitMicroseconds`: the longest the loop may take for the host to count as able to
    /// run guests (500 ms: 25 times a nested TCG guest, a third of the slow host's time).
    public static func run(kvmPath: String = KVMSystem.defaultPath, timeoutMilliseconds: Int = 5000,
                           speedLimitMicroseconds: UInt64 = 500_000) -> Outcome {
        let system: KVMSystem
        do {
            system = try KVMSystem(path: kvmPath)
        } catch {
            return .unavailable(error)
        }
        do throws(SystemError) {
            let vm = try system.createVirtualMachine()
            let ram = SharedMapping(try MemoryMapping.anonymous(count: 2 << 20))
            writeTables(into: ram.bytes)
            try vm.mapMemory(guestAddress: 0, mapping: ram)
            let vcpu = try vm.createVCPU(id: 0)
            var special = try vcpu.specialRegisters()
            setLongMode(&special)
            try vcpu.setSpecialRegisters(special)
            var registers = Registers()
            registers.rip = UInt64(code)
            registers.rsp = UInt64(code)
            registers.rflags = 2
            try vcpu.setRegisters(registers)

            let recorder = PortRecorder()
            let runner = try VCPURunner(vcpus: [vcpu], handler: recorder)
            let start = HostClock.monotonicNanoseconds()
            try runner.start()
            guard runner.waitUntilFinished(timeoutMilliseconds: timeoutMilliseconds) else {
                runner.requestStop()
                _ = runner.join()
                return .hangs(milliseconds: timeoutMilliseconds)
            }
            let elapsed = (HostClock.monotonicNanoseconds() - start) / 1000
            let reasons = runner.join()
            guard reasons == [.halted] else { return .failed("the vCPU stopped with \(reasons)") }
            guard recorder.writes == [PortWrite(port: port, value: UInt64(marker))] else {
                return .failed("the vCPU halted without the expected port write (saw \(recorder.writes))")
            }
            return elapsed <= speedLimitMicroseconds ? .runs(microseconds: elapsed)
                : .tooSlow(microseconds: elapsed, limit: speedLimitMicroseconds)
        } catch {
            return .failed("\(error)")
        }
    }

    /// Identity map of the first 2 MiB (one large page) and the program.
    static func writeTables(into memory: UnsafeMutableRawBufferPointer) {
        let present: UInt64 = 1, writable: UInt64 = 2, largePage: UInt64 = 1 << 7
        memory.storeBytes(of: (UInt64(pdpt) | present | writable).littleEndian, toByteOffset: pml4, as: UInt64.self)
        memory.storeBytes(of: (UInt64(pageDirectory) | present | writable).littleEndian, toByteOffset: pdpt, as: UInt64.self)
        memory.storeBytes(of: (present | writable | largePage).littleEndian, toByteOffset: pageDirectory, as: UInt64.self)
        for (i, byte) in program.enumerated() { memory[code + i] = byte }
    }

    /// Paging on with PAE and EFER.LME/LMA, a 64-bit code segment and flat data segments.
    static func setLongMode(_ s: inout SpecialRegisters) {
        let code = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x08, type: 0xB, long: true, granularity: true)
        let data = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0x3, defaultSize: true, granularity: true)
        s.cs = code
        s.ds = data; s.es = data; s.fs = data; s.gs = data; s.ss = data
        s.cr3 = UInt64(pml4)
        s.cr4 = 1 << 5                           // PAE
        s.cr0 = 1 << 0 | 1 << 4 | 1 << 31        // PE, ET, PG
        s.efer = 1 << 8 | 1 << 10                // LME, LMA
    }

    struct PortWrite: Equatable, Sendable, CustomStringConvertible {
        let port: UInt16, value: UInt64
        var description: String { "0x\(String(value, radix: 16)) to port 0x\(String(port, radix: 16))" }
    }

    final class PortRecorder: VCPUExitHandler {
        private let log = Mutex<[PortWrite]>([])
        var writes: [PortWrite] { log.withLock { $0 } }
        func portRead(_ port: UInt16, width: AccessWidth) -> UInt64 { width.allOnes }
        func portWrite(_ port: UInt16, width: AccessWidth, value: UInt64) {
            log.withLock { $0.append(PortWrite(port: port, value: value)) }
        }
        func mmioRead(_ address: UInt64, width: AccessWidth) -> UInt64 { width.allOnes }
        func mmioWrite(_ address: UInt64, width: AccessWidth, value: UInt64) {}
    }
}
