import GuestMemory
import HostOS
import KVM
import VMMBase

/// A vCPU exit lands on the machine's own entry points: port I/O and MMIO dispatch are the
/// same for a KVM guest as for a test driving the machine.
extension Machine: VCPUExitHandler {}

public enum KVMRunError: Error, CustomStringConvertible {
    case kvm(SystemError)
    case programTooLarge(size: Int, loadAddress: UInt64, memory: UInt64)
    case timedOut(milliseconds: Int)

    public var description: String {
        switch self {
        case .kvm(let error): "KVM: \(error)"
        case .programTooLarge(let size, let loadAddress, let memory):
            "a \(size)-byte program at 0x\(String(loadAddress, radix: 16)) does not fit in \(memory >> 20) MiB of guest RAM"
        case .timedOut(let ms): "the guest did not stop within \(ms) ms"
        }
    }
}

extension Machine {
    /// Runs a 16-bit real-mode program on one KVM vCPU (no in-kernel irqchip) until it halts:
    /// the smoke test of the vCPU loop on hosts whose KVM runs only real-mode code. The
    /// program is copied to `loadAddress` (CS:IP = 0:loadAddress). RAM is mapped as the
    /// platform layer shows it, and follows PAM and SMRAM writes the program makes.
    public func runRealModeProgram(_ program: [UInt8], loadAddress: UInt64 = 0x7C00,
                                   timeoutMilliseconds: Int = 5000) throws(KVMRunError) -> [VCPURunner.StopReason] {
        guard loadAddress < 0x10000, UInt64(program.count) <= min(ram.size, 0x10000) - loadAddress else {
            throw .programTooLarge(size: program.count, loadAddress: loadAddress, memory: ram.size)
        }
        do {
            let vm = try KVMSystem().createVirtualMachine()
            let slots = followMemorySlots(in: vm)
            defer { stopFollowing(slots) }
            do throws(GuestMemoryError) {
                try guestMemory.write(at: GuestAddress(loadAddress), bytes: program)
            } catch {
                throw KVMRunError.programTooLarge(size: program.count, loadAddress: loadAddress, memory: ram.size)
            }
            let vcpu = try vm.createVCPU(id: 0)
            var special = try vcpu.specialRegisters()
            special.cs = .realMode(selector: 0, code: true)
            try vcpu.setSpecialRegisters(special)
            var registers = Registers()
            registers.rip = loadAddress
            registers.rflags = 2
            try vcpu.setRegisters(registers)
            let runner = try VCPURunner(vcpus: [vcpu], handler: self)
            try runner.start()
            guard runner.waitUntilFinished(timeoutMilliseconds: timeoutMilliseconds) else {
                runner.requestStop()
                _ = runner.join()
                throw KVMRunError.timedOut(milliseconds: timeoutMilliseconds)
            }
            return runner.join()
        } catch let error as KVMRunError {
            throw error
        } catch let error as SystemError {
            throw .kvm(error)
        } catch {
            throw .kvm(SystemError(.invalidArgument, operation: "kvm", context: "\(error)"))
        }
    }
}

/// Whether this host's KVM runs 64-bit guests, measured (see `LongModeProbe`): callers above
/// Machine decide between booting a guest here and the nested rig.
public typealias LongModeProbe = KVM.LongModeProbe
