import Machine
import PCI
import Testing
import VMMBase

/// Requester IDs and DMA aliases of functions across bridges, after firmware numbered the
/// buses and after the guest renumbered them. The expected aliases are Linux's, worked out by
/// hand with its walk in drivers/pci/search.c pci_for_each_dma_alias: from the function's bus
/// upward, a PCIe root/switch port leaves the ID alone, a PCIe-to-PCI bridge (port type 7)
/// substitutes (its secondary bus, 00.0), a bridge without a PCIe capability substitutes its
/// own ID; the substitution nearest the root is what the IOMMU sees. The functions' own IDs
/// are checked against where config cycles find them.
@Suite struct DMARequesterTests {
    static let devices = [
        "pci-testdev,id=onRoot,addr=5",
        "pcie-root-port,id=rp1,chassis=1,slot=1,addr=6", "pci-testdev,id=behindPort,bus=rp1",
        "pcie-root-port,id=rp2,chassis=2,slot=2,addr=7", "pcie-pci-bridge,id=ppb,bus=rp2",
        "pci-testdev,id=onPCI,bus=ppb,addr=3",
        "pci-bridge,id=pb,bus=ppb,addr=4,chassis_nr=1", "pci-testdev,id=deep,bus=pb,addr=2",
        "pci-bridge,id=rootBridge,addr=8,chassis_nr=2", "pci-testdev,id=underRootBridge,bus=rootBridge,addr=1",
    ]

    func machine() throws -> Machine {
        try Machine(MachineConfiguration(devices: try Self.devices.map(DeviceSpec.init(parsing:))))
    }

    func requester(_ machine: Machine, _ id: String) throws -> DMARequester? {
        let placed = try #require(machine.device(id: id))
        return try #require(machine.dmaPort(of: placed)).requester
    }

    func rid(_ bus: UInt8, _ device: UInt8, _ function: UInt8 = 0) -> RequesterID {
        RequesterID(bus: bus, devfn: device << 3 | function)
    }

    /// (device id, own ID, alias) rows.
    func check(_ machine: Machine, _ rows: [(String, RequesterID, RequesterID)]) throws {
        let reachable = machine.reachableFunctions()
        for (id, own, alias) in rows {
            let resolved = try requester(machine, id)
            let found = try #require(resolved, "\(id) has no requester ID")
            #expect(found == DMARequester(id: own, alias: alias), "\(id)")
            // The own ID is the address config cycles reach the function at.
            let function = try #require(machine.device(id: id)).function
            let address = reachable.first { $0.function === function }?.address
            #expect(address.map { RequesterID(bus: $0.bus, devfn: $0.devfn) } == own, "\(id)")
        }
    }

    @Test func aliasesFollowLinuxAfterFirmwareNumbering() throws {
        let machine = try machine()
        let report = try machine.runFirmware()
        // Depth first in slot order: rp1 -> 1, rp2 -> 2, ppb -> 3, pb -> 4, rootBridge -> 5.
        let numbers = Dictionary(uniqueKeysWithValues: report.functions.compactMap { f in
            f.busNumbers.map { (f.address.shortDescription, $0.secondary) }
        })
        #expect(numbers == ["00:06.0": 1, "00:07.0": 2, "02:00.0": 3, "03:04.0": 4, "00:08.0": 5])
        try check(machine, [
            ("onRoot", rid(0, 5), rid(0, 5)),             // root bus: its own ID
            ("behindPort", rid(1, 0), rid(1, 0)),         // root port: no alias
            ("rp2", rid(0, 7), rid(0, 7)),
            ("ppb", rid(2, 0), rid(2, 0)),                // the PCIe-to-PCI bridge itself is PCIe
            ("onPCI", rid(3, 3), rid(3, 0)),              // behind ppb: (ppb's secondary, 00.0)
            ("pb", rid(3, 4), rid(3, 0)),
            // behind pb: pb's own ID 03:04.0 first, then ppb's (03, 00.0) nearer the root wins
            ("deep", rid(4, 2), rid(3, 0)),
            ("underRootBridge", rid(5, 1), rid(0, 8)),    // conventional bridge on bus 0: the bridge's ID
        ])
    }

    @Test func idsFollowTheGuestsRenumbering() throws {
        let machine = try machine()
        try machine.runFirmware()
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        func number(bus: UInt8, device: UInt8, _ primary: UInt8, _ secondary: UInt8, _ subordinate: UInt8) {
            let value = UInt32(primary) | UInt32(secondary) << 8 | UInt32(subordinate) << 16
            ecam.write(bus: bus, devfn: device << 3, offset: Reg.primaryBus, width: .dword, value: value)
        }
        // Bottom up, so each bridge is still reachable under its old numbers when it is written.
        number(bus: 3, device: 4, 0x21, 0x22, 0x22)   // pb
        number(bus: 2, device: 0, 0x20, 0x21, 0x22)   // ppb
        number(bus: 0, device: 7, 0x00, 0x20, 0x22)   // rp2
        number(bus: 0, device: 6, 0x00, 0x10, 0x10)   // rp1
        try check(machine, [
            ("behindPort", rid(0x10, 0), rid(0x10, 0)),
            ("onPCI", rid(0x21, 3), rid(0x21, 0)),
            ("pb", rid(0x21, 4), rid(0x21, 0)),
            ("deep", rid(0x22, 2), rid(0x21, 0)),
            ("underRootBridge", rid(5, 1), rid(0, 8)),
        ])
    }

    @Test func aFunctionBehindAnUnnumberedBridgeHasNoRequesterID() throws {
        let machine = try machine()
        // Before firmware no bridge has a secondary bus: only bus 0 has a number.
        #expect(try requester(machine, "onRoot") == DMARequester(id: rid(0, 5), alias: rid(0, 5)))
        for id in ["behindPort", "onPCI", "deep", "underRootBridge"] {
            #expect(try requester(machine, id) == nil, "\(id)")
        }
        try machine.runFirmware()
        #expect(try requester(machine, "deep") != nil)
        // The guest unnumbers the root port above: everything behind it loses its ID.
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        ecam.write(bus: 0, devfn: 7 << 3, offset: Reg.secondaryBus, width: .word, value: 0)
        #expect(try requester(machine, "deep") == nil)
        let deep = try #require(machine.device(id: "deep"))
        let port = try #require(machine.dmaPort(of: deep))
        #expect(throws: DMAError.noRequesterID(function: "deep")) { try port.write(at: 0x1000, bytes: [1]) }
    }
}
