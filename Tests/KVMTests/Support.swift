import HostOS
import Testing
import KVM
import Synchronization
import VMMBase

/// Whether the host's /dev/kvm can be opened; tests that need it are skipped otherwise.
let kvmAvailable = KVMSystem.isAvailable()
let noKVM = "/dev/kvm is absent or not accessible to this user"

/// The repository root, found from this file's path (Tests/KVMTests/Support.swift).
let repositoryRoot: String = {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}()

/// A tiny platform for guests: CF8/CFC over a few fake bus-0 functions, and a UART at 0x3F8
/// whose line status always says "transmitter empty". Everything else reads as all ones.
final class FakePlatform: VCPUExitHandler {
    /// device number -> (vendor, device) for function 0 of bus 0.
    let functions: [UInt8: (vendor: UInt16, device: UInt16)]

    private struct State {
        var configAddress: UInt32 = 0
        var uart: [UInt8] = []
        var unexpected: [String] = []
    }
    private let state = Mutex(State())

    init(functions: [UInt8: (vendor: UInt16, device: UInt16)]) {
        self.functions = functions
    }

    var uartOutput: String { String(decoding: uartBytes, as: UTF8.self) }
    var uartBytes: [UInt8] { state.withLock { $0.uart } }
    var unexpectedAccesses: [String] { state.withLock { $0.unexpected } }

    func portRead(_ port: UInt16, width: AccessWidth) -> UInt64 {
        state.withLock { state in
            switch (port, width) {
            case (0xCF8, .dword): return UInt64(state.configAddress)
            case (0xCFC, .dword): return UInt64(configRead(state.configAddress))
            case (0x3FD, .byte): return 0x60  // THR empty, transmitter empty
            default:
                state.unexpected.append("read port 0x\(String(port, radix: 16)) \(width)")
                return width.allOnes
            }
        }
    }

    func portWrite(_ port: UInt16, width: AccessWidth, value: UInt64) {
        state.withLock { state in
            switch (port, width) {
            case (0xCF8, .dword): state.configAddress = UInt32(truncatingIfNeeded: value)
            case (0x3F8, .byte): state.uart.append(UInt8(truncatingIfNeeded: value))
            default: state.unexpected.append("write port 0x\(String(port, radix: 16)) \(width) = 0x\(String(value, radix: 16))")
            }
        }
    }

    func mmioRead(_ address: UInt64, width: AccessWidth) -> UInt64 {
        state.withLock { $0.unexpected.append("read mmio 0x\(String(address, radix: 16)) \(width)") }
        return width.allOnes
    }

    func mmioWrite(_ address: UInt64, width: AccessWidth, value: UInt64) {
        state.withLock { $0.unexpected.append("write mmio 0x\(String(address, radix: 16)) \(width)") }
    }

    private func configRead(_ address: UInt32) -> UInt32 {
        guard address & 0x8000_0000 != 0 else { return 0xFFFF_FFFF }
        let bus = (address >> 16) & 0xFF, device = UInt8((address >> 11) & 0x1F)
        let function = (address >> 8) & 0x7, register = address & 0xFC
        guard bus == 0, function == 0, let id = functions[device] else { return 0xFFFF_FFFF }
        return register == 0 ? UInt32(id.device) << 16 | UInt32(id.vendor) : 0
    }
}

/// A VM with 1 MiB of RAM at 0 holding `code` at 0x7C00, and one vCPU set to start there in
/// real mode (CS = 0, IP = 0x7C00).
func makeRealModeGuest(_ code: [UInt8]) throws -> (KVMVirtualMachine, KVMVCPU) {
    let system = try KVMSystem()
    let vm = try system.createVirtualMachine()
    let ram = SharedMapping(try MemoryMapping.anonymous(count: 1 << 20))
    ram.bytes.baseAddress!.advanced(by: 0x7C00).copyMemory(from: code, byteCount: code.count)
    try vm.mapMemory(guestAddress: 0, mapping: ram)

    let vcpu = try vm.createVCPU(id: 0)
    var sregs = try vcpu.specialRegisters()
    sregs.cs = .realMode(selector: 0, code: true)
    for keyPath in [\SpecialRegisters.ds, \.es, \.fs, \.gs, \.ss] {
        sregs[keyPath: keyPath] = .realMode(selector: 0, code: false)
    }
    try vcpu.setSpecialRegisters(sregs)
    var regs = Registers()
    regs.rip = 0x7C00
    regs.rflags = 0x2
    regs.rsp = 0x7000
    try vcpu.setRegisters(regs)
    return (vm, vcpu)
}

/// Runs `vcpus` under a `VCPURunner` with a watchdog: if they have not stopped within
/// `timeoutMilliseconds`, the runner is stopped (kicking KVM_RUN) and nil is returned. A kick
/// that does not get the threads out within 2 s is recorded as an issue.
func runWithWatchdog(_ vcpus: [KVMVCPU], handler: any VCPUExitHandler, timeoutMilliseconds: Int = 5000,
                     options: VCPURunner.Options = .init()) throws -> [VCPURunner.StopReason]? {
    let runner = try VCPURunner(vcpus: vcpus, handler: handler, options: options)
    try runner.start()
    if runner.waitUntilFinished(timeoutMilliseconds: timeoutMilliseconds) { return runner.join() }
    runner.requestStop()
    // The kick must get the threads out; if even that fails, do not block the test run on join.
    if runner.waitUntilFinished(timeoutMilliseconds: 2000) {
        _ = runner.join()
    } else {
        Issue.record("vCPU threads did not leave KVM_RUN within 2 s of a stop request")
    }
    return nil
}
