import CLinux

/// KVM ioctl request codes (macros in <linux/kvm.h>, exported by the CLinux shim).
enum KVMRequest {
    static let getAPIVersion = sy_kvm_get_api_version()
    static let createVM = sy_kvm_create_vm()
    static let checkExtension = sy_kvm_check_extension()
    static let getVCPUMmapSize = sy_kvm_get_vcpu_mmap_size()
    static let getSupportedCPUID = sy_kvm_get_supported_cpuid()
    static let createVCPU = sy_kvm_create_vcpu()
    static let setTSSAddress = sy_kvm_set_tss_addr()
    static let setIdentityMapAddress = sy_kvm_set_identity_map_addr()
    static let setUserMemoryRegion = sy_kvm_set_user_memory_region()
    static let createIRQChip = sy_kvm_create_irqchip()
    static let enableCap = sy_kvm_enable_cap()
    static let createPIT2 = sy_kvm_create_pit2()
    static let setGSIRouting = sy_kvm_set_gsi_routing()
    static let irqfd = sy_kvm_irqfd()
    static let registerCoalescedMMIO = sy_kvm_register_coalesced_mmio()
    static let ioeventfd = sy_kvm_ioeventfd()
    static let signalMSI = sy_kvm_signal_msi()
    static let irqLine = sy_kvm_irq_line()
    static let run = sy_kvm_run()
    static let getRegs = sy_kvm_get_regs()
    static let setRegs = sy_kvm_set_regs()
    static let getSregs = sy_kvm_get_sregs()
    static let setSregs = sy_kvm_set_sregs()
    static let setCPUID2 = sy_kvm_set_cpuid2()
    static let getMSRs = sy_kvm_get_msrs()
    static let setMSRs = sy_kvm_set_msrs()
    static let getFPU = sy_kvm_get_fpu()
    static let setFPU = sy_kvm_set_fpu()
    static let getLAPIC = sy_kvm_get_lapic()
    static let setLAPIC = sy_kvm_set_lapic()
    static let getMPState = sy_kvm_get_mp_state()
    static let setMPState = sy_kvm_set_mp_state()
    static let getVCPUEvents = sy_kvm_get_vcpu_events()
    static let setVCPUEvents = sy_kvm_set_vcpu_events()
    static let getIRQChip = sy_kvm_get_irqchip()
    static let setIRQChip = sy_kvm_set_irqchip()
    static let getPIT2 = sy_kvm_get_pit2()
    static let setPIT2 = sy_kvm_set_pit2()
}

/// Byte offsets inside KVM's structures, taken from the C headers at build time.
public struct KVMLayout: Sendable {
    public let runSize: Int
    public let exitReason: Int
    public let immediateExit: Int
    public let ioDirection: Int, ioSize: Int, ioPort: Int, ioCount: Int, ioDataOffset: Int
    public let mmioAddress: Int, mmioData: Int, mmioLength: Int, mmioIsWrite: Int
    public let systemEventType: Int, systemEventDataCount: Int, systemEventData: Int
    public let internalSuberror: Int, internalDataCount: Int, internalData: Int, internalDataCapacity: Int
    public let failEntryReason: Int, failEntryCPU: Int
    public let hardwareExitReason: Int
    public let ioapicEOIVector: Int
    let cpuid2Header: Int, cpuidEntrySize: Int
    let msrsHeader: Int, msrEntrySize: Int
    let routingHeader: Int, routingEntrySize: Int

    /// The layout of this build's <linux/kvm.h>.
    public static let current: KVMLayout = {
        let l = sy_kvm_layout()
        return KVMLayout(
            runSize: Int(l.run_size), exitReason: Int(l.exit_reason), immediateExit: Int(l.immediate_exit),
            ioDirection: Int(l.io_direction), ioSize: Int(l.io_size), ioPort: Int(l.io_port),
            ioCount: Int(l.io_count), ioDataOffset: Int(l.io_data_offset),
            mmioAddress: Int(l.mmio_phys_addr), mmioData: Int(l.mmio_data), mmioLength: Int(l.mmio_len),
            mmioIsWrite: Int(l.mmio_is_write),
            systemEventType: Int(l.system_event_type), systemEventDataCount: Int(l.system_event_ndata),
            systemEventData: Int(l.system_event_data),
            internalSuberror: Int(l.internal_suberror), internalDataCount: Int(l.internal_ndata),
            internalData: Int(l.internal_data), internalDataCapacity: Int(l.internal_data_count),
            failEntryReason: Int(l.fail_entry_reason), failEntryCPU: Int(l.fail_entry_cpu),
            hardwareExitReason: Int(l.hw_exit_reason), ioapicEOIVector: Int(l.eoi_vector),
            cpuid2Header: Int(l.cpuid2_header), cpuidEntrySize: Int(l.cpuid_entry2_size),
            msrsHeader: Int(l.msrs_header), msrEntrySize: Int(l.msr_entry_size),
            routingHeader: Int(l.irq_routing_header), routingEntrySize: Int(l.irq_routing_entry_size))
    }()
}
