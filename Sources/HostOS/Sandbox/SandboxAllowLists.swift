import CLinux
import Glibc

/// The kinds of thread Switchyard runs after set-up; each confines itself to its own list.
public enum SandboxThreadKind: String, Sendable, Hashable, CaseIterable {
    /// Runs KVM_RUN and handles the guest's port and MMIO exits.
    case vcpu
    /// Moves bytes: the coalesced-write flusher, COM1's input, a client's writer.
    case io
    /// Serves QMP and qtest clients (device_add/del, system_reset, stop/cont, quit).
    case control
    /// Waits for SIGTERM, SIGINT and SIGHUP.
    case signal
}

/// The reviewed allow-lists: one per thread kind, each a set of groups with the reason the
/// group is there. Anything not listed traps: the process reports the call and dies of
/// SIGSYS. No list has execve, execveat, socket, bind, listen, connect, ptrace, mount, kexec,
/// bpf, or a privilege change; opens after set-up happen only where a reboot re-reads the
/// -kernel and -initrd files, whose paths set-up fixed, and on control threads for a device_add
/// of vfio-pci (sysfs and /dev/vfio). Where the kernel has Landlock, `SandboxFileAccess` holds
/// those opens to exactly those paths.
///
/// Found by running the real workloads (qtest sessions, a real-mode KVM guest, the rig's Linux
/// guests: boot, hot-plug, reboot) and reading each trap report (it names the call, the
/// thread's kind and, for ioctl, the request).
public enum SandboxAllowLists {
    /// clone(2)'s CLONE_THREAD (linux/sched.h); prctl's PR_SET_NAME is 15, PR_GET_NAME 16
    /// (linux/prctl.h).
    static let cloneThread: UInt64 = 0x0001_0000

    /// This process's id, fixed when the lists are first built (at lock-down): tgkill's thread
    /// group must be it, so a thread the filter holds cannot signal another process.
    static let ownProcess = UInt64(UInt32(bitPattern: getpid()))

    /// Without spawn=deny: fork, as QEMU's -sandbox on allows it (a child still cannot execve).
    public static let spawning = SyscallGroup("spawn=allow: fork and process clones (never execve)",
        SyscallRule.calls("clone", "fork", "vfork"))

    /// What the Swift runtime, Foundation, Dispatch and glibc need on any thread.
    static let runtime: [SyscallGroup] = [
        SyscallGroup("malloc and the Swift runtime map, protect and return memory; thread stacks",
                     SyscallRule.calls("mmap", "munmap", "mprotect", "madvise", "mremap", "brk")),
        SyscallGroup("Mutex, Atomic waits, Dispatch and pthread conditions are futexes",
                     SyscallRule.calls("futex", "sched_yield", "sched_getaffinity")),
        SyscallGroup("clocks (the vDSO falls back to the call) and the sleeps of polling loops",
                     SyscallRule.calls("clock_gettime", "clock_getres", "gettimeofday", "clock_nanosleep", "nanosleep")),
        SyscallGroup("signal delivery (the vCPU kick, SIGSYS reports), masks; pthread_kill and raise signal this process's own threads only (tgkill's thread group is this process)",
                     SyscallRule.calls("rt_sigreturn", "rt_sigprocmask", "rt_sigaction", "sigaltstack", "getpid", "gettid")
                     + [SyscallRule("tgkill", .allowIf(argument: 0, mask: 0xFFFF_FFFF, equals: ownProcess))]),
        SyscallGroup("a thread's life: pthread_create's clone (threads only: CLONE_THREAD set), robust lists, rseq, its name, its end",
                     [SyscallRule("clone", .allowIf(argument: 0, mask: cloneThread, equals: cloneThread))]
                     + SyscallRule.calls("set_robust_list", "rseq", "exit", "exit_group")
                     + [SyscallRule("prctl", .allowIf(argument: 0, mask: UInt64.max, equals: 15)),
                        SyscallRule("prctl", .allowIf(argument: 0, mask: UInt64.max, equals: 16))]),
        SyscallGroup("a thread confines itself further: no_new_privs (PR_SET_NO_NEW_PRIVS, 38), another filter on top and its kind's Landlock ruleset (both only narrow)",
                     [SyscallRule("prctl", .allowIf(argument: 0, mask: UInt64.max, equals: 38))]
                     + SyscallRule.calls("seccomp", "landlock_restrict_self")),
        SyscallGroup("clone3 passes its flags in memory a filter cannot read: it fails, and glibc falls back to clone",
                     [SyscallRule("clone3", .fail(errno: ENOSYS))]),
        SyscallGroup("log lines and guest errors to standard error, eventfd signals; closing what a thread owns",
                     SyscallRule.calls("write", "writev", "close", "getrandom")),
    ]

