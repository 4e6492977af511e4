import Foundation
import Testing

/// SR-IOV against QEMU 10's implementation (hw/pci/pcie_sriov.c) through qtest: Switchyard's
/// `pci-testdev,sriov_max_vfs=12` and QEMU's `nvme,sriov_max_vfs=12` (the property's origin),
/// each behind a root port, driven by the same config cycles. The devices differ (class, BARs,
/// VF Device ID, capability offsets, found here by walking the list), so what is compared is
/// what SR-IOV itself defines: the VF count fields, First VF Offset and Stride (1 and 1 on
/// both), page sizes, and which routing IDs answer and with what Vendor/Device ID before VF
/// Enable, with NumVFs = 10, and after VF Enable is cleared, and that VF BARs are read-only 0.
/// Not compared: a VF's Command register, where QEMU keeps I/O and Memory Space Enable
/// writable and SR-IOV 1.1 (3.4.1.3; Linux's "PCI/IOV: Mark VFs as not implementing
/// PCI_COMMAND_MEMORY") hardwires them to 0, as Switchyard does (SRIOVMachineTests checks it).
@Suite("SR-IOV differential against QEMU")
struct SRIOVDifferentialTests {
    struct Observation: Equatable, CustomStringConvertible {
        let name: String
        let value: UInt64
        var description: String { "\(name) = 0x\(String(value, radix: 16))" }
    }

    static let ecamBase = 0xB000_0000

    static func observe(_ executable: String, grace: Double, arguments: [String], devices: [String]) throws -> [Observation] {
        let listener = try TestListener(name: "sriov")
        let child = try ChildProcess(executable, arguments + [
            "-m", "128M", "-display", "none", "-nodefaults", "-qtest", "unix:\(listener.path)", "-qtest-log", "none",
            "-device", "pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x2"] + devices)
        defer { child.stop(grace: grace) }
        let qt = QTestClient(try listener.accept())
        func address(_ bus: Int, _ devfn: Int, _ offset: Int) -> String {
            "0x" + String(ecamBase + (bus << 20 | devfn << 12 | offset), radix: 16)
        }
        func read(_ bus: Int, _ devfn: Int, _ offset: Int, _ width: String = "l") throws -> UInt64 {
            let reply = try qt.command("read\(width) \(address(bus, devfn, offset))")
            guard reply.hasPrefix("OK 0x"), let value = UInt64(reply.dropFirst(5), radix: 16) else {
                throw TestFailure("unexpected qtest reply '\(reply)'")
            }
            return value
        }
        func write(_ bus: Int, _ devfn: Int, _ offset: Int, _ width: String, _ value: UInt64) throws {
            try qt.command("write\(width) \(address(bus, devfn, offset)) 0x\(String(value, radix: 16))")
        }
        // ECAM at 0xB0000000 (PCIEXBAR), the root port's link numbered bus 1.
        for command in ["outl 0xcf8 0x80000064", "outl 0xcfc 0x0", "outl 0xcf8 0x80000060", "outl 0xcfc 0xb0000001"] {
            try qt.command(command)
        }
        let port = 2 << 3
        try write(0, port, 0x18, "l", 0x0001_0100)
        // ARI Forwarding Enable in the port's Device Control 2 (PCIe capability found by walking).
        var express = Int(try read(0, port, 0x34, "b"))
        while express != 0, try read(0, port, express, "b") != 0x10 { express = Int(try read(0, port, express + 1, "b")) }
        try #require(express != 0)
        try write(0, port, express + 0x28, "w", 1 << 5)
        var sriov = 0x100
        while try read(1, 0, sriov) & 0xFFFF != 0x0010 {
            sriov = Int(try read(1, 0, sriov) >> 20)
            try #require(sriov >= 0x100, "no SR-IOV capability")
        }
        var seen: [Observation] = []
        func note(_ name: String, _ value: UInt64) { seen.append(Observation(name: name, value: value)) }
        note("InitialVFs|TotalVFs", try read(1, 0, sriov + 0x0C))
        note("First VF Offset|VF Stride", try read(1, 0, sriov + 0x14))
        note("Supported Page Sizes", try read(1, 0, sriov + 0x1C))
        note("System Page Size", try read(1, 0, sriov + 0x20))
        note("SR-IOV Control at reset", try read(1, 0, sriov + 0x08, "w"))
        func routingIDs(_ stage: String) throws {
            for devfn in 0...12 {
                note("\(stage) \(devfn): answers", try read(1, devfn, 0x08) != 0xFFFF_FFFF ? 1 : 0)
                if devfn > 0 { note("\(stage) \(devfn): Vendor|Device ID", try read(1, devfn, 0x00)) }
            }
        }
        try routingIDs("before VF Enable")
        try write(1, 0, sriov + 0x10, "w", 10)
        try write(1, 0, sriov + 0x08, "w", 1 << 0 | 1 << 3 | 1 << 4)
        note("NumVFs", try read(1, 0, sriov + 0x10, "w"))
        try routingIDs("NumVFs 10")
        for devfn in [1, 9] {
            for bar in 0..<6 {
                try write(1, devfn, 0x10 + 4 * bar, "l", 0xFFFF_FFFF)
                note("VF at \(devfn): BAR\(bar) after all-ones", try read(1, devfn, 0x10 + 4 * bar))
            }
            note("VF at \(devfn): header type", try read(1, devfn, 0x0E, "b") & 0x7F)
            note("VF at \(devfn): interrupt pin", try read(1, devfn, 0x3D, "b"))
        }
        try write(1, 0, sriov + 0x08, "w", 1 << 4)
        try routingIDs("VF Enable cleared")
        return seen
    }

    @Test(.enabled(if: QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 is not installed"), .timeLimit(.minutes(2)))
    func vfsAppearAndLeaveAsOnQEMU() throws {
        let ours = try Self.observe(switchyardBinary, grace: 5, arguments: [
            "-machine", "q35", "-accel", "qtest"], devices: ["-device", "pci-testdev,id=pf,bus=rp1,sriov_max_vfs=12"])
        let theirs = try Self.observe(QTestDifferentialTests.qemu!, grace: 0, arguments: [
            "-machine", "q35", "-accel", "tcg", "-S", "-monitor", "none", "-serial", "none"], devices: [
            "-device", "nvme-subsys,id=subsys0",
            "-device", "nvme,id=pf,serial=sriov,subsys=subsys0,bus=rp1,sriov_max_vfs=12,max_ioqpairs=26,msix_qsize=26,sriov_vq_flexible=24,sriov_vi_flexible=12"])
        #expect(ours.count == 97 && ours.map(\.name) == theirs.map(\.name))
        for (a, b) in zip(ours, theirs) { #expect(a == b) }
        // The facts both must show, from the SR-IOV spec and the devices' documentation.
        #expect(theirs.first { $0.name == "First VF Offset|VF Stride" }?.value == 0x0001_0001)
        #expect(theirs.filter { $0.name.hasPrefix("NumVFs 10") && $0.name.hasSuffix("answers") }.map(\.value)
                == [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    }
}
