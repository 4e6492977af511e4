import CLinux
import HostOS

/// A virtual CPU: its fd and its kvm_run mapping.
///
/// `run()` must be called from one thread at a time (the vCPU's own thread). The register
/// calls are for setup before running or from that thread. `requestImmediateExit` may be
/// called from any thread.
public final class KVMVCPU: Sendable {
    public let id: UInt32
    /// The VM, kept alive (with its memory slots' mappings) as long as this vCPU.
    public let virtualMachine: KVMVirtualMachine
    let fd: FileDescriptor
    private let runMapping: SharedMapping
    /// The kvm_run mapping, for decoding exits and moving their data.
    public let runArea: KVMRunArea

    init(id: UInt32, virtualMachine: KVMVirtualMachine, fd: consuming FileDescriptor,
         runMappingSize: Int) throws(SystemError) {
        let mapping = try MemoryMapping(mapping: fd, count: runMappingSize, protection: .readWrite, sharing: .shared)
        self.id = id
        self.virtualMachine = virtualMachine
        self.fd = fd
        self.runMapping = SharedMapping(mapping)
        self.runArea = KVMRunArea(runMapping.bytes)
        guard runMappingSize >= KVMLayout.current.runSize else {
            throw SystemError(.invalidArgument, operation: "KVM_GET_VCPU_MMAP_SIZE",
                              context: "\(runMappingSize) is smaller than struct kvm_run")
        }
    }

    /// KVM_RUN once. A signal or immediate_exit gives `.interrupted`; other failures throw.
    public func run() throws(SystemError) -> VCPUExit {
        do throws(SystemError) {
            try ioctl(fd, KVMRequest.run)
        } catch where error.errno == .interrupted || error.errno == .wouldBlock {
            return .interrupted
        }
        return runArea.decodeExit()
    }

    /// Sets or clears kvm_run.immediate_exit (any thread).
    public func requestImmediateExit(_ on: Bool = true) { runArea.setImmediateExit(on) }

    // MARK: Registers

    public func registers() throws(SystemError) -> Registers {
        var raw = kvm_regs()
        try ioctl(fd, KVMRequest.getRegs, &raw)
        return Registers(raw)
    }

    public func setRegisters(_ registers: Registers) throws(SystemError) {
        var raw = registers.raw
        try ioctl(fd, KVMRequest.setRegs, &raw)
    }

    public func specialRegisters() throws(SystemError) -> SpecialRegisters {
        var raw = kvm_sregs()
        try ioctl(fd, KVMRequest.getSregs, &raw)
        return SpecialRegisters(raw)
    }

    public func setSpecialRegisters(_ registers: SpecialRegisters) throws(SystemError) {
        var raw = registers.raw
        try ioctl(fd, KVMRequest.setSregs, &raw)
    }

    /// KVM_SET_CPUID2: the CPUID leaves the guest sees (typically `KVMSystem.supportedCPUID()`
    /// adjusted: APIC ids, hypervisor bit, topology).
    public func setCPUID(_ entries: [CPUIDEntry]) throws(SystemError) {
        let layout = KVMLayout.current
        try withFlexibleBuffer(header: layout.cpuid2Header, stride: layout.cpuidEntrySize,
                               count: entries.count) { buffer in
            for (i, entry) in entries.enumerated() {
                buffer.storeBytes(of: entry.raw, toByteOffset: layout.cpuid2Header + i * layout.cpuidEntrySize,
                                  as: kvm_cpuid_entry2.self)
            }
        } call: { (pointer) throws(SystemError) in
            try ioctl(fd, KVMRequest.setCPUID2, pointer)
        }
    }

    /// KVM_SET_MSRS. Fails with EINVAL naming the first MSR KVM refused.
    public func setMSRs(_ entries: [MSREntry]) throws(SystemError) {
        let layout = KVMLayout.current
        var written: Int32 = 0
        try withFlexibleBuffer(header: layout.msrsHeader, stride: layout.msrEntrySize, count: entries.count) { buffer in
            for (i, entry) in entries.enumerated() {
                var raw = kvm_msr_entry()
                raw.index = entry.index
                raw.data = entry.value
                buffer.storeBytes(of: raw, toByteOffset: layout.msrsHeader + i * layout.msrEntrySize,
                                  as: kvm_msr_entry.self)
            }
        } call: { (pointer) throws(SystemError) in
            written = try ioctl(fd, KVMRequest.setMSRs, pointer)
        }
        if Int(written) < entries.count {
            let refused = entries[Int(written)].index
            throw SystemError(.invalidArgument, operation: "KVM_SET_MSRS",
                              context: "MSR 0x\(String(refused, radix: 16)) refused (\(written) of \(entries.count) set)")
        }
    }

    /// KVM_GET_MSRS for `indices`. Fails with EINVAL naming the first MSR KVM could not read.
    public func msrs(_ indices: [UInt32]) throws(SystemError) -> [MSREntry] {
        let layout = KVMLayout.current
        var result: [MSREntry] = []
        var read: Int32 = 0
        try withFlexibleBuffer(header: layout.msrsHeader, stride: layout.msrEntrySize, count: indices.count) { buffer in
            for (i, index) in indices.enumerated() {
                var raw = kvm_msr_entry()
                raw.index = index
                buffer.storeBytes(of: raw, toByteOffset: layout.msrsHeader + i * layout.msrEntrySize,
                                  as: kvm_msr_entry.self)
            }
        } call: { (pointer) throws(SystemError) in
            read = try ioctl(fd, KVMRequest.getMSRs, pointer)
            let buffer = UnsafeRawPointer(pointer)
            for i in 0..<min(Int(read), indices.count) {
                let raw = buffer.loadUnaligned(fromByteOffset: layout.msrsHeader + i * layout.msrEntrySize,
                                               as: kvm_msr_entry.self)
                result.append(MSREntry(index: raw.index, value: raw.data))
            }
        }
        if Int(read) < indices.count {
            throw SystemError(.invalidArgument, operation: "KVM_GET_MSRS",
                              context: "MSR 0x\(String(indices[Int(read)], radix: 16)) unreadable")
        }
        return result
    }
}

/// Builds a `header` + `count` x `stride` structure whose first 32-bit word is the count
/// (kvm_cpuid2, kvm_msrs), fills it, and passes it to `call`.
private func withFlexibleBuffer(
    header: Int, stride: Int, count: Int,
    fill: (UnsafeMutableRawBufferPointer) -> Void,
    call: (UnsafeMutableRawPointer) throws(SystemError) -> Void
) throws(SystemError) {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: header + max(count, 1) * stride, alignment: 8)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
    buffer.storeBytes(of: UInt32(count), as: UInt32.self)
    fill(buffer)
    try call(buffer.baseAddress!)
}
