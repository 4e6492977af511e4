import Foundation

/// Assembles one of the real-mode probes in Firmware/ the way its README says (GNU as with
/// Firmware/common on the include path, then the .text section as raw bytes), so a test can
/// check that the committed probe.bin is what its source gives.
public enum ProbeAssembler {
    public static let firmwareDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Firmware")

    public static var available: Bool {
        FileManager.default.fileExists(atPath: "/usr/bin/as") && FileManager.default.fileExists(atPath: "/usr/bin/objcopy")
    }
    public static let unavailable = "GNU as/objcopy (Debian package binutils) not installed"

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The bytes `Firmware/PROBE/probe.S` assembles to.
    public static func assemble(probe: String) throws -> Data {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-\(probe)-\(getpid())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let object = work.appendingPathComponent("probe.o").path, binary = work.appendingPathComponent("probe.bin").path
        try run("/usr/bin/as", ["--32", "-I", firmwareDirectory.appendingPathComponent("common").path, "-o", object,
                                firmwareDirectory.appendingPathComponent(probe + "/probe.S").path])
        try run("/usr/bin/objcopy", ["-O", "binary", "-j", ".text", object, binary])
        return try Data(contentsOf: URL(fileURLWithPath: binary))
    }

    /// The committed `Firmware/PROBE/probe.bin`.
    public static func committed(probe: String) throws -> Data {
        try Data(contentsOf: firmwareDirectory.appendingPathComponent(probe + "/probe.bin"))
    }

    private static func run(_ tool: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "\(tool) \(arguments.joined(separator: " ")) failed (status \(process.terminationStatus))")
        }
    }
}
