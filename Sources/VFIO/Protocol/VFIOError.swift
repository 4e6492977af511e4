import HostOS

/// A failed VFIO step: what failed, on what, the errno when the kernel refused, and the fix.
/// `description` reads like QEMU's errors: the problem, then what to do about it.
public struct VFIOError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Reason: Hashable, Sendable {
        /// /dev/vfio/vfio is missing: the vfio modules are not loaded.
        case vfioNotLoaded
        /// /dev/vfio/N is missing: no device of the group is bound to vfio-pci; `offenders`
        /// are its devices on other drivers, as "BDF (driver)".
        case groupMissing(group: Int, offenders: [String] = [])
        /// The device has no iommu_group link: no IOMMU is enabled on the host.
        case noIOMMUGroup(device: String)
        /// Some device of the group is bound to another host driver.
        case groupNotViable(group: Int, offenders: [String])
        /// Type1 refused to attach the group: the IOMMU cannot remap interrupts.
        case noInterruptRemapping(group: Int)
        /// The group or device is in use (another VMM, or already in another container).
        case busy
        /// The kernel speaks another VFIO API version than 0.
        case unsupportedAPIVersion(Int32)
        /// The container lacks a needed IOMMU type.
        case extensionMissing(VFIOExtension)
        /// More DMA mappings than the IOMMU allows (vfio_iommu_type1 dma_entry_limit).
        case dmaMappingLimit(needed: Int, available: UInt32)
        /// An IOVA outside every range the IOMMU translates.
        case iovaOutOfRange(iova: UInt64, size: UInt64)
        /// A request that cannot be right: an offset beyond a region, an area not mappable,
        /// a group from another VFIOKernel.
        case invalidRequest(String)
        /// Any other kernel refusal: see `system`.
        case kernel
    }

    public var reason: Reason
    /// The step, as the kernel names it: "VFIO_SET_IOMMU", "open".
    public var operation: String
    /// What it acted on: "group 12", "device 0000:01:00.0", "/dev/vfio/vfio".
    public var subject: String
    public var system: SystemError?

    public init(_ reason: Reason, operation: String, subject: String, system: SystemError? = nil) {
        self.reason = reason
        self.operation = operation
        self.subject = subject
        self.system = system
    }

    public var errno: Errno? { system?.errno }

    public var description: String {
        let errnoText = system.map { ": \($0.errno)" } ?? ""
        let head = "vfio: \(operation) on \(subject) failed\(errnoText)"
        return head + ": " + explanation
    }

    private var explanation: String {
        switch reason {
        case .vfioNotLoaded:
            "/dev/vfio/vfio does not exist; load vfio-pci: modprobe vfio-pci"
        case .groupMissing(let group, let offenders):
            "/dev/vfio/\(group) does not exist: no device of group \(group) is bound to vfio-pci"
                + (offenders.isEmpty ? "" : " (on host drivers: " + offenders.joined(separator: ", ") + ")")
                + "; bind the device to vfio-pci: switchyard host bind BDF --group"
        case .noIOMMUGroup(let device):
            "\(device) has no IOMMU group; enable the host IOMMU: boot with intel_iommu=on (or amd_iommu=on)"
        case .groupNotViable(let group, let offenders):
            "group \(group) is not viable; bind every device of group \(group) to vfio-pci: "
                + "switchyard host bind BDF --group" + (offenders.isEmpty ? "" : " (still on other drivers: "
                + offenders.joined(separator: ", ") + ")")
        case .noInterruptRemapping(let group):
            "the IOMMU refused group \(group) without interrupt remapping; boot with intel_iommu=on on a host "
                + "with interrupt remapping, or (unsafe) allow it: "
                + "echo 1 > /sys/module/\(operation.contains("IOMMUFD") ? "iommufd" : "vfio_iommu_type1")/parameters/allow_unsafe_interrupts"
        case .busy:
            "\(subject) is busy; it is in use by another process or container (close the other VMM)"
        case .unsupportedAPIVersion(let v):
            "the kernel's VFIO API version is \(v), not 0; use a Linux kernel with VFIO API 0"
        case .extensionMissing(let e):
            "the kernel does not offer \(e); load vfio_iommu_type1: modprobe vfio_iommu_type1"
        case .dmaMappingLimit(let needed, let available):
            "guest RAM needs \(needed) more DMA mappings but the IOMMU allows \(available); "
                + "raise it: echo N > /sys/module/vfio_iommu_type1/parameters/dma_entry_limit"
        case .iovaOutOfRange(let iova, let size):
            "IOVA 0x\(String(iova, radix: 16)) size 0x\(String(size, radix: 16)) lies outside the IOMMU's "
                + "IOVA ranges; give the guest less RAM or move it (-m)"
        case .invalidRequest(let what):
            what
        case .kernel:
            "the kernel refused it"
        }
    }
}
