import Chipset
import Machine
import Testing
import VMMBase

@Suite struct ChipsetDecodeTests {
    let machine: Machine
    let ports: PortConfigCycles

    init() throws {
        machine = try Machine(MachineConfiguration())
        ports = PortConfigCycles(machine)
    }

    func setPAM0(_ value: UInt32) { ports.write(bus: 0, devfn: 0, offset: 0x90, width: .byte, value: value) }

    @Test func pamSegmentsSteerReadsAndWritesBetweenRAMAndPCI() {
        // At reset PAM routes 0xF0000 to PCI: nothing answers.
        machine.mmioWrite(0xF_0000, width: .dword, value: 0x1111_1111)
        #expect(machine.mmioRead(0xF_0000, width: .dword) == 0xFFFF_FFFF)
        setPAM0(0x30)  // read/write DRAM
        machine.mmioWrite(0xF_0000, width: .dword, value: 0x2222_2222)
        #expect(machine.mmioRead(0xF_0000, width: .dword) == 0x2222_2222)
        setPAM0(0x10)  // read-only: reads DRAM, writes go to PCI
        machine.mmioWrite(0xF_0000, width: .dword, value: 0x3333_3333)
        #expect(machine.mmioRead(0xF_0000, width: .dword) == 0x2222_2222)
        setPAM0(0x20)  // write-only: writes DRAM, reads from PCI
        machine.mmioWrite(0xF_0000, width: .dword, value: 0x4444_4444)
        #expect(machine.mmioRead(0xF_0000, width: .dword) == 0xFFFF_FFFF)
        setPAM0(0x30)
        #expect(machine.mmioRead(0xF_0000, width: .dword) == 0x4444_4444)
        // Below 0xC0000 RAM is always RAM.
        machine.mmioWrite(0x9_0000, width: .dword, value: 0x5555_5555)
        #expect(machine.mmioRead(0x9_0000, width: .dword) == 0x5555_5555)
    }

    @Test func closedSMRAMAndTSEGAreHiddenFromNonSMMCode() {
        #expect(machine.mmioRead(0xA_0000, width: .dword) == 0xFFFF_FFFF)
        ports.write(bus: 0, devfn: 0, offset: 0x9D, width: .byte, value: 0x4A)  // D_OPEN | G_SMRAME | C_BASE_SEG
        machine.mmioWrite(0xA_0000, width: .dword, value: 0xABCD)
        #expect(machine.mmioRead(0xA_0000, width: .dword) == 0xABCD)
        // TSEG of 1 MiB at the top of low memory (T_EN, size 00b), with G_SMRAME set.
        let top = machine.configuration.memorySize
        machine.mmioWrite(top - 16, width: .dword, value: 0x77)
        ports.write(bus: 0, devfn: 0, offset: 0x9E, width: .byte, value: 0x39)
        #expect(machine.mmioRead(top - 16, width: .dword) == 0xFFFF_FFFF)
        #expect(machine.mmioRead(top - (1 << 20) - 4, width: .dword) == 0)  // just below TSEG: RAM
    }

    @Test func rcbaMapsTheChipsetConfigurationBlock() {
        #expect(machine.mmioRead(0xFED1_C000, width: .dword) == 0xFFFF_FFFF)
        ports.write(bus: 0, devfn: 0x1F << 3, offset: 0xF0, width: .dword, value: 0xFED1_C001)
        // D31IR at 0x3140 holds QEMU's default pin routing.
        #expect(machine.mmioRead(0xFED1_C000 + 0x3140, width: .word) == 0x3210)
    }
}
