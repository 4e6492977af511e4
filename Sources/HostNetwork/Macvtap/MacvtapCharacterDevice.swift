import Glibc
import HostOS

/// The character device of a macvtap link, `tapN` with the major:minor the kernel gives in
/// sysfs (`/sys/class/net/LINK/macvtap/tapN/dev`). Every open of it is one more queue.
public struct MacvtapCharacterDevice: Hashable, Sendable {
    public var name: String
    public var major: UInt32
    public var minor: UInt32

    /// Reads the device of `link` from sysfs. `sysfsNet` is `/sys/class/net` of the network
    /// namespace the link lives in (a sysfs mounted from inside it shows that namespace).
    public static func of(link: String, sysfsNet: String = "/sys/class/net") throws(HostNetworkError) -> MacvtapCharacterDevice {
        let directory = "\(sysfsNet)/\(link)/macvtap"
        let entries: [String]
        do { entries = try FileSystem.listDirectory(directory) } catch {
            throw .notMacvtap(link: link, reason: "\(directory) is unreadable: \(error)")
        }
        guard let node = entries.first(where: { $0.hasPrefix("tap") }) else {
            throw .notMacvtap(link: link, reason: "\(directory) lists no tapN device")
        }
        let text: String
        do { text = String(decoding: try FileSystem.readFile("\(directory)/\(node)/dev"), as: UTF8.self) } catch {
            throw .system(error)
        }
        let numbers = text.split(whereSeparator: { $0 == "\n" || $0 == " " }).first?.split(separator: ":") ?? []
        guard numbers.count == 2, let major = UInt32(numbers[0]), let minor = UInt32(numbers[1]) else {
            throw .notMacvtap(link: link, reason: "\(directory)/\(node)/dev reads '\(text.filter { $0 != "\n" })', not MAJOR:MINOR")
        }
        return MacvtapCharacterDevice(name: node, major: major, minor: minor)
    }

    /// glibc's dev_t encoding (makedev is a macro Swift does not import).
    var deviceNumber: dev_t {
        let major = UInt64(self.major), minor = UInt64(self.minor)
        return dev_t(((major & 0xffff_f000) << 32) | ((major & 0xfff) << 8)
                     | ((minor & 0xffff_ff00) << 12) | (minor & 0xff))
    }

    /// Opens one queue, O_RDWR | O_NONBLOCK. Uses `devDirectory/tapN` when it is this character
    /// device (udev or devtmpfs made it); otherwise makes the node in `privateDirectory` (0700),
    /// opens it and removes it again, so no stale node is left behind.
    public func openQueue(devDirectory: String = "/dev",
                          privateDirectory: String = "/run/switchyard/dev") throws(HostNetworkError) -> FileDescriptor {
        let options: FileDescriptor.OpenOptions = [.nonBlocking, .closeOnExec]
        let standard = "\(devDirectory)/\(name)"
        if isThisDevice(standard) {
            do { return try FileDescriptor.open(standard, .readWrite, options: options) } catch { throw .system(error) }
        }
        do throws(SystemError) {
            try FileSystem.makeDirectories(privateDirectory, permissions: 0o700)
            let path = "\(privateDirectory)/\(name)-\(getpid())"
            _ = unlink(path)
            if mknod(path, S_IFCHR | 0o600, deviceNumber) != 0 { throw SystemError.current("mknod", path) }
            defer { _ = unlink(path) }
            return try FileDescriptor.open(path, .readWrite, options: options)
        } catch {
            throw .system(error)
        }
    }

    private func isThisDevice(_ path: String) -> Bool {
        var info = stat()
        guard stat(path, &info) == 0 else { return false }
        return info.st_mode & S_IFMT == S_IFCHR && info.st_rdev == deviceNumber
    }
}
