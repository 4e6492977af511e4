import Chipset
import Foundation
import PCI
import Testing
import VMMBase

/// Fixtures captured from QEMU 10 by Tests/Oracle/qemu_bridges.py.
enum BridgeFixtures {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("DeviceTables/fixtures")
    static let oracleScript = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Oracle/qemu_bridges.py")

    /// (fixture name, driver, properties) as the oracle script starts QEMU.
    static let variants: [(String, String, [String: String])] = [
        ("pci-bridge", "pci-bridge", ["chassis_nr": "1"]),
        ("pcie-pci-bridge", "pcie-pci-bridge", [:]),
        ("pci-bridge-shpc-off", "pci-bridge", ["chassis_nr": "2", "shpc": "off"]),
        ("pci-bridge-msi-off", "pci-bridge", ["chassis_nr": "3", "msi": "off"]),
        ("pcie-pci-bridge-msi-off", "pcie-pci-bridge", ["msi": "off"]),
    ]

    /// Parses lspci -xxxx style rows ("010: 04 00 ..."), or rows of dwords for SHPC dumps.
    static func bytes(_ name: String) throws -> [UInt8] {
        let text = try String(contentsOf: directory.appendingPathComponent("qemu10-\(name).txt"), encoding: .utf8)
        var out: [UInt8] = []
        for line in text.split(separator: "\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            for word in line[line.index(after: colon)...].split(separator: " ") {
                guard let v = UInt32(word, radix: 16) else { continue }
                for i in 0..<(word.count / 2) { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
            }
        }
        return out
    }

    struct AllowEntry { let fixture: String; let kind: String; let range: ClosedRange<Int>; let reason: String }

    static func allowlist() throws -> [AllowEntry] {
        let text = try String(contentsOf: directory.appendingPathComponent("bridges-allowlist.txt"), encoding: .utf8)
        return text.split(separator: "\n").compactMap { line in
            guard !line.hasPrefix("#") else { return nil }
            let parts = line.split(separator: " ", maxSplits: 3)
            guard parts.count == 4 else { return nil }
            let bounds = parts[2].split(separator: "-").compactMap { Int($0, radix: 16) }
            guard bounds.count == 2 else { return nil }
            return AllowEntry(fixture: String(parts[0]), kind: String(parts[1]), range: bounds[0]...bounds[1],
                              reason: String(parts[3]))
        }
    }

    static func allowed(_ list: [AllowEntry], _ fixture: String, _ kind: String, _ offset: Int) -> Bool {
        list.contains { $0.fixture == fixture && $0.kind == kind && $0.range.contains(offset) }
    }

    /// The oracle's probe: per byte, write 0xff and 0x00 and keep the bits that followed both;
    /// the SHPC data window is probed with DWORD Select 0.
    static func probeMasks(_ f: any PCIFunction, size: Int, shpcCap: Int?) -> [UInt8] {
        (0..<size).map { o in
            if let cap = shpcCap, (cap + 4)..<(cap + 8) ~= o { _ = f.configWrite(cap + 2, width: .byte, value: 0) }
            let old = f.configRead(o, width: .byte)
            _ = f.configWrite(o, width: .byte, value: 0xFF)
            let hi = f.configRead(o, width: .byte)
            _ = f.configWrite(o, width: .byte, value: 0)
            let lo = f.configRead(o, width: .byte)
            _ = f.configWrite(o, width: .byte, value: old)
            return UInt8(truncatingIfNeeded: hi & ~lo)
        }
    }
}

@Suite("QEMU 10 bridge layouts")
struct PCIBridgeOracleTests {
    func make(_ driver: String, _ properties: [String: String]) throws -> PCIBridge {
        try #require(try PCIBridgeFactory.make(driver: driver, id: "b", properties: properties) as? PCIBridge)
    }

    @Test("config space equals QEMU's byte for byte", arguments: BridgeFixtures.variants.map(\.0))
    func configSpace(_ fixture: String) throws {
        let variant = try #require(BridgeFixtures.variants.first { $0.0 == fixture })
        let bridge = try make(variant.1, variant.2)
        let expected = try BridgeFixtures.bytes("\(fixture).config")
        #expect(expected.count == bridge.configSnapshot().size)
        let allow = try BridgeFixtures.allowlist()
        for o in expected.indices where !BridgeFixtures.allowed(allow, fixture, "config", o) {
            let actual = UInt8(bridge.configRead(o, width: .byte))
            #expect(actual == expected[o], "\(fixture) config 0x\(String(o, radix: 16)): \(hex(actual, 2)) != QEMU \(hex(expected[o], 2))")
        }
    }

    @Test("write masks equal QEMU's, modulo the allowlist", arguments: BridgeFixtures.variants.map(\.0))
    func writeMasks(_ fixture: String) throws {
        let variant = try #require(BridgeFixtures.variants.first { $0.0 == fixture })
        let bridge = try make(variant.1, variant.2)
        let expected = try BridgeFixtures.bytes("\(fixture).wmask")
        #expect(expected.count == bridge.configSnapshot().size)
        let before = bridge.configSnapshot().bytes
        let masks = BridgeFixtures.probeMasks(bridge, size: expected.count, shpcCap: bridge.shpcCapability)
        let allow = try BridgeFixtures.allowlist()
        for o in expected.indices where !BridgeFixtures.allowed(allow, fixture, "wmask", o) {
            #expect(masks[o] == expected[o], "\(fixture) mask 0x\(String(o, radix: 16)): \(hex(masks[o], 2)) != QEMU \(hex(expected[o], 2))")
        }
        #expect(bridge.configSnapshot().bytes == before, "probing restores every byte")
    }

