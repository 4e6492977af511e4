import Chipset
import Machine
import PCI
import Testing
import VMMBase

@Suite struct EnumerationTests {
    @Test func defaultMachineEnumeratesEveryFunctionWithDisjointBARs() throws {
        let machine = try Machine(.defaultMachine)
        let report = try machine.runFirmware()
        let addresses = report.functions.map(\.address.shortDescription)
        #expect(addresses == ["00:00.0", "00:02.0", "00:03.0", "00:04.0", "00:1f.0", "00:1f.2", "00:1f.3", "01:01.0", "01:02.0"])
        let bridge = try #require(report.functions.first { $0.isBridge })
        #expect(bridge.busNumbers == BridgeBusNumbers(primary: 0, secondary: 1, subordinate: 1))
        let bars = report.functions.flatMap(\.bars)
        // 3 per test device, 2 for AHCI, 1 for SMBus, the bridge's SHPC BAR 0, the root port's MSI-X BAR 0
        #expect(bars.count == 14)
        for (i, a) in bars.enumerated() {
            for b in bars[(i + 1)...] where a.kind == b.kind || (a.kind != .io && b.kind != .io) {
                #expect(!a.range.overlaps(b.range), "\(a.range) overlaps \(b.range)")
            }
            #expect(a.range.base % a.range.size! == 0, "BAR \(a.range) is not naturally aligned")
        }
        // Every BAR behind the bridge lies inside the bridge's window of its kind.
        for f in report.functions where f.address.bus == 1 {
            for bar in f.bars {
                let window = try #require(bridge.windows[bar.kind])
                #expect(window.contains(bar.range))
            }
        }
        // Windows are 4 KiB (I/O) and 1 MiB (memory) granular.
        for (kind, window) in bridge.windows {
            let granule: UInt64 = kind == .io ? 0x1000 : 0x10_0000
            #expect(window.base % granule == 0 && window.size! % granule == 0)
        }
    }

    @Test func barsAreReachableThroughBridgeWindowsOnly() throws {
        let machine = try Machine(.defaultMachine)
        let report = try machine.runFirmware()
        let behind = try #require(report.functions.first { $0.address.shortDescription == "01:01.0" })
        let mmio = try #require(behind.bars.first { $0.index == 1 }).range.base
        let io = try #require(behind.bars.first { $0.index == 0 }).range.base
        machine.mmioWrite(mmio + 8, width: .dword, value: 0xDEAD_BEEF)
        #expect(machine.mmioRead(mmio + 8, width: .dword) == 0xDEAD_BEEF)
        machine.portWrite(UInt16(io + 4), width: .word, value: 0x1234)
        #expect(machine.portRead(UInt16(io + 4), width: .word) == 0x1234)
        // Turn off the bridge's memory and I/O forwarding: the device vanishes from both spaces.
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        let command = ecam.read(bus: 0, devfn: 3 << 3, offset: Reg.command, width: .word)
        ecam.write(bus: 0, devfn: 3 << 3, offset: Reg.command, width: .word, value: command & ~0x3)
        #expect(machine.mmioRead(mmio + 8, width: .dword) == 0xFFFF_FFFF)
        #expect(machine.portRead(UInt16(io + 4), width: .word) == 0xFFFF)
        ecam.write(bus: 0, devfn: 3 << 3, offset: Reg.command, width: .word, value: command)
        #expect(machine.mmioRead(mmio + 8, width: .dword) == 0xDEAD_BEEF)
        // Move the bridge's memory window away: the BAR is no longer forwarded.
        ecam.write(bus: 0, devfn: 3 << 3, offset: Reg.memoryBase, width: .dword, value: 0xD000_D000)
        #expect(machine.mmioRead(mmio + 8, width: .dword) == 0xFFFF_FFFF)
    }

    @Test func portAndECAMPathsSeeTheSameConfigSpaces() throws {
        let machine = try Machine(.defaultMachine)
        try machine.runFirmware()
        let ports = PortConfigCycles(machine)
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        for (address, bytes) in machine.guestVisibleConfigSpaces() {
            for offset in stride(from: 0, to: 256, by: 4) {
                let viaPorts = ports.read(bus: address.bus, devfn: address.devfn, offset: offset, width: .dword)
                let viaECAM = ecam.read(bus: address.bus, devfn: address.devfn, offset: offset, width: .dword)
                #expect(viaPorts == viaECAM)
                #expect(viaPorts == UInt32(LittleEndian.load(bytes, at: offset, count: 4)))
            }
        }
    }

    @Test func firmwareCommitsThePCILayerOnceAndAccessesCommitNothing() throws {
        let machine = try Machine(.defaultMachine)
        let before = machine.mappingRebuilds.pci
        try machine.runFirmware()
        let afterFirmware = machine.mappingRebuilds.pci
        #expect(afterFirmware == before + 1)
        _ = machine.mmioRead(0xC000_0000, width: .dword)
        _ = machine.mmioRead(0xC000_0004, width: .dword)
        #expect(machine.mappingRebuilds.pci == afterFirmware)
    }

