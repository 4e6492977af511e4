import Chipset
import Machine
import PCI
import Testing
import VMMBase

/// What a failed or hostile hot-plug may and may not do to the machine around it.
@Suite struct HotPlugRollbackTests {
    /// Function 3.1 is plugged silently (as QEMU does for functions other than 0); a reset
    /// then makes the bridge's SHPC count slot 3 as occupied, so plugging 3.0 fails. The
    /// failure takes back only what it added: 3.1 stays, on the bus and in the topology.
    @Test func aFailedPlugRemovesOnlyWhatItAdded() throws {
        let machine = try Machine(MachineConfiguration(devices: [try DeviceSpec(parsing: "pci-bridge,id=ppb1,chassis_nr=1,addr=0x3")]))
        let deleted = DeletedEvents()
        deleted.attach(machine)
        try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=fn1,bus=ppb1,addr=3.1"))
        machine.reset()
        #expect { try machine.hotPlug(DeviceSpec(parsing: "pci-testdev,id=fn0,bus=ppb1,addr=3.0")) }
            throws: { "\($0)".contains("occupied") }
        let bridge = try #require(machine.device(id: "ppb1")?.function as? any PCIBridgeFunction)
        #expect(bridge.secondary.occupant(at: 3 << 3 | 1)?.name == "fn1")
        #expect(bridge.secondary.occupant(at: 3 << 3) == nil)
        #expect(machine.device(id: "fn1") != nil)
        #expect(machine.device(id: "fn0") == nil)
        #expect(deleted.ids.withLock { $0 }.isEmpty)
    }

    /// Guest RAM that does not fit below the 64-bit PCI window is refused, not trapped on and
    /// not silently overlapped by 64-bit BARs.
    @Test func guestRAMMustFitTheLayout() throws {
        let layout = Q35Layout.standard
        #expect(layout.maximumRAM == 510 << 30)
        for size: UInt64 in [layout.maximumRAM + (1 << 20), 600 << 30, 1 << 63, .max] {
            #expect { try Machine(MachineConfiguration(memorySize: size)) } throws: { "\($0)".contains("use at most -m 510G") }
        }
    }
}
