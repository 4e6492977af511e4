import Foundation
import Machine
import TestRequirements
import Testing

/// Runs Tests/Python/test_qmp.py: Switchyard's QMP monitor against QEMU's own client library.
@Suite("QMP with the qemu.qmp Python library")
struct QMPPythonTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The checkout's .venv first (scripts/setup.sh installs qemu.qmp there), then PATH.
    static let python: String? = [root.appendingPathComponent(".venv/bin/python3").path]
        .first { FileManager.default.isExecutableFile(atPath: $0) } ?? findInPath("python3")

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

    @Test(.requires(python != nil, "python3 is not installed"),
          .requires(hasQEMUQMP, "the qemu.qmp Python library is not installed (scripts/setup.sh installs it)"))
    func qemuQMPClientTalksToSwitchyard() throws {
        var arguments = [Self.root.appendingPathComponent("Tests/Python/test_qmp.py").path, switchyardBinary]
        if let driver = Self.hotPlugDriver { arguments += ["--hotplug-driver", driver] }
        let result = try run(Self.python!, arguments)
        #expect(result.status == 0, "test_qmp.py failed:\n\(result.out)\(result.err)")
    }
}
