import CLinux
import HostOS
import VMMBase

/// An NVMe admin command as NVME_IOCTL_ADMIN_CMD carries it (linux/nvme_ioctl.h).
public struct NVMeAdminCommand: Hashable, Sendable {
    public var opcode: UInt8
    public var namespace: UInt32 = 0
    public var cdw10: UInt32 = 0
    public var cdw11: UInt32 = 0
    /// Bytes the controller returns (Identify: 4096); 0 for none.
    public var dataLength: Int = 0

    public init(opcode: UInt8, namespace: UInt32 = 0, cdw10: UInt32 = 0, cdw11: UInt32 = 0, dataLength: Int = 0) {
        self.opcode = opcode
        self.namespace = namespace
        self.cdw10 = cdw10
        self.cdw11 = cdw11
        self.dataLength = dataLength
    }

    /// Identify (opcode 06h) with Controller or Namespace Structure `cns` and CNTID `controller`.
    public static func identify(cns: UInt8, controller: UInt16 = 0) -> NVMeAdminCommand {
        NVMeAdminCommand(opcode: 0x06, cdw10: UInt32(cns) | UInt32(controller) << 16, dataLength: 4096)
    }

    /// Virtualization Management (opcode 1Ch): CDW10 = ACT | RT << 8 | CNTLID << 16, CDW11 = NR.
    public static func virtualizationManagement(_ action: VirtualizationAction, resource: VirtualizationResource,
                                                controller: UInt16, count: UInt16) -> NVMeAdminCommand {
        NVMeAdminCommand(opcode: 0x1C, cdw10: UInt32(action.rawValue) | UInt32(resource.rawValue) << 8
                            | UInt32(controller) << 16, cdw11: UInt32(count))
    }
}

/// Virtualization Management actions (NVMe base spec, Virtualization Management command).
public enum VirtualizationAction: UInt8, Sendable {
    case primaryFlexibleAllocation = 1
    case secondaryOffline = 7
    case secondaryAssign = 8
    case secondaryOnline = 9
}

/// Virtualization Management resource types.
public enum VirtualizationResource: UInt8, Sendable {
    case queues = 0      // VQ
    case interrupts = 1  // VI
}

/// Sends admin commands to one NVMe controller. The seam between the sequence and the device.
public protocol NVMeAdminChannel {
    /// The completion's Dword 0 and the data the controller returned.
    func send(_ command: NVMeAdminCommand) throws(SystemError) -> (result: UInt32, data: [UInt8])
}

/// /dev/nvmeN through NVME_IOCTL_ADMIN_CMD.
public struct NVMeCharacterDevice: NVMeAdminChannel {
    public let path: String
    public init(path: String) { self.path = path }

    public func send(_ command: NVMeAdminCommand) throws(SystemError) -> (result: UInt32, data: [UInt8]) {
        let fd = try FileDescriptor.open(path, .readWrite)
        var data = [UInt8](repeating: 0, count: command.dataLength)
        var passthru = nvme_passthru_cmd()
        passthru.opcode = command.opcode
        passthru.nsid = command.namespace
        passthru.cdw10 = command.cdw10
        passthru.cdw11 = command.cdw11
        passthru.data_len = UInt32(command.dataLength)
        passthru.timeout_ms = 10_000
        let outcome: Result<Int32, SystemError> = data.withUnsafeMutableBytes { buffer in
            passthru.addr = UInt64(UInt(bitPattern: buffer.baseAddress))
            do throws(SystemError) { return .success(try ioctl(fd, sy_nvme_ioctl_admin_cmd(), &passthru)) } catch {
                return .failure(error)
            }
        }
        let status = try outcome.get()
        // A positive return is the command's NVMe status (the controller refused it).
        if status > 0 {
            throw SystemError(.ioError, operation: "NVMe admin opcode 0x\(hex(command.opcode, 2)) status 0x\(hex(status, 4))",
                              context: path)
        }
        return (passthru.result, data)
    }
}

/// What Identify reports about flexible resources (Primary Controller Capabilities, CNS 14h).
public struct PrimaryControllerCapabilities: Hashable, Sendable {
    public var controllerID: UInt16
    /// VQFRT, VQRFAP, VQFRSM: flexible queue resources in total, allocated to the primary, at
    /// most per secondary; the VI* fields likewise for interrupts.
    public var queuesTotal: UInt32, queuesOnPrimary: UInt16, queuesPerSecondaryMax: UInt16
    public var interruptsTotal: UInt32, interruptsOnPrimary: UInt16, interruptsPerSecondaryMax: UInt16

