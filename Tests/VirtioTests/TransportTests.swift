import Foundation
import PCI
import Testing
import TestRequirements
import VMMBase
@testable import Virtio

/// The modern virtio-pci transport against virtio 1.2 section 4.1 (and QEMU's layout, which
/// the qtest differential in IntegrationTests checks byte for byte).
@Suite(.serialized) struct TransportTests {
    /// (cfg_type, bar, offset, length) of each virtio capability, walking the list.
    static func virtioCapabilities(_ f: VirtioPCIFunction) -> [(type: UInt8, bar: UInt8, offset: UInt32, length: UInt32, at: Int)] {
        var out: [(UInt8, UInt8, UInt32, UInt32, Int)] = []
        var at = Int(f.configRead(0x34, width: .byte))
        while at != 0 {
            if f.configRead(at, width: .byte) == 0x09 {
                out.append((UInt8(f.configRead(at + 3, width: .byte)), UInt8(f.configRead(at + 4, width: .byte)),
                            f.configRead(at + 8, width: .dword), f.configRead(at + 12, width: .dword), at))
            }
            at = Int(f.configRead(at + 1, width: .byte))
        }
        return out
    }

    @Test(arguments: [true, false]) func identityAndCapabilitiesFollowTheSpec(express: Bool) throws {
        let f = VirtioPCIFunction(name: "rng", device: VirtioEntropyDevice(name: "rng"), express: express)
        // 4.1.2.1: vendor 0x1af4, device 0x1040 + 4 (entropy), revision 1 for a non-transitional device.
        #expect(f.configRead(0x00, width: .dword) == 0x1044_1AF4)
        #expect(f.configRead(0x08, width: .byte) == 1)
        #expect(f.configRead(0x2C, width: .dword) == 0x1100_1AF4)
        let caps = Self.virtioCapabilities(f).sorted { $0.type < $1.type }
        // 4.1.4: common 1, notify 2, ISR 3, device 4, PCI config access 5.
        #expect(caps.map(\.type) == [1, 2, 3, 4, 5])
        #expect(caps.filter { $0.type != 5 }.allSatisfy { $0.bar == 4 && $0.length == 0x1000 })
        #expect(caps.map(\.offset) == [0x0, 0x3000, 0x1000, 0x2000, 0])
        // 4.1.4.4: notify cap_len 20 with notify_off_multiplier; 4.1.4.9: the PCI cfg cap's 20 bytes.
        let notify = try #require(caps.first { $0.type == 2 })
        #expect(f.configRead(notify.at + 2, width: .byte) == 20)
        #expect(f.configRead(notify.at + 16, width: .dword) == 4)
        // BAR 4: 64-bit prefetchable memory, 16 KiB (sizing: all ones, read back).
        _ = f.configWrite(0x20, width: .dword, value: 0xFFFF_FFFF)
        #expect(f.configRead(0x20, width: .dword) == 0xFFFF_C00C)
        // PCI Express endpoint only when asked.
        #expect((f.configSnapshot().pciExpressOffset != nil) == express)
    }

    @Test func featuresOKIsRefusedWithoutVersion1AndIndependentOfSelectors() throws {
        let h = try VirtioDriverHarness(device: VirtioEntropyDevice(name: "rng"))
        let offered = h.offeredFeatures
        // 6: VERSION_1 (32), and this transport's INDIRECT_DESC (28), EVENT_IDX (29), ACCESS_PLATFORM (33).
        #expect(offered == 1 << 28 | 1 << 29 | 1 << 32 | 1 << 33)
        h.setCommon(0x00, .dword, 2)
        #expect(h.common(0x04, .dword) == 0)  // 4.1.4.3.1: selectors past the bits read 0
        // 3.1.1: the device leaves FEATURES_OK clear when it cannot accept the features.
        #expect(h.initialize(features: 1 << 33) & 0x8 == 0)
        #expect(h.initialize(features: 1 << 32) & 0x8 == 0)  // ACCESS_PLATFORM offered, not accepted
        #expect(h.initialize(features: offered) == 0xF)
        // Without iommu_platform=on (QEMU's default) ACCESS_PLATFORM is neither offered nor needed.
        let plain = try VirtioDriverHarness(device: VirtioEntropyDevice(name: "rng"), accessPlatform: false)
        #expect(plain.offeredFeatures == 1 << 28 | 1 << 29 | 1 << 32)
        #expect(plain.initialize(features: 1 << 32) == 0xF)
    }

