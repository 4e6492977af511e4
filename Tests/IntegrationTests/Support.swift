import Foundation

/// Runs a program and returns its standard output, standard error and exit status.
@discardableResult
func run(_ executable: String, _ arguments: [String], input: String? = nil) throws -> (out: String, err: String, status: Int32) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Drain stderr on its own thread while stdout is read here: a child that fills one pipe
    // while we wait on the other would otherwise deadlock both.
    let errBox = ErrorOutput()
    let errReader = Thread { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); errBox.done.signal() }
    errReader.start()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    errBox.done.wait()
    let errData = errBox.data
    process.waitUntilExit()
    return (String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self), process.terminationStatus)
}

/// The `switchyard` executable built beside the test bundle.
var switchyardBinary: String {
    let bundleDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [bundleDirectory, bundleDirectory.deletingLastPathComponent()] {
        let path = candidate.appendingPathComponent("switchyard").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    // Fall back to the package's debug build folder.
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug/switchyard").path
}

func temporaryFile(_ name: String, contents: String) throws -> String {
    let path = NSTemporaryDirectory() + "switchyard-\(getpid())-\(UUID().uuidString)-\(name)"
    try contents.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// Stderr collected by a reader thread.
final class ErrorOutput: @unchecked Sendable {
    // Written once by the reader before `done` is signalled, read after waiting on it.
    var data = Data()
    let done = DispatchSemaphore(value: 0)
}
