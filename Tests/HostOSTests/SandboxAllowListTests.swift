import Foundation
import HostOS
import Testing

/// The reviewed allow-lists checked against things the code does not make: the kernel's own
/// system call numbers (asm/unistd_64.h, installed with the kernel headers) and what the
/// issue rules out.
@Suite struct SandboxAllowListTests {
    /// `__NR_name` values from the kernel's UAPI header.
    static let kernelNumbers: [String: Int32] = {
        guard let text = try? String(contentsOfFile: "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", encoding: .utf8)
        else { return [:] }
        var numbers: [String: Int32] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 3, fields[0] == "#define", fields[1].hasPrefix("__NR_"), let n = Int32(fields[2]) else { continue }
            numbers[String(fields[1].dropFirst(5))] = n
        }
        return numbers
    }()

    @Test(.requires(!kernelNumbers.isEmpty, "no /usr/include/x86_64-linux-gnu/asm/unistd_64.h (apt install linux-libc-dev)"),
          arguments: SandboxThreadKind.allCases)
    func everyNameIsTheKernelsCall(kind: SandboxThreadKind) throws {
        for rule in SandboxAllowLists.list(for: kind).rules {
            let number = try Sandbox.syscallNumber(rule.name)
            #expect(number == Self.kernelNumbers[rule.name], "\(rule.name) in the \(kind) list")
        }
    }

    @Test(arguments: SandboxThreadKind.allCases)
    func noListStartsProgramsOrReachesOutward(kind: SandboxThreadKind) {
        let forbidden: Set = ["execve", "execveat", "fork", "vfork", "socket", "socketpair", "bind", "listen", "connect",
                              "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "kexec_load",
                              "kexec_file_load", "bpf", "setuid", "setgid", "setresuid", "init_module", "finit_module",
                              "open", "creat", "chmod", "fchmod", "chown", "reboot"]
        let list = SandboxPolicy(allowsSpawning: false).allowList(for: kind)
        #expect(list.allowedCalls.intersection(forbidden).isEmpty)
        // clone is allowed only with CLONE_THREAD set (0x10000, linux/sched.h): threads, not processes.
        let clones = list.rules.filter { $0.name == "clone" }
        #expect(clones == [SyscallRule("clone", .allowIf(argument: 0, mask: 0x10000, equals: 0x10000))])
    }

    /// sched_setscheduler only for the calling thread (pid 0) and only to SCHED_BATCH (3 in
    /// linux/sched.h), both in one rule: I/O threads lower their own wake-up priority, no thread
    /// raises its own or touches another's. Only the I/O list (and so the base) has it.
    @Test(arguments: SandboxThreadKind.allCases)
    func schedulingChangesOnlyLowerTheCallersOwn(kind: SandboxThreadKind) {
        let rules = SandboxAllowLists.list(for: kind).rules.filter { $0.name == "sched_setscheduler" }
        let own = SyscallRule("sched_setscheduler", .allowIfAll([ArgumentTest(argument: 0, mask: 0xFFFF_FFFF, equals: 0),
                                                                 ArgumentTest(argument: 1, mask: 0xFFFF_FFFF, equals: 3)]))
        #expect(rules == (kind == .io ? [own] : []), "\(kind)")
        #expect(!SandboxAllowLists.base.allowedCalls.contains("sched_setattr"))
    }

    @Test func onlyVCPUThreadsEnterTheGuest() {
        // KVM_RUN is _IO(0xAE, 0x80) (linux/kvm.h): no direction, no size.
        let kvmRun = SyscallRule("ioctl", .allowIf(argument: 1, mask: 0xFFFF_FFFF, equals: 0xAE80))
        for kind in SandboxThreadKind.allCases {
            #expect(SandboxAllowLists.list(for: kind).rules.contains(kvmRun) == (kind == .vcpu), "\(kind)")
        }
        #expect(SandboxAllowLists.base.rules.contains(kvmRun))
    }

    /// An assigned device (-device vfio-pci) is reached at run time from every thread that
    /// handles guest accesses or resets: pwrite64 on its device fd (config space and trapped BAR
    /// writes) and the VFIO ioctls, numbered as linux/vfio.h's _IO(';', 100 + n) gives them:
    /// SET_IRQS n=10, RESET 11, PCI_HOT_RESET 13, IOMMU_MAP_DMA 13, IOMMU_UNMAP_DMA 14 (the
    /// container and device requests share numbers).
    @Test(arguments: [SandboxThreadKind.vcpu, .io, .control])
    func assignedDeviceCallsAreAllowed(kind: SandboxThreadKind) {
        let list = SandboxAllowLists.list(for: kind)
        #expect(list.allowedCalls.isSuperset(of: ["pread64", "pwrite64"]))
        for n: UInt64 in [10, 11, 13, 14] {
            let request = UInt64(UInt8(ascii: ";")) << 8 | (100 + n)
            #expect(list.rules.contains(SyscallRule("ioctl", .allowIf(argument: 1, mask: 0xFFFF_FFFF, equals: request))),
                    "\(kind): VFIO ioctl 0x\(String(request, radix: 16))")
        }
    }

    @Test func spawnAllowAddsForkButNeverExecve() {
        let allowing = SandboxPolicy(allowsSpawning: true).allowList(for: .control).allowedCalls
        #expect(allowing.contains("fork"))
        #expect(!allowing.contains("execve") && !allowing.contains("execveat"))
    }

    @Test func sizes() {
        // The figures the README quotes; printed so a change in a list shows in the log.
        for kind in SandboxThreadKind.allCases {
            let list = SandboxAllowLists.list(for: kind)
            print("sandbox list \(kind.rawValue): \(list.allowedCalls.count) calls, \(list.rules.count) rules")
            #expect(list.allowedCalls.count < SandboxAllowLists.base.allowedCalls.count || kind == .control)
        }
        print("sandbox list base: \(SandboxAllowLists.base.allowedCalls.count) calls, \(SandboxAllowLists.base.rules.count) rules")
    }
}