    public init(parsing data: [UInt8]) {
        controllerID = littleEndian(data, 0)
        queuesTotal = littleEndian(data, 32)
        queuesOnPrimary = littleEndian(data, 40)
        queuesPerSecondaryMax = littleEndian(data, 44)
        interruptsTotal = littleEndian(data, 64)
        interruptsOnPrimary = littleEndian(data, 72)
        interruptsPerSecondaryMax = littleEndian(data, 76)
    }
}

/// One entry of the Secondary Controller List (CNS 15h).
public struct SecondaryController: Hashable, Sendable {
    public var controllerID: UInt16
    public var online: Bool
    /// The VF number (1-based); 0 when not associated with a VF.
    public var virtualFunction: UInt16
    public var queues: UInt16
    public var interrupts: UInt16

    public init(controllerID: UInt16, online: Bool, virtualFunction: UInt16, queues: UInt16, interrupts: UInt16) {
        self.controllerID = controllerID
        self.online = online
        self.virtualFunction = virtualFunction
        self.queues = queues
        self.interrupts = interrupts
    }

    public static func list(parsing data: [UInt8]) -> [SecondaryController] {
        let count = min(Int(data.first ?? 0), 127)
        return (0..<count).compactMap { i in
            let base = 32 + i * 32
            guard base + 32 <= data.count else { return nil }
            return SecondaryController(controllerID: littleEndian(data, base), online: data[base + 4] & 1 != 0,
                                       virtualFunction: littleEndian(data, base + 8),
                                       queues: littleEndian(data, base + 10), interrupts: littleEndian(data, base + 12))
        }
    }
}

private func littleEndian<T: FixedWidthInteger>(_ data: [UInt8], _ offset: Int) -> T {
    var value: T = 0
    for i in 0..<MemoryLayout<T>.size where offset + i < data.count {
        value |= T(data[offset + i]) << (8 * i)
    }
    return value
}

/// The resource side of enabling NVMe VFs: the primary gives its flexible queues and
/// interrupts back (taking effect at a controller reset), and each secondary controller of an
/// enabled VF gets its share and is brought online.
public struct NVMeFlexibleResources {
    public let channel: any NVMeAdminChannel
    public init(channel: any NVMeAdminChannel) { self.channel = channel }

    public func primaryCapabilities() throws(SystemError) -> PrimaryControllerCapabilities {
        PrimaryControllerCapabilities(parsing: try channel.send(.identify(cns: 0x14)).data)
    }

    public func secondaryControllers() throws(SystemError) -> [SecondaryController] {
        SecondaryController.list(parsing: try channel.send(.identify(cns: 0x15)).data)
    }

    /// Returns the primary's flexible resources; true when it held some, so that a controller
    /// reset must follow before they can be assigned.
    public func releasePrimary(_ caps: PrimaryControllerCapabilities) throws(SystemError) -> Bool {
        guard caps.queuesOnPrimary != 0 || caps.interruptsOnPrimary != 0 else { return false }
        for resource in [VirtualizationResource.interrupts, .queues] {
            _ = try channel.send(.virtualizationManagement(.primaryFlexibleAllocation, resource: resource,
                                                           controller: caps.controllerID, count: 0))
        }
        return true
    }

    /// Each VF's share for `vfs` VFs: the flexible totals split evenly, capped per secondary.
    public static func share(of caps: PrimaryControllerCapabilities, vfs: Int) -> (queues: UInt16, interrupts: UInt16) {
        let n = UInt32(max(vfs, 1))
        return (UInt16(min(caps.queuesTotal / n, UInt32(caps.queuesPerSecondaryMax))),
                UInt16(min(caps.interruptsTotal / n, UInt32(caps.interruptsPerSecondaryMax))))
    }

    /// Assigns the share to the secondaries of VFs 1...vfs and brings them online.
    public func assignAndOnline(vfs: Int, caps: PrimaryControllerCapabilities) throws(SystemError) -> [SecondaryController] {
        let (queues, interrupts) = Self.share(of: caps, vfs: vfs)
        let targets = try secondaryControllers().filter { $0.virtualFunction >= 1 && Int($0.virtualFunction) <= vfs }
        for secondary in targets {
            if secondary.online {
                _ = try channel.send(.virtualizationManagement(.secondaryOffline, resource: .queues,
                                                               controller: secondary.controllerID, count: 0))
            }
            _ = try channel.send(.virtualizationManagement(.secondaryAssign, resource: .interrupts,
                                                           controller: secondary.controllerID, count: interrupts))
            _ = try channel.send(.virtualizationManagement(.secondaryAssign, resource: .queues,
                                                           controller: secondary.controllerID, count: queues))
            _ = try channel.send(.virtualizationManagement(.secondaryOnline, resource: .queues,
                                                           controller: secondary.controllerID, count: 0))
        }
        return try secondaryControllers().filter { $0.virtualFunction >= 1 && Int($0.virtualFunction) <= vfs }
    }
}
