import CLinux
import Glibc

/// Path-level calls: whole-file reads and writes, symbolic links, directories. Small files only
/// (sysfs attributes, test fixtures).
public enum FileSystem {
    /// The file's whole contents.
    public static func readFile(_ path: String, limit: Int = 1 << 20) throws(SystemError) -> [UInt8] {
        let fd = try FileDescriptor.open(path, .readOnly)
        do throws(SystemError) {
            return try fd.readToEnd(limit: limit)
        } catch {
            throw SystemError(error.errno, operation: "read", context: path)
        }
    }

    /// Writes `bytes` to `path`, creating or truncating it.
    public static func writeFile(_ path: String, _ bytes: some Sequence<UInt8>,
                                 permissions: mode_t = 0o644) throws(SystemError) {
        let fd = try FileDescriptor.open(path, .writeOnly, options: [.create, .truncate, .closeOnExec],
                                         permissions: permissions)
        do throws(SystemError) {
            try fd.writeAll(bytes)
        } catch {
            throw SystemError(error.errno, operation: "write", context: path)
        }
        try fd.close()
    }

    /// readlink(2): the link's target text.
    public static func readLink(_ path: String) throws(SystemError) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = try valueOrError("readlink", path) { readlink(path, &buffer, buffer.count - 1) }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The directory's entries, without "." and "..", sorted.
    public static func listDirectory(_ path: String) throws(SystemError) -> [String] {
        guard let dir = opendir(path) else { throw SystemError.current("opendir", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while true {
            Glibc.errno = 0
            guard let entry = readdir(dir) else {
                if Glibc.errno != 0 { throw SystemError.current("readdir", path) }
                break
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// True when `path` exists (following links).
    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// True when `path` is a directory (following links).
    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func makeDirectory(_ path: String, permissions: mode_t = 0o755) throws(SystemError) {
        try nothingOrError("mkdir", path) { mkdir(path, permissions) }
    }

    /// mkdir -p.
    public static func makeDirectories(_ path: String, permissions: mode_t = 0o755) throws(SystemError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            do throws(SystemError) {
                try makeDirectory(prefix, permissions: permissions)
            } catch where error.errno == .fileExists {
                continue
            }
        }
    }

    public static func createSymbolicLink(at path: String, to target: String) throws(SystemError) {
        try nothingOrError("symlink", path) { symlink(target, path) }
    }

    /// A new private directory under `parent` (mkdtemp).
    public static func makeTemporaryDirectory(prefix: String = "switchyard",
                                              in parent: String = "/tmp") throws(SystemError) -> String {
        var template = Array((parent + "/" + prefix + ".XXXXXX").utf8CString)
        guard let p = mkdtemp(&template) else { throw SystemError.current("mkdtemp", parent) }
        return String(cString: p)
    }

    /// rm -rf: removes a file, link or directory tree (links are removed, not followed).
    public static func removeTree(_ path: String) throws(SystemError) {
        var st = stat()
        try nothingOrError("lstat", path) { lstat(path, &st) }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in try listDirectory(path) { try removeTree(path + "/" + name) }
            try nothingOrError("rmdir", path) { rmdir(path) }
        } else {
            try nothingOrError("unlink", path) { unlink(path) }
        }
    }
}
