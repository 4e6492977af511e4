import Dispatch
import PCI
import Synchronization
import Testing
import VMMBase
@testable import Machine

/// Resets as effects the machine applies, and realize outside the topology lock.
@Suite struct LifecycleTests {
    /// Secondary Bus Reset through a conventional bridge and through a PCIe root port: the
    /// device behind goes back to its reset state on each 0 -> 1 edge of the bit and only
    /// then. The oracle is the PCI spec's reset value of Command (0: no decode, no bus master).
    @Test(arguments: ["pci-bridge,id=up,chassis_nr=1,addr=3", "pcie-root-port,id=up,chassis=1,slot=1,addr=3"])
    func secondaryBusResetResetsTheDeviceBehindOncePerAssertion(bridge: String) throws {
        let machine = try Machine(MachineConfiguration(devices: [
            try DeviceSpec(parsing: bridge), try DeviceSpec(parsing: "pci-testdev,id=td,bus=up,addr=0"),
        ]))
        try machine.runFirmware()
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        let up: UInt8 = 3 << 3
        let secondary = UInt8(ecam.read(bus: 0, devfn: up, offset: Reg.secondaryBus, width: .byte))
        try #require(secondary != 0)
        func deviceCommand() -> UInt32 { ecam.read(bus: secondary, devfn: 0, offset: Reg.command, width: .word) }
        func setDeviceCommand() { ecam.write(bus: secondary, devfn: 0, offset: Reg.command, width: .word, value: 0x0006) }
        func bridgeControl(_ value: UInt32) { ecam.write(bus: 0, devfn: up, offset: Reg.bridgeControl, width: .word, value: value) }
        let serr: UInt32 = 0x0002, reset: UInt32 = 0x0040

        setDeviceCommand()
        #expect(deviceCommand() == 0x0006)
        bridgeControl(reset)
        #expect(deviceCommand() == 0, "the 0 -> 1 edge resets the device")
        setDeviceCommand()
        bridgeControl(reset | serr)  // Bridge Control written again while the reset stays asserted
        #expect(deviceCommand() == 0x0006, "no second reset without a new edge")
        bridgeControl(serr)
        #expect(deviceCommand() == 0x0006, "deasserting resets nothing")
        bridgeControl(serr | reset)
        #expect(deviceCommand() == 0, "a new assertion resets again")
        // The bridge itself is not reset: its bus numbers still route to the device.
        #expect(ecam.read(bus: secondary, devfn: 0, offset: 0, width: .dword) == 0x0005_1B36)
    }

    /// The reset reaches through a bridge below: a device two buses down returns to its reset
    /// Command as well.
    @Test func secondaryBusResetReachesThroughBridgesBelow() throws {
        let machine = try Machine(MachineConfiguration(devices: try [
            "pci-bridge,id=outer,chassis_nr=1,addr=3", "pci-bridge,id=inner,chassis_nr=2,bus=outer,addr=1",
            "pci-testdev,id=deep,bus=inner,addr=2",
        ].map { try DeviceSpec(parsing: $0) }))
        try machine.runFirmware()
        let deep = try #require(machine.device(id: "deep")?.function)
        let inner = try #require(machine.device(id: "inner")?.function)
        _ = deep.configWrite(Reg.command, width: .word, value: 0x0006)
        #expect(inner.configRead(Reg.secondaryBus, width: .byte) != 0)
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        ecam.write(bus: 0, devfn: 3 << 3, offset: Reg.bridgeControl, width: .word, value: 0x0040)
        #expect(deep.configRead(Reg.command, width: .word) == 0)
        #expect(inner.configRead(Reg.secondaryBus, width: .byte) == 0, "a bridge's bus numbers reset to 0")
    }

    /// A device whose realize fails (a bad property, a host function that cannot be opened)
    /// leaves no trace: no device, an empty slot, and its id, slot and chassis/slot number
    /// free for the next attempt.
    @Test func aFailedRealizeLeavesTheTopologyUnchanged() throws {
        let machine = try Machine(MachineConfiguration(devices: [
            try DeviceSpec(parsing: "pcie-root-port,id=rp1,chassis=1,slot=1,addr=2"),
        ]))
        let before = machine.topology.placed.map(\.id)
        #expect { try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=t1,bus=rp1,sriov_max_vfs=999")) }
            throws: { "\($0)".contains("sriov_max_vfs") }
        #expect(machine.topology.placed.map(\.id) == before)
        // vfio-pci realizes by opening the host function; this host cannot give it one.
        #expect(throws: MachineConfigurationError.self) {
            try machine.hotPlug(DeviceSpec(parsing: "vfio-pci,id=t1,host=0000:7f:1f.7,bus=rp1"))
        }
        #expect(machine.topology.placed.map(\.id) == before)
        let port = try #require(machine.device(id: "rp1")?.function as? any PCIBridgeFunction)
        #expect(port.secondary.isEmpty)
        #expect(throws: MachineConfigurationError.self) {
            try machine.topology.add(DeviceSpec(parsing: "pcie-root-port,id=rp2,chassis=1,slot=2,addr=4,bogus=1"))
        }
        #expect(machine.topology.placed.map(\.id) == before)
        #expect(machine.topology.bus(named: "rp2") == nil)
        try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=t1,bus=rp1"))
        _ = try machine.topology.add(DeviceSpec(parsing: "pcie-root-port,id=rp2,chassis=1,slot=2,addr=4"))
        #expect(machine.device(id: "t1")?.devfn == 0)
        #expect(machine.device(id: "rp2")?.devfn == 4 << 3)
    }

    /// Two device_adds racing for a root port's only slot: exactly one is placed, the other
    /// fails with the error for a full bus or a used address, every time.
    @Test func concurrentAddsIntoOneSlotHaveExactlyOneWinner() throws {
        let ports = 12
        let machine = try Machine(MachineConfiguration(devices: try (0..<ports).map {
            try DeviceSpec(parsing: "pcie-root-port,id=rp\($0),chassis=1,slot=\($0 + 1),addr=\($0 + 2)")
        }))
        for port in 0..<ports {
            let outcomes = Mutex<[Result<String, MachineConfigurationError>]>([])
            DispatchQueue.concurrentPerform(iterations: 2) { racer in
                let outcome: Result<String, MachineConfigurationError>
                do throws(MachineConfigurationError) {
                    outcome = .success(try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=p\(port)r\(racer),bus=rp\(port)")).id)
                } catch {
                    outcome = .failure(error)
                }
                outcomes.withLock { $0.append(outcome) }
            }
            let results = outcomes.withLock { $0 }
            let winners = results.compactMap { try? $0.get() }
            #expect(winners.count == 1)
            let port = try #require(machine.device(id: "rp\(port)")?.function as? any PCIBridgeFunction)
            #expect(port.secondary.functions.map(\.function.name) == winners)
            for case .failure(let error) in results {
                #expect("\(error)".contains("has no free slot") || "\(error)".contains("is already used by"),
                        "\(error)")
            }
        }
    }
}
