import Foundation
import HostDevices
import VMMBase

/// `host list`: the inventory as text for people or JSON for programs, names from libpci's
/// database as lspci prints them.
public struct HostListing {
    public let inventory: HostInventory
    public let names: PCINameDatabase

    public init(inventory: HostInventory, names: PCINameDatabase = PCINameDatabase()) {
        self.inventory = inventory
        self.names = names
    }

    /// One device in the JSON form (keys in snake_case); hex values as lspci -n prints them.
    public struct Device: Codable, Hashable, Sendable {
        public var address: String
        public var vendorId: String
        public var deviceId: String
        public var subsystemVendorId: String
        public var subsystemId: String
        /// Base class and subclass ("0108"), as lspci -n's class column.
        public var `class`: String
        public var progIf: String
        public var revision: String
        public var vendorName: String
        public var deviceName: String
        public var className: String
        public var driver: String?
        public var driverOverride: String?
        public var iommuGroup: UInt32?
        public var iommuGroupMembers: [String]
        public var sriov: SRIOV?
        public var physicalFunction: String?
        public var resetMethods: [String]
        /// What on the host uses the device now (an interface up, a mounted block device).
        public var inUse: [String]
        public var assignable: Bool
        public var obstacles: [Obstacle]
    }

    public struct SRIOV: Codable, Hashable, Sendable {
        public var totalVfs: Int
        public var enabledVfs: Int
        public var vfs: [String]
    }

    public struct Obstacle: Codable, Hashable, Sendable {
        public var reason: String
        public var fix: String
    }

    public struct IOMMU: Codable, Hashable, Sendable {
        public var units: [Unit]
        public var enabled: Bool
        public var interruptRemapping: Bool
        public var unsafeInterruptsAllowed: Bool
        /// "iommufd", "container" or "none" (IOMMUState.VFIOInterface).
        public var vfioInterface: String
        public struct Unit: Codable, Hashable, Sendable {
            public var name: String
            public var kind: String
            public var interruptRemappingCapable: Bool?
        }
    }

    public struct Document: Codable, Hashable, Sendable {
        public var iommu: IOMMU
        public var devices: [Device]
    }

    public var document: Document {
        let iommu = inventory.iommu
        return Document(
            iommu: IOMMU(units: iommu.units.map { .init(name: $0.name, kind: $0.kind.rawValue,
                                                        interruptRemappingCapable: $0.interruptRemappingCapable) },
                         enabled: iommu.isEnabled, interruptRemapping: iommu.interruptRemappingEnabled,
                         unsafeInterruptsAllowed: iommu.unsafeInterruptsAllowed, vfioInterface: iommu.vfioInterface.rawValue),
            devices: inventory.devices.map(device))
    }

    func device(_ d: HostPCIDevice) -> Device {
        let verdict = inventory.assignability(of: d)
        return Device(
            address: d.address.description, vendorId: hex(d.vendorID, 4), deviceId: hex(d.deviceID, 4),
            subsystemVendorId: hex(d.subsystemVendorID, 4), subsystemId: hex(d.subsystemID, 4),
            class: hex(d.classCode >> 8, 4), progIf: hex(d.programmingInterface, 2), revision: hex(d.revision, 2),
            vendorName: names.vendor(d.vendorID), deviceName: names.device(vendor: d.vendorID, device: d.deviceID),
            className: names.className(UInt16(d.classCode >> 8)),
            driver: d.driver, driverOverride: d.driverOverride, iommuGroup: d.iommuGroup,
            iommuGroupMembers: inventory.groupMembers(of: d).map(\.address.description),
            sriov: d.sriov.map { SRIOV(totalVfs: $0.totalVFs, enabledVfs: $0.enabledVFs,
                                       vfs: d.virtualFunctions.map(\.description)) },
            physicalFunction: d.physicalFunction?.description, resetMethods: d.resetMethods,
            inUse: (inventory.uses[d.address] ?? []).map(\.description),
            assignable: verdict.isAssignable,
            obstacles: verdict.obstacles.map { Obstacle(reason: $0.reason, fix: $0.fix(for: d.address)) })
    }

    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(document), as: UTF8.self) + "\n"
    }

    /// The IOMMU line, then per device its lspci -nn style line and indented details.
    public func text() -> String {
        var out = "IOMMU: " + iommuSummary() + "\n" + "VFIO: " + vfioSummary() + "\n"
        for d in inventory.devices {
            let cls = names.className(UInt16(d.classCode >> 8))
            out += "\(d.address) \(cls) [\(hex(d.classCode >> 8, 4))]: "
                + names.vendorAndDevice(vendor: d.vendorID, device: d.deviceID, numbering: .namesAndNumbers)
                + (d.revision != 0 ? " (rev \(hex(d.revision, 2)))" : "") + "\n"
            var facts = ["driver: \(d.driver ?? "none")"]
            if let override = d.driverOverride { facts.append("driver_override: \(override)") }
            if let group = d.iommuGroup {
                facts.append("IOMMU group \(group): " + inventory.groupMembers(of: d).map(\.address.description).joined(separator: " "))
            } else {
                facts.append("IOMMU group: none")
            }
            facts.append("reset: " + (d.resetMethods.isEmpty ? "none" : d.resetMethods.joined(separator: " ")))
            out += "  " + facts.joined(separator: "; ") + "\n"
            if let sriov = d.sriov {
                out += "  SR-IOV: \(sriov.enabledVFs) of \(sriov.totalVFs) VFs enabled"
                    + (d.virtualFunctions.isEmpty ? "" : ": " + d.virtualFunctions.map(\.description).joined(separator: " ")) + "\n"
            }
            if let pf = d.physicalFunction { out += "  VF of \(pf)\n" }
            for use in inventory.uses[d.address] ?? [] { out += "  in use: \(use)\n" }
            let verdict = inventory.assignability(of: d)
            if verdict.isAssignable {
                out += "  assignable: yes\n"
            } else {
                out += "  assignable: no (" + verdict.obstacles.map(\.reason).joined(separator: "; ") + ")\n"
                for obstacle in verdict.obstacles { out += "    fix: \(obstacle.fix(for: d.address))\n" }
            }
        }
        return out
    }

    func vfioSummary() -> String {
        switch inventory.iommu.vfioInterface {
        case .iommufd: "iommufd (/dev/iommu and device cdevs /dev/vfio/devices/vfioN)"
        case .container: "type1 container (/dev/vfio/vfio)"
        case .none: "not loaded (modprobe vfio-pci)"
        }
    }

    func iommuSummary() -> String {
        let iommu = inventory.iommu
        guard !iommu.units.isEmpty else { return "none (no DMA-remapping unit in /sys/class/iommu): no device can be assigned" }
        let units = iommu.units.map { u in
            u.name + " (" + u.kind.rawValue
                + (u.interruptRemappingCapable.map { $0 ? ", remaps interrupts" : ", no interrupt remapping" } ?? "") + ")"
        }.joined(separator: ", ")
        guard iommu.isEnabled else { return "\(units), off (no IOMMU groups): no device can be assigned" }
        let ir = iommu.interruptRemappingEnabled ? "interrupt remapping on"
            : iommu.unsafeInterruptsAllowed ? "interrupt remapping off (VFIO allows unsafe interrupts)" : "interrupt remapping off"
        return "\(units), on; \(ir)"
    }
}
