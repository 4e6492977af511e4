import Foundation

/// Runs the real `lspci` over config spaces written in its `-xxxx` dump format.
public enum RealLspci {
    public static let path = "/usr/bin/lspci"

    public static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: path) }
    public static let missing = "pciutils' lspci is not installed (scripts/setup.sh installs it)"

    /// A dump in the text format `lspci -xxxx` prints and `lspci -F` reads: a device line,
    /// then 16 bytes per row for the whole config space (256 or 4096 bytes).
    public static func dump(_ functions: [(address: String, bytes: [UInt8])]) -> String {
        var text = ""
        for (address, bytes) in functions {
            func hex(_ value: UInt8) -> String { String(value, radix: 16).leftPadded(to: 2) }
            text += "\(address) Class 0000: \(hex(bytes[1]))\(hex(bytes[0])):\(hex(bytes[3]))\(hex(bytes[2]))\n"
            for row in stride(from: 0, to: bytes.count, by: 16) {
                text += String(row, radix: 16).leftPadded(to: 3) + ": "
                    + bytes[row..<min(row + 16, bytes.count)].map(hex).joined(separator: " ") + "\n"
            }
            text += "\n"
        }
        return text
    }

    /// Writes the dump to a temporary file and returns lspci's output for it.
    public static func decode(_ functions: [(address: String, bytes: [UInt8])], arguments: [String]) throws -> String {
        try decode(dump: dump(functions), arguments: arguments)
    }

    /// lspci's output for `dump`, a text in the `lspci -xxxx` format (read with `lspci -F`).
    public static func decode(dump: String, arguments: [String]) throws -> String {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-lspci-\(UUID().uuidString).txt")
        try dump.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["-F", file.path] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}

private extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
