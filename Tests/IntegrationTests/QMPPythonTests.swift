import Foundation
import Machine
import Testing

/// Runs Tests/Python/test_qmp.py: Switchyard's QMP monitor against QEMU's own client library.
@Suite("QMP with the qemu.qmp Python library")
struct QMPPythonTests {
    /// python3 from PATH first (where scripts/setup.sh's pip installed qemu.qmp), then /usr/bin.
    static let python: String? = findInPath("python3")
        ?? ["/usr/bin/python3", "/usr/local/bin/python3"].first { FileManager.default.isExecutableFile(atPath: $0) }

    static func findInPath(_ name: String) -> String? {
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
            .map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static var hasQEMUQMP: Bool {
        guard let python, let result = try? run(python, ["-c", "import qemu.qmp"]) else { return false }
        return result.status == 0
    }

    /// A hot-pluggable port driver in this build, for device_add's success path.
    static var hotPlugDriver: String? {
        ["pcie-root-port", "ioh3420", "xio3130-downstream"].first { Machine.knownDrivers.contains($0) }
    }

    @Test(.enabled(if: python != nil, "python3 is not installed"),
          .enabled(if: hasQEMUQMP, "the qemu.qmp Python library is not installed (scripts/setup.sh installs it)"))
    func qemuQMPClientTalksToSwitchyard() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var arguments = [root.appendingPathComponent("Tests/Python/test_qmp.py").path, switchyardBinary]
        if let driver = Self.hotPlugDriver { arguments += ["--hotplug-driver", driver] }
        let result = try run(Self.python!, arguments)
        #expect(result.status == 0, "test_qmp.py failed:\n\(result.out)\(result.err)")
    }
}