    @Test func vectorsPastTheTableReadBackAsNoVector() throws {
        let h = try VirtioDriverHarness(device: VirtioEntropyDevice(name: "rng"))
        // 4.1.5.1.2: the device answers NO_VECTOR (0xffff) for a vector it cannot use.
        h.setCommon(0x10, .word, 2)
        #expect(h.common(0x10, .word) == 0xFFFF)
        h.setCommon(0x10, .word, 1)
        #expect(h.common(0x10, .word) == 1)
        h.setCommon(0x16, .word, 0)
        h.setCommon(0x1A, .word, 7)
        #expect(h.common(0x1A, .word) == 0xFFFF)
        #expect(h.common(0x12, .word) == 1)  // num_queues
        #expect(h.common(0x18, .word) == 8)  // queue_size: the maximum until the driver lowers it
        #expect(h.common(0x1E, .word) == 0)  // queue_notify_off
    }

    @Test func statusZeroResetsEverything() throws {
        let h = try VirtioDriverHarness(device: VirtioEntropyDevice(name: "rng"))
        #expect(h.initialize(queueSize: 4) == 0xF)
        #expect(h.common(0x18, .word) == 4)
        h.setCommon(0x14, .byte, 0)
        // 4.1.4.3.2: after reset the driver reads 0 status; queues return to their initial state.
        #expect(h.status == 0)
        #expect(h.common(0x18, .word) == 8)
        #expect(h.common(0x1C, .word) == 0)
        #expect(h.common(0x20, .dword) == 0)
        #expect(h.common(0x10, .word) == 0xFFFF)
    }

    @Test func isrIsReadToClearAndDrivesINTxWithoutMSIX() throws {
        let h = try VirtioDriverHarness(device: VirtioEntropyDevice(name: "rng"))
        #expect(h.initialize(msix: false) == 0xF)
        h.writeDescriptor(0, address: h.buffers, length: 8, flags: 2)
        h.makeAvailable(0)
        h.kick()
        // 4.1.4.5: ISR bit 0 for a queue interrupt; INTx follows it; reading clears both.
        #expect(h.interrupts.intx == [true])
        #expect(h.readISR() == 1)
        #expect(h.interrupts.intx == [true, false])
        #expect(h.readISR() == 0)
    }

    @Test func thePCIConfigurationWindowReachesCommonConfig() throws {
        let h = try VirtioDriverHarness(device: VirtioEntropyDevice(name: "rng"))
        let cap = try #require(Self.virtioCapabilities(h.function).first { $0.type == 5 }).at
        // 4.1.4.9: bar, offset, length select a BAR window; pci_cfg_data reads and writes it.
        _ = h.function.configWrite(cap + 4, width: .byte, value: 4)
        _ = h.function.configWrite(cap + 8, width: .dword, value: 0x12)  // num_queues
        _ = h.function.configWrite(cap + 12, width: .dword, value: 2)
        #expect(h.function.configRead(cap + 16, width: .word) == 1)
        _ = h.function.configWrite(cap + 8, width: .dword, value: 0x14)  // device_status
        _ = h.function.configWrite(cap + 12, width: .dword, value: 1)
        _ = h.function.configWrite(cap + 16, width: .byte, value: 1)
        #expect(h.status == 1)
    }

    @Test(.requires(FileManager.default.isExecutableFile(atPath: "/usr/bin/lspci"), "lspci (Debian package pciutils) not installed"))
    func realLspciDecodesTheVirtioCapabilities() throws {
        let f = VirtioPCIFunction(name: "rng", device: VirtioEntropyDevice(name: "rng"), express: true)
        var text = "01:00.0 Class 00ff: 1af4:1044\n"
        for row in stride(from: 0, to: 4096, by: 16) {
            text += String(format: "%03x:", row)
            for i in 0..<16 { text += String(format: " %02x", f.configRead(row + i, width: .byte)) }
            text += "\n"
        }
        let dump = FileManager.default.temporaryDirectory.appendingPathComponent("virtio-lspci-\(getpid()).txt")
        try text.write(to: dump, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: dump) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/lspci")
        process.arguments = ["-F", dump.path, "-vvv"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        for line in ["VirtIO: CommonCfg", "VirtIO: Notify", "VirtIO: ISR", "VirtIO: DeviceCfg",
                     "BAR=4 offset=00000000 size=00001000", "BAR=4 offset=00003000 size=00001000 multiplier=00000004",
                     "MSI-X: Enable- Count=2 Masked-", "Vector table: BAR=1 offset=00000000", "PBA: BAR=1 offset=00000800",
                     "Express (v2) Endpoint"] {
            #expect(output.contains(line), "lspci -vvv lacks '\(line)':\n\(output)")
        }
    }
}
