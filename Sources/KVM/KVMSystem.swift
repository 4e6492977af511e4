import CLinux
import HostOS

/// A KVM capability number (`KVM_CAP_*`) for `KVMSystem.checkExtension` and
/// `KVMVirtualMachine.checkExtension`.
public struct KVMCapability: RawRepresentable, Hashable, Sendable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let irqchip = KVMCapability(rawValue: KVM_CAP_IRQCHIP)
    public static let hlt = KVMCapability(rawValue: KVM_CAP_HLT)
    public static let userMemory = KVMCapability(rawValue: KVM_CAP_USER_MEMORY)
    public static let setTSSAddress = KVMCapability(rawValue: KVM_CAP_SET_TSS_ADDR)
    public static let setIdentityMapAddress = KVMCapability(rawValue: KVM_CAP_SET_IDENTITY_MAP_ADDR)
    public static let extendedCPUID = KVMCapability(rawValue: KVM_CAP_EXT_CPUID)
    public static let memorySlotCount = KVMCapability(rawValue: KVM_CAP_NR_MEMSLOTS)
    public static let vcpuCount = KVMCapability(rawValue: KVM_CAP_NR_VCPUS)
    public static let maxVCPUCount = KVMCapability(rawValue: KVM_CAP_MAX_VCPUS)
    public static let pit2 = KVMCapability(rawValue: KVM_CAP_PIT2)
    public static let irqRouting = KVMCapability(rawValue: KVM_CAP_IRQ_ROUTING)
    public static let irqfd = KVMCapability(rawValue: KVM_CAP_IRQFD)
    public static let irqfdResample = KVMCapability(rawValue: KVM_CAP_IRQFD_RESAMPLE)
    public static let ioeventfd = KVMCapability(rawValue: KVM_CAP_IOEVENTFD)
    public static let signalMSI = KVMCapability(rawValue: KVM_CAP_SIGNAL_MSI)
    public static let splitIRQChip = KVMCapability(rawValue: KVM_CAP_SPLIT_IRQCHIP)
    public static let immediateExit = KVMCapability(rawValue: KVM_CAP_IMMEDIATE_EXIT)
    public static let readOnlyMemory = KVMCapability(rawValue: KVM_CAP_READONLY_MEM)
    public static let x2apicAPI = KVMCapability(rawValue: KVM_CAP_X2APIC_API)
    public static let tscDeadlineTimer = KVMCapability(rawValue: KVM_CAP_TSC_DEADLINE_TIMER)
    /// Answers the coalesced ring's page offset in a vCPU's mmap (0: none).
    public static let coalescedMMIO = KVMCapability(rawValue: KVM_CAP_COALESCED_MMIO)
    public static let coalescedPIO = KVMCapability(rawValue: KVM_CAP_COALESCED_PIO)
}

/// One CPUID leaf as KVM reports and accepts it (`struct kvm_cpuid_entry2`).
public struct CPUIDEntry: Hashable, Sendable {
    public var function: UInt32
    public var index: UInt32
    /// `KVM_CPUID_FLAG_*` (e.g. significant index).
    public var flags: UInt32
    public var eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32

    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0,
                eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function
        self.index = index
        self.flags = flags
        self.eax = eax
        self.ebx = ebx
        self.ecx = ecx
        self.edx = edx
    }

    init(_ raw: kvm_cpuid_entry2) {
        self.init(function: raw.function, index: raw.index, flags: raw.flags,
                  eax: raw.eax, ebx: raw.ebx, ecx: raw.ecx, edx: raw.edx)
    }

    var raw: kvm_cpuid_entry2 {
        var e = kvm_cpuid_entry2()
        e.function = function
        e.index = index
        e.flags = flags
        e.eax = eax
        e.ebx = ebx
        e.ecx = ecx
        e.edx = edx
        return e
    }
}

/// The open /dev/kvm: API version, capabilities, and the factory for virtual machines.
public final class KVMSystem: Sendable {
    /// The only stable KVM API version there has ever been.
    public static let requiredAPIVersion: Int32 = 12
    public static let defaultPath = "/dev/kvm"

    let device: FileDescriptor
    public let path: String
    public let apiVersion: Int32

    /// Opens `path` and checks the API version (a mismatch fails with EOPNOTSUPP).
    public init(path: String = KVMSystem.defaultPath) throws(SystemError) {
        let device = try FileDescriptor.open(path, .readWrite)
        let version = try ioctl(device, KVMRequest.getAPIVersion)
        guard version == KVMSystem.requiredAPIVersion else {
            throw SystemError(.notSupported, operation: "KVM_GET_API_VERSION",
                              context: "\(path) reports API version \(version), need \(KVMSystem.requiredAPIVersion)")
        }
        self.device = device
        self.path = path
        self.apiVersion = version
    }

    /// True when `path` exists and this process may open it read-write.
    public static func isAvailable(path: String = KVMSystem.defaultPath) -> Bool {
        (try? FileDescriptor.open(path, .readWrite)) != nil
    }

    /// KVM_CHECK_EXTENSION: 0 when unsupported, else 1 or a capability-specific number.
    public func checkExtension(_ capability: KVMCapability) throws(SystemError) -> Int32 {
        try ioctl(device, KVMRequest.checkExtension, UInt(capability.rawValue))
    }

    /// The size of each vCPU's kvm_run mapping (kvm_run plus the PIO data page and more).
    public func vcpuMmapSize() throws(SystemError) -> Int {
        Int(try ioctl(device, KVMRequest.getVCPUMmapSize))
    }

    /// KVM_GET_SUPPORTED_CPUID: what this host's KVM can expose to a guest.
    public func supportedCPUID() throws(SystemError) -> [CPUIDEntry] {
        let layout = KVMLayout.current
        var capacity = 128
        while true {
            let size = layout.cpuid2Header + capacity * layout.cpuidEntrySize
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            buffer.storeBytes(of: UInt32(capacity), as: UInt32.self)
            do throws(SystemError) {
                try ioctl(device, KVMRequest.getSupportedCPUID, buffer.baseAddress)
            } catch where error.errno == .argumentListTooLong && capacity < 4096 {
                capacity *= 2
                continue
            }
            let count = min(Int(buffer.load(as: UInt32.self)), capacity)
            return (0..<count).map { i in
                CPUIDEntry(buffer.loadUnaligned(fromByteOffset: layout.cpuid2Header + i * layout.cpuidEntrySize,
                                                as: kvm_cpuid_entry2.self))
            }
        }
    }

    /// Creates a virtual machine (KVM_CREATE_VM) set up as `options` say.
    public func createVirtualMachine(_ options: KVMVirtualMachine.Options = .init()) throws(SystemError)
        -> KVMVirtualMachine
    {
        try KVMVirtualMachine(system: self, options: options)
    }
}