    @Test func exhaustedMemoryWindowIsAClearError() throws {
        var config = MachineConfiguration(devices: (0..<4).map { DeviceSpec(driver: "pci-testdev", id: "t\($0)") })
        config.layout.pciMemory64Last = config.layout.pciMemory64Base + (3 << 20) - 1  // room for three 1 MiB BARs
        let machine = try Machine(config)
        #expect {
            try machine.runFirmware()
        } throws: { error in
            guard case .windowExhausted(kind: .prefetchable, needed: 4 << 20, _) = error as? EnumerationError else { return false }
            return "\(error)".contains("cannot hold")
        }
    }

    @Test func exhaustedIOSpaceLeavesIOBARsUnassignedWithAWarning() throws {
        var config = MachineConfiguration(devices: (0..<4).map { DeviceSpec(driver: "pci-testdev", id: "t\($0)") })
        config.layout.pciIOLast = config.layout.pciIOBase + 0x1FF  // room for two 256-byte I/O BARs
        let machine = try Machine(config)
        let report = try machine.runFirmware()
        #expect(report.warnings.count == 1)
        // Four test devices, AHCI's index/data pair and SMBus: six I/O BARs.
        #expect(report.warnings.first?.contains("6 I/O BARs left unassigned") == true)
        let bars = report.functions.flatMap(\.bars)
        #expect(!bars.contains { $0.kind == .io })
        #expect(bars.filter { $0.kind != .io }.count == 9)
        // Memory still works, and I/O decoding stays off on the devices.
        let ecam = ECAMConfigCycles(machine, base: Q35Layout.standard.ecamBase)
        #expect(ecam.read(bus: 0, devfn: 1 << 3, offset: Reg.command, width: .word) & 0x3 == 0x2)
    }

    @Test func busNumbersExhaustedIsAClearError() throws {
        // 8 bridges on bus 0 with 32 bridges behind each: 264 buses wanted, 255 available.
        var devices: [DeviceSpec] = []
        for i in 0..<8 {
            devices.append(DeviceSpec(driver: "pci-bridge", id: "b\(i)", bus: "pcie.0", devfn: UInt8(i + 1) << 3))
            for j in 0..<32 { devices.append(DeviceSpec(driver: "pci-bridge", id: "b\(i).\(j)", bus: "b\(i)", devfn: UInt8(j) << 3)) }
        }
        let machine = try Machine(MachineConfiguration(devices: devices))
        #expect(throws: EnumerationError.self) { try machine.runFirmware() }
    }
}

@Suite struct DeviceSpecTests {
    @Test func parsesQEMUSyntax() throws {
        let spec = try DeviceSpec(parsing: "pci-testdev,id=t1,bus=br1,addr=0x3.0x1,multifunction=on,foo=bar")
        #expect(spec.driver == "pci-testdev" && spec.id == "t1" && spec.bus == "br1")
        #expect(spec.devfn == UInt8(3 << 3 | 1))
        #expect(spec.multifunction)
        #expect(spec.properties == ["foo": "bar"])
        #expect(try DeviceSpec(parsing: "pci-bridge,addr=5").devfn == 5 << 3)
        // romfile= (empty: no option ROM), as QEMU command lines and libvirt write it: accepted
        // for any device and left out of its properties (no factory has to know it).
        #expect(try DeviceSpec(parsing: "virtio-net-pci,netdev=n0,romfile=").properties == ["netdev": "n0"])
    }

    @Test func rejectsMalformedDevicesWithReasons() {
        for (text, fragment) in [("", "driver"), ("id=x", "driver"), ("pci-testdev,addr=0x20", "slot 0-31"),
                                 ("pci-testdev,addr=1.8", "function 0-7"), ("pci-testdev,junk", "name=value"),
                                 ("pci-testdev,multifunction=maybe", "on or off"),
                                 ("pci-testdev,romfile=efi-virtio.rom", "loads no option ROMs")] {
            #expect {
                _ = try DeviceSpec(parsing: text)
            } throws: { "\($0)".contains(fragment) }
        }
    }

    @Test func topologyErrorsNameTheProblem() throws {
        let machine = try Machine(MachineConfiguration())
        try machine.add(DeviceSpec(driver: "pci-testdev", id: "a", devfn: 2 << 3))
        #expect { try machine.add(DeviceSpec(driver: "pci-testdev", id: "b", devfn: 2 << 3)) }
            throws: { "\($0)".contains("already used by a") }
        #expect { try machine.add(DeviceSpec(driver: "pci-testdev", id: "a")) } throws: { "\($0)".contains("duplicate") }
        #expect { try machine.add(DeviceSpec(driver: "nic", id: "n")) } throws: { "\($0)".contains("known drivers") }
        #expect { try machine.add(DeviceSpec(driver: "pci-testdev", id: "c", bus: "nope")) }
            throws: { "\($0)".contains("no bus named 'nope'") }
        #expect { try machine.add(DeviceSpec(driver: "pci-testdev", id: "d", devfn: 0x1F << 3)) }
            throws: { "\($0)".contains("lpc") }
    }
}