    /// KVM_RUN: only a vCPU thread enters the guest.
    static let enterGuest = SyscallGroup("KVM_RUN on the thread's own vCPU", SyscallRule.ioctl([sy_kvm_run()]))

    /// vCPU state, read and written around a reset or a reboot (KVMLinuxGuest.reboot).
    static let vcpuState = SyscallGroup("vCPU registers set again at a reboot",
        SyscallRule.ioctl([sy_kvm_get_regs(), sy_kvm_set_regs(), sy_kvm_get_sregs(), sy_kvm_set_sregs(),
                           sy_kvm_get_msrs(), sy_kvm_set_msrs(), sy_kvm_get_fpu(), sy_kvm_set_fpu(),
                           sy_kvm_get_lapic(), sy_kvm_set_lapic(), sy_kvm_get_mp_state(), sy_kvm_set_mp_state(),
                           sy_kvm_get_vcpu_events(), sy_kvm_set_vcpu_events(), sy_kvm_set_cpuid2()]))

    /// What a device model's side effects become on the VM: interrupts, memory commits.
    static let machineEffects = SyscallGroup(
        "device effects: INTx lines, MSIs, GSI routes, irqfd/ioeventfd, memory slots (BAR moves, hot-plug), irqchip and PIT reset",
        SyscallRule.ioctl([sy_kvm_irq_line(), sy_kvm_signal_msi(), sy_kvm_set_gsi_routing(), sy_kvm_irqfd(),
                           sy_kvm_ioeventfd(), sy_kvm_set_user_memory_region(), sy_kvm_get_irqchip(),
                           sy_kvm_set_irqchip(), sy_kvm_get_pit2(), sy_kvm_set_pit2(), sy_kvm_check_extension()]))

    /// An assigned host function (-device vfio-pci) at run time: config space and trapped BAR
    /// accesses are pread/pwrite on its VFIO device fd, MSI/MSI-X changes are SET_IRQS, a reset is
    /// VFIO_DEVICE_RESET (or a hot reset), and guest RAM changes move the DMA maps (the
    /// container's, or the iommufd IOAS's).
    static let assignedDevices = SyscallGroup(
        "vfio-pci: device fd reads and writes, interrupt eventfds, resets, DMA maps following guest RAM",
        SyscallRule.calls("pread64", "pwrite64")
        + SyscallRule.ioctl([sy_vfio_device_set_irqs(), sy_vfio_device_reset(), sy_vfio_device_pci_hot_reset(),
                             sy_vfio_device_get_pci_hot_reset_info(), sy_vfio_iommu_map_dma(), sy_vfio_iommu_unmap_dma(),
                             sy_iommu_ioas_map(), sy_iommu_ioas_unmap()]))

    /// device_add vfio-pci after set-up (QMP, a control thread): the host function's IOMMU group
    /// found through sysfs, /dev/vfio/vfio (for the first assignment) and /dev/vfio/N opened and
    /// joined, the device fd obtained and described; under iommufd, /dev/iommu and an IOAS (for
    /// the first assignment), the device's cdev (its name read from sysfs) bound and attached.
    /// Opens of paths named by the command, as QEMU's sandbox allows for its own hot-plug.
    static let runtimeAssignment = SyscallGroup(
        "device_add vfio-pci: sysfs iommu_group link, /dev/vfio/vfio and /dev/vfio/N (or /dev/iommu and /dev/vfio/devices/vfioN) opened, container or IOAS set up, device fd described",
        SyscallRule.calls("openat", "readlink", "access", "faccessat", "faccessat2", "newfstatat", "fstat", "statx",
                          "getdents64")
        + SyscallRule.ioctl([sy_vfio_get_api_version(), sy_vfio_check_extension(), sy_vfio_set_iommu(),
                             sy_vfio_iommu_get_info(), sy_vfio_group_get_status(), sy_vfio_group_set_container(),
                             sy_vfio_group_unset_container(), sy_vfio_group_get_device_fd(), sy_vfio_device_get_info(),
                             sy_vfio_device_get_region_info(), sy_vfio_device_get_irq_info(),
                             sy_iommu_ioas_alloc(), sy_iommu_ioas_iova_ranges(), sy_vfio_device_bind_iommufd(),
                             sy_vfio_device_attach_iommufd_pt()]))

    /// A reboot reads the -kernel and -initrd files again (their paths fixed at set-up).
    static let rereadBootImages = SyscallGroup("a reboot re-reads -kernel and -initrd (paths fixed at set-up)",
        SyscallRule.calls("openat", "read", "fstat", "newfstatat", "lseek", "pread64"))

