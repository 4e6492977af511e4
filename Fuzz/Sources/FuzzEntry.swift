import Foundation

/// `switchyard-fuzz TARGET ARGS...`. Built plainly, it replays inputs: ARGS are files or
/// folders, every file runs once, so the committed corpus (and every crash found and fixed)
/// is a regression test. Built with -DFUZZING -sanitize=fuzzer,address, it hands ARGS to
/// libFuzzer (`switchyard-fuzz qmp CORPUS -max_total_time=60`).
@main
struct FuzzMain {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: switchyard-fuzz \(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")) FILE|DIR... [libFuzzer options]")
            exit(2)
        }
        #if FUZZING
        exit(LibFuzzer.run(target, arguments: [CommandLine.arguments[0]] + arguments.dropFirst()))
        #else
        exit(replay(target, paths: Array(arguments.dropFirst())))
        #endif
    }

    static func replay(_ target: FuzzTarget, paths: [String]) -> Int32 {
        guard !paths.isEmpty else {
            print("switchyard-fuzz \(target.rawValue): name the corpus files or folders to replay")
            return 2
        }
        var files: [String] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                print("switchyard-fuzz: no such file or directory: \(path)")
                return 2
            }
            if isDirectory.boolValue {
                let entries = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                files += entries.sorted().map { path + "/" + $0 }
            } else {
                files.append(path)
            }
        }
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            target.run(Array(data))
        }
        print("switchyard-fuzz \(target.rawValue): \(files.count) inputs replayed, none trapped")
        return files.isEmpty ? 1 : 0
    }
}

#if FUZZING
/// libFuzzer's driver, entered from our own main (SwiftPM gives executables theirs).
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// libFuzzer's own main is linked in too and names this entry point; it runs the same target.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    LibFuzzer.target.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}

enum LibFuzzer {
    /// The target the callback runs: set once before the driver starts, read only after.
    nonisolated(unsafe) static var target: FuzzTarget = .qmp

    static func run(_ target: FuzzTarget, arguments: [String]) -> Int32 {
        Self.target = target
        var argc = CInt(arguments.count)
        var cStrings: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        return cStrings.withUnsafeMutableBufferPointer { buffer in
            var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buffer.baseAddress
            return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzerTestOneInput(data, size) }
        }
    }
}
#endif
