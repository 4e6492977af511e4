import VMMBase
import Foundation
import PCI

/// Runs the real `lspci` over config spaces written in its `-xxxx` dump format.
enum Lspci {
    static let path = "/usr/bin/lspci"

    static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: path) }

    /// A dump in the text format `lspci -xxxx` prints and `lspci -F` reads: a device line,
    /// then 16 bytes per row for the whole config space.
    static func dump(_ functions: [(address: String, config: ConfigSpace)]) -> String {
        var text = ""
        for (address, config) in functions {
            text += "\(address) Class 0000: \(hex(config.vendorID, 4)):\(hex(config.deviceID, 4))\n"
            for row in stride(from: 0, to: config.size, by: 16) {
                let bytes = (row..<(row + 16)).map { hex(config.bytes[$0], 2) }
                text += hex(row, 3) + ": " + bytes.joined(separator: " ") + "\n"
            }
            text += "\n"
        }
        return text
    }

    /// Writes the dump to a temporary file and returns lspci's output for it.
    static func decode(_ functions: [(address: String, config: ConfigSpace)], arguments: [String]) throws -> String {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-lspci-\(UUID().uuidString).txt")
        try dump(functions).write(to: file, atomically: true, encoding: .utf8)
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