    /// Dispatch starts its worker pool and event loop lazily, possibly after set-up.
    static let dispatchWorkers = SyscallGroup(
        "Dispatch's lazily started worker pool and manager (the reset queue); a worker sets its own nice value (setpriority(PRIO_PROCESS, 0, n): who 0 is the calling thread); the same epoll calls start and feed the virtio kick threads (virtio-kicks, virtio-net's) at DRIVER_OK and reset",
        SyscallRule.calls("eventfd2", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait")
        + [SyscallRule("setpriority", .allowIf(argument: 1, mask: UInt64.max, equals: 0))])

    public static let vcpu = SandboxAllowList(runtime + [
        enterGuest, vcpuState, machineEffects, assignedDevices,
        SyscallGroup("eventfds the runner waits on and signals", SyscallRule.calls("read")),
        // A vCPU's reset request goes to the reset queue; the Dispatch worker that carries the
        // reboot out may be started by this thread and then inherits this filter.
        rereadBootImages, dispatchWorkers,
    ])

    public static let io = SandboxAllowList(runtime + [
        machineEffects, assignedDevices,
        // The flusher replays coalesced writes, a reset-register write (0xCF9) among them: the
        // reset queue's worker it may start inherits this filter and reboots the guest.
        vcpuState, rereadBootImages, dispatchWorkers,
        SyscallGroup("bytes in and out: standard input, sockets, FIFOs, the virtio queues' kick eventfds",
                     SyscallRule.calls("read", "recvfrom", "recvmsg", "sendto", "sendmsg", "poll", "ppoll")),
        SyscallGroup("an I/O thread puts itself under SCHED_BATCH as it starts (HostThread): sched_setscheduler(0, SCHED_BATCH = 3, ...), who 0 being the calling thread, both required",
                     [SyscallRule("sched_setscheduler", .allowIfAll([ArgumentTest(argument: 0, mask: 0xFFFF_FFFF, equals: 0),
                                                                     ArgumentTest(argument: 1, mask: 0xFFFF_FFFF, equals: UInt64(sy_sched_batch_policy()))]))]),
        SyscallGroup("virtio-net's tap queues: one frame per readv (writev is everyone's), the vnet header size and offloads set at DRIVER_OK, queues of unused pairs detached and attached again",
                     SyscallRule.calls("readv") + SyscallRule.ioctl([sy_tun_set_vnet_header_size(), sy_tun_set_offload(),
                                                                     sy_tun_set_queue_request()])),
        SyscallGroup("vhost-net (vhost=on): the queues handed to the kernel at DRIVER_OK and taken back at reset, on the /dev/vhost-net fds set-up opened and owned",
                     SyscallRule.ioctl([sy_vhost_set_features(), sy_vhost_set_mem_table(), sy_vhost_set_vring_num(),
                                        sy_vhost_set_vring_base(), sy_vhost_get_vring_base(), sy_vhost_set_vring_addr(),
                                        sy_vhost_set_vring_kick(), sy_vhost_set_vring_call(), sy_vhost_net_set_backend()])),
    ])

    public static let control = SandboxAllowList(runtime + [
        vcpuState, machineEffects, assignedDevices, runtimeAssignment, rereadBootImages, dispatchWorkers,
        SyscallGroup("monitor clients: accept on the listening sockets set-up opened, read, write, shut down",
                     SyscallRule.calls("accept4", "recvfrom", "recvmsg", "sendto", "sendmsg", "shutdown", "poll", "ppoll",
                                       "fcntl", "getsockopt")),
        SyscallGroup("the kick that parks vCPUs (stop) and removing the socket files at quit",
                     SyscallRule.calls("unlink", "unlinkat")),
    ])

    public static let signal = SandboxAllowList(runtime + [
        SyscallGroup("sigwait for SIGTERM, SIGINT, SIGHUP", SyscallRule.calls("rt_sigtimedwait")),
    ])

    public static func list(for kind: SandboxThreadKind) -> SandboxAllowList {
        switch kind {
        case .vcpu: vcpu
        case .io: io
        case .control: control
        case .signal: signal
        }
    }

    /// The filter every thread gets at lock-down (threads the runtime starts, the main thread
    /// that waits for the end and tears down): every kind's list, since a thread it starts
    /// inherits it under its own.
    public static var base: SandboxAllowList {
        SandboxThreadKind.allCases.dropFirst().reduce(list(for: .vcpu)) { $0.union(list(for: $1)) }
    }
}