    @Test("SHPC registers through BAR 0 and the DWORD window equal QEMU's",
          arguments: ["pci-bridge", "pcie-pci-bridge", "pci-bridge-msi-off", "pcie-pci-bridge-msi-off"])
    func shpcRegisters(_ fixture: String) throws {
        let variant = try #require(BridgeFixtures.variants.first { $0.0 == fixture })
        let bridge = try make(variant.1, variant.2)
        let bar = try BridgeFixtures.bytes("\(fixture).shpcbar")
        #expect(bar.count == 256)
        for o in stride(from: 0, to: bar.count, by: 4) {
            let expected = UInt64(LittleEndian.load(bar, at: o, count: 4))
            #expect(bridge.barRead(0, offset: UInt64(o), width: .dword) == expected, "BAR +0x\(String(o, radix: 16))")
        }
        let window = try BridgeFixtures.bytes("\(fixture).shpc")
        #expect(window.count == 0xA0)
        let cap = try #require(bridge.shpcCapability)
        for o in stride(from: 0, to: window.count, by: 4) {
            _ = bridge.configWrite(cap + 2, width: .byte, value: UInt32(o / 4))
            #expect(UInt64(bridge.configRead(cap + 4, width: .dword)) == UInt64(LittleEndian.load(window, at: o, count: 4)))
        }
    }

    @Test("the allowlist gives a reason for every entry and only names known fixtures")
    func allowlistIsTidy() throws {
        let names = Set(BridgeFixtures.variants.map(\.0))
        for entry in try BridgeFixtures.allowlist() {
            #expect(names.contains(entry.fixture))
            #expect(["config", "wmask", "shpc"].contains(entry.kind))
            #expect(entry.reason.count > 10)
        }
    }

    static let qemuPath = ["/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test("live: QEMU still produces the committed fixtures",
          .enabled(if: qemuPath != nil, "qemu-system-x86_64 is not installed"),
          .timeLimit(.minutes(2)))
    func liveOracle() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("bridges-oracle-\(getpid())")
        defer { try? FileManager.default.removeItem(at: out) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", BridgeFixtures.oracleScript.path, out.path]
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0)
        for (name, _, _) in BridgeFixtures.variants {
            for kind in ["config", "wmask"] {
                let file = "qemu10-\(name).\(kind).txt"
                let live = try String(contentsOf: out.appendingPathComponent(file), encoding: .utf8)
                let committed = try String(contentsOf: BridgeFixtures.directory.appendingPathComponent(file), encoding: .utf8)
                #expect(live == committed, "\(file) changed: re-run Tests/Oracle/qemu_bridges.py DeviceTables/fixtures")
            }
        }
    }

    @Test("factory errors name the property and the fix")
    func factoryErrors() {
        #expect(throws: PCIBridgeFactoryError.missingProperty(driver: "pci-bridge", property: "chassis_nr",
            fix: "give each pci-bridge a distinct chassis number from 1 to 255, e.g. chassis_nr=1")) {
            _ = try PCIBridgeFactory.make(driver: "pci-bridge", id: "b", properties: [:])
        }
        #expect(throws: PCIBridgeFactoryError.invalidValue(driver: "pci-bridge", property: "chassis_nr", value: "0",
                                                           expected: "an integer from 1 to 255")) {
            _ = try PCIBridgeFactory.make(driver: "pci-bridge", id: "b", properties: ["chassis_nr": "0"])
        }
        #expect(throws: PCIBridgeFactoryError.invalidValue(driver: "pci-bridge", property: "shpc", value: "maybe",
                                                           expected: "on or off")) {
            _ = try PCIBridgeFactory.make(driver: "pci-bridge", id: "b", properties: ["chassis_nr": "1", "shpc": "maybe"])
        }
        #expect(throws: PCIBridgeFactoryError.self) {
            _ = try PCIBridgeFactory.make(driver: "pci-bridge", id: "b",
                                          properties: ["chassis_nr": "1", "shpc": "off", "msi": "on"])
        }
        #expect(throws: PCIBridgeFactoryError.unknownProperty(driver: "pcie-pci-bridge", property: "chassis_nr",
                                                              known: ["msi", "multifunction"])) {
            _ = try PCIBridgeFactory.make(driver: "pcie-pci-bridge", id: "b", properties: ["chassis_nr": "1"])
        }
        #expect(throws: PCIBridgeFactoryError.unknownDriver("pci-brdge", known: ["pci-bridge", "pcie-pci-bridge"])) {
            _ = try PCIBridgeFactory.make(driver: "pci-brdge", id: "b", properties: [:])
        }
        let error = PCIBridgeFactoryError.missingProperty(driver: "pci-bridge", property: "chassis_nr", fix: "x")
        #expect(error.description.contains("chassis_nr"))
    }
}
