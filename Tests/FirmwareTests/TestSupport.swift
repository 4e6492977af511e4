import Foundation
import Firmware
import VMMBase

/// The three machines the tool tests run over.
enum Descriptions {
    /// Plain q35: 2 CPUs, 2 GiB, no hot-plug buses, native hot-plug granted.
    static var plain: PlatformDescription { .q35(cpuCount: 2, memorySize: 2 << 30) }

    /// q35 with 32 root ports (slots 1-4, 8 functions each) on buses 1-32 using ACPI hot-plug;
    /// root port 00:01.0 leads to a switch (upstream 01:00.0, internal bus 33, four downstream
    /// ports to buses 34-37), root port 00:01.1 to a PCIe-to-PCI bridge (bus 38) with a PCI-PCI
    /// bridge at 26:01.0 (bus 39). ECAM covers buses 0-63.
    static var topology: PlatformDescription {
        typealias Bus = PlatformDescription.Bus
        typealias Device = PlatformDescription.Device
        var d = PlatformDescription.q35(cpuCount: 4, memorySize: 4 << 30,
                                        rootDevices: (0..<32).map { Device(devfn: UInt8(8 + $0), secondaryBus: UInt8(1 + $0)) })
        d.pci.ecam.busRange = 0...63
        d.pci.nativeHotplug = false
        d.acpiHotplug = PlatformDescription.ACPIHotplugRegisters()
        var buses = d.pci.buses
        var selector: UInt32 = 1
        func next() -> UInt32 { defer { selector += 1 }; return selector }
        // Bus 1: switch upstream port (cold-plugged, not hot-pluggable) -> bus 33.
        buses.append(Bus(number: 1, kind: .pcieDownstream, devices: [Device(devfn: 0, secondaryBus: 33)]))
        buses.append(Bus(number: 33, kind: .conventional,
                         devices: (0..<4).map { Device(devfn: UInt8($0 << 3), secondaryBus: UInt8(34 + $0)) }))
        for b in UInt8(34)...37 {
            buses.append(Bus(number: b, kind: .pcieDownstream, acpiHotplugSelector: next(),
                             devices: b == 35 ? [Device(devfn: 0, hotpluggable: true)] : []))
        }
        // Bus 2: PCIe-to-PCI bridge -> bus 38 (conventional, 32 slots), PCI-PCI bridge -> 39.
        buses.append(Bus(number: 2, kind: .pcieDownstream, devices: [Device(devfn: 0, secondaryBus: 38)]))
        buses.append(Bus(number: 38, kind: .conventional, acpiHotplugSelector: next(),
                         devices: [Device(devfn: 0x08, secondaryBus: 39), Device(devfn: 0x18)]))
        buses.append(Bus(number: 39, kind: .conventional, acpiHotplugSelector: next(),
                         devices: [Device(devfn: 0x10, hotpluggable: true), Device(devfn: 0x11, hotpluggable: true)]))
        for b in UInt8(3)...32 {
            buses.append(Bus(number: b, kind: .pcieDownstream, acpiHotplugSelector: next(),
                             devices: b == 3 ? [Device(devfn: 0, hotpluggable: true)] : []))
        }
        d.pci.buses = buses
        return d
    }

    /// q35 with VT-d (interrupt remapping, no x2APIC opt-out), a CPU with an x2APIC ID, no HPET,
    /// and an MSI controller in the device tree.
    static var dmar: PlatformDescription {
        var d = PlatformDescription.q35(cpuCount: 3, memorySize: 8 << 30)
        d.cpus.append(.init(apicID: 300))
        d.dmar = PlatformDescription.DMAR(hostAddressWidth: 48, interruptRemapping: true, x2apicOptOut: false)
        d.hpet = nil
        d.deviceTree.msiController = PlatformDescription.MSIController()
        return d
    }

    static let all: [(String, PlatformDescription)] = [("plain", plain), ("topology", topology), ("dmar", dmar)]
}

/// External tools, found in the checkout's Python environment (.venv/bin, where scripts/setup.sh
/// installs dtschema), then on PATH.
enum Tool {
    static func find(_ name: String) -> String? {
        var dirs = [repositoryRoot.appendingPathComponent(".venv/bin").path]
        dirs += (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        dirs += ["/usr/local/bin", "/usr/bin"]
        for dir in dirs {
            let path = dir + "/" + name
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    static let iasl = find("iasl")
    static let dtc = find("dtc")
    /// dt-validate also needs its schemas to load offline; probe it once with a trivial tree.
    static let dtValidate: String? = {
        guard let path = find("dt-validate"), let dtc else { return nil }
        guard let dir = try? TempDir() else { return nil }
        let dts = dir.url.appendingPathComponent("probe.dts")
        try? "/dts-v1/;\n/ { #address-cells = <1>; #size-cells = <1>; model = \"p\"; compatible = \"p\"; };\n"
            .write(to: dts, atomically: true, encoding: .utf8)
        guard run(dtc, ["-I", "dts", "-O", "dtb", "-o", "probe.dtb", "probe.dts"], in: dir.url).status == 0,
              run(path, ["probe.dtb"], in: dir.url).status == 0 else { return nil }
        return path
    }()

    struct Result { var status: Int32; var output: String }

    @discardableResult
    static func run(_ tool: String, _ args: [String], in dir: URL) -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        p.currentDirectoryURL = dir
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { return Result(status: -1, output: "\(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }
}

/// A temporary directory removed when the value goes away.
final class TempDir {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("fwtest-" + UUID().uuidString)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
}

/// The checkout's root folder.
let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// iasl's output without the leading comment block (tool version, date, file path, header dump).
func stripLeadingComment(_ text: String) -> String {
    var lines = text.components(separatedBy: "\n")
    if lines.first == "/*", let end = lines.firstIndex(of: " */") { lines.removeSubrange(0...end) }
    return lines.joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines) + "\n"
}

/// dtc's output is stable; nothing to strip but trailing whitespace.
func normalizeDTS(_ text: String) -> String { text.trimmingCharacters(in: .whitespacesAndNewlines) + "\n" }
