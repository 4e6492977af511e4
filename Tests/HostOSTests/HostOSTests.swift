import Foundation
import CLinux
import Glibc
import HostOS
import TestRequirements
import Testing

private func temporaryPath(_ name: String) -> String {
    "/tmp/switchyard-hostos-\(getpid())-\(name)"
}

@Suite struct FileDescriptorTests {
    @Test func openWriteReadPreadPwriteOnATempFile() throws {
        let path = temporaryPath("file")
        defer { unlink(path) }
        let fd = try FileDescriptor.open(path, .readWrite, options: [.create, .exclusive, .closeOnExec])
        try fd.writeAll(Array("hello, world".utf8))
        #expect(try fd.size() == 12)

        var buffer = [UInt8](repeating: 0, count: 5)
        let n = try buffer.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 7, into: $0) }
        #expect(n == 5)
        #expect(String(decoding: buffer, as: UTF8.self) == "world")

        let w = try Array("HELLO".utf8).withUnsafeBytes { try fd.write(toAbsoluteOffset: 0, $0) }
        #expect(w == 5)
        #expect(try FileSystem.readFile(path) == Array("HELLO, world".utf8))

        // Reading at the end returns 0.
        let atEnd = try buffer.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 12, into: $0) }
        #expect(atEnd == 0)
        try fd.close()
    }

    @Test func failingOpenKeepsErrnoOperationAndPath() {
        let path = "/nonexistent-switchyard/none"
        do {
            _ = try FileDescriptor.open(path, .readOnly)
            Issue.record("open of a missing file succeeded")
        } catch {
            // `error` is statically a SystemError (typed throws).
            #expect(error.errno == .noSuchFileOrDirectory)
            #expect(error.errno.rawValue == ENOENT)
            #expect(error.operation == "open")
            #expect(error.context == path)
            #expect(error.description == "open(\(path)): No such file or directory (errno 2)")
        }
    }

    @Test func exclusiveCreateReportsEEXIST() throws {
        let path = temporaryPath("excl")
        defer { unlink(path) }
        try FileSystem.writeFile(path, [1, 2, 3])
        #expect(throws: SystemError(.fileExists, operation: "open", context: path)) {
            _ = try FileDescriptor.open(path, .readWrite, options: [.create, .exclusive])
        }
    }

    @Test func pipeCarriesBytesAndEOFAfterWriterCloses() throws {
        let pipe = try FileDescriptor.pipe()
        let reader = pipe.readEnd
        let writer = pipe.writeEnd
        try writer.writeAll([9, 8, 7])
        try writer.close()
        #expect(try reader.readToEnd() == [9, 8, 7])
    }

    @Test func nonBlockingPipeReadIsEAGAIN() throws {
        let pipe = try FileDescriptor.pipe(nonBlocking: true)
        var byte: UInt8 = 0
        do {
            _ = try withUnsafeMutableBytes(of: &byte) { raw in
                Result { () throws(SystemError) in try pipe.readEnd.read(into: raw) }
            }.get()
            Issue.record("read of an empty non-blocking pipe succeeded")
        } catch {
            #expect(error.errno == .wouldBlock)
            #expect(error.operation == "read")
        }
    }

    @Test func takeReleasesOwnershipAndDeinitCloses() throws {
        // Checked through the pipe, not by probing fd numbers (tests run in parallel and reuse them).
        let pipe = try FileDescriptor.pipe(nonBlocking: true)
        let reader = pipe.readEnd
        let raw = pipe.writeEnd.take()
        var byte: UInt8 = 5
        #expect(Glibc.write(raw, &byte, 1) == 1)   // still open: take() did not close it
        do {
            let adopted = FileDescriptor(adopting: raw)
            #expect(adopted.rawValue == raw)
        }                                           // dropped: deinit closes the write end
        #expect(try reader.readToEnd() == [5])      // EOF, not EAGAIN: no writer is left
    }

    @Test func duplicateSharesTheFile() throws {
        let pipe = try FileDescriptor.pipe()
        let copy = try pipe.writeEnd.duplicate()
        #expect(copy.rawValue != pipe.writeEnd.rawValue)
        try copy.writeAll([42])
        var b: UInt8 = 0
        _ = try withUnsafeMutableBytes(of: &b) { try pipe.readEnd.read(into: $0) }
        #expect(b == 42)
    }
}

@Suite struct EventFDTests {
    @Test func signalThenConsumeReturnsTheSumAndResets() throws {
        let e = try EventFD()
        #expect(try e.consume() == nil)            // non-blocking, zero: nothing to read
        try e.signal()
        try e.signal(41)
        #expect(try e.consume() == 42)
        #expect(try e.consume() == nil)
    }

    @Test func semaphoreModeTakesOneAtATime() throws {
        let e = try EventFD(initialValue: 2, options: [.closeOnExec, .nonBlocking, .semaphore])
        #expect(try e.consume() == 1)
        #expect(try e.consume() == 1)
        #expect(try e.consume() == nil)
    }

    @Test func counterOverflowIsAnError() throws {
        let e = try EventFD()
        try e.signal(UInt64.max - 1)               // the largest value the counter holds
        #expect(throws: SystemError.self) { try e.signal(1) }
    }
}

private let transparentHugePagesOffered: Bool = {
    let setting = (try? String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8)) ?? ""
    return setting.contains("[always]") || setting.contains("[madvise]")
}()

/// The area of /proc/self/smaps that contains `address`: its bounds and its AnonHugePages.
private func smapsArea(containing address: UInt) throws -> (start: UInt, end: UInt, anonHugePagesKiB: Int)? {
    // Read to the end: a proc file reports size 0, which Foundation's readers trust.
    let text = String(decoding: try FileSystem.readFile("/proc/self/smaps", limit: 64 << 20), as: UTF8.self)
    var current: (start: UInt, end: UInt)?
    for line in text.split(separator: "\n") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        if let first = fields.first, first.contains("-"), !first.hasSuffix(":") {
            let bounds = first.split(separator: "-")
            if bounds.count == 2, let start = UInt(bounds[0], radix: 16), let end = UInt(bounds[1], radix: 16) {
                current = (start, end)
                continue
            }
        }
        if let area = current, area.start <= address, address < area.end,
           fields.first == "AnonHugePages:", fields.count >= 2, let kib = Int(fields[1]) {
            return (area.start, area.end, kib)
        }
    }
    return nil
}

@Suite struct MemoryMappingTests {
    @Test func anonymousMappingIsZeroedAndWritable() throws {
        let m = try MemoryMapping.anonymous(count: 2 * 4096)
        #expect(m.count == 8192)
        m.withUnsafeMutableBytes { bytes in
            #expect(bytes.allSatisfy { $0 == 0 })
            bytes.storeBytes(of: 0xDEAD_BEEF, toByteOffset: 4094, as: UInt32.self)
        }
        let v = m.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4094, as: UInt32.self) }
        #expect(v == 0xDEAD_BEEF)
        try m.advise(.dontFork)
        try m.unmap()
    }

    @Test func fileBackedSharedMappingWritesReachTheFile() throws {
        let path = temporaryPath("mmap")
        defer { unlink(path) }
        let fd = try FileDescriptor.open(path, .readWrite, options: [.create, .truncate, .closeOnExec])
        try fd.truncate(to: 4096)
        do {
            let m = try MemoryMapping(mapping: fd, count: 4096)
            m.withUnsafeMutableBytes { $0.copyBytes(from: Array("guest".utf8)) }
        }                                           // unmapped here
        var buffer = [UInt8](repeating: 0, count: 5)
        _ = try buffer.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 0, into: $0) }
        #expect(buffer == Array("guest".utf8))
    }

    @Test func zeroLengthAndUnmappableFdFail() throws {
        #expect(throws: SystemError(.invalidArgument, operation: "mmap", context: "zero length")) {
            _ = try MemoryMapping.anonymous(count: 0)
        }
        let pipe = try FileDescriptor.pipe()
        do {
            _ = try MemoryMapping(mapping: pipe.readEnd, count: 4096, protection: .read)
            Issue.record("mmap of a pipe succeeded")
        } catch {
            #expect(error.operation == "mmap")
            #expect(error.errno == .noDevice)       // pipes cannot be mapped
        }
    }

    /// The kernel's own account of the mapping (/proc/self/smaps): one area exactly the
    /// requested bytes (both ends of the padding given back), backed by huge pages once advised.
    @Test(.requires(transparentHugePagesOffered,
                    "transparent huge pages are off on this host (/sys/kernel/mm/transparent_hugepage/enabled is [never])"))
    func alignedMappingIsExactlyItsBytesAndTakesHugePagesWhenAdvised() throws {
        let alignment = 2 << 20, count = 8 << 20
        let m = try MemoryMapping.anonymous(count: count, alignedTo: alignment)
        #expect(m.hostAddress % UInt(alignment) == 0)
        try m.advise(.hugePage)
        m.withUnsafeMutableBytes { bytes in
            for i in stride(from: 0, to: bytes.count, by: 4096) { bytes[i] = 1 }
        }
        let area = try #require(try smapsArea(containing: m.hostAddress))
        #expect(area.start == m.hostAddress)
        #expect(area.end == m.hostAddress + UInt(count))
        #expect(area.anonHugePagesKiB >= 2048, "no huge page behind an advised, touched, aligned 8 MiB: \(area)")
    }

    @Test func alignmentMustBeAPowerOfTwoOfAtLeastAPage() throws {
        for alignment in [0, 3 << 12, 512] {
            #expect(throws: SystemError.self) { _ = try MemoryMapping.anonymous(count: 4096, alignedTo: alignment) }
        }
        let odd = try MemoryMapping.anonymous(count: 5000, alignedTo: 1 << 16)
        #expect(odd.hostAddress % (1 << 16) == 0)
        #expect(odd.count == 5000)
        odd.withUnsafeMutableBytes { $0[4999] = 7 }  // the last byte is mapped
    }

    @Test func sharedMappingKeepsBytesValid() throws {
        let shared = SharedMapping(try MemoryMapping.anonymous(count: 4096))
        shared.bytes[100] = 7
        #expect(shared.mapping.withUnsafeBytes { $0[100] } == 7)
        #expect(shared.hostAddress == UInt(bitPattern: shared.bytes.baseAddress))
    }
}

@Suite struct EpollTests {
    @Test func eventFDWakesEpoll() throws {
        let epoll = try Epoll()
        let a = try EventFD()
        let b = try EventFD()
        try epoll.add(a.rawValue, events: .readable, data: 0xA)
        try epoll.add(b.rawValue, events: .readable, data: 0xB)

        #expect(try epoll.wait(timeoutMilliseconds: 0).isEmpty)
        try b.signal()
        let events = try epoll.wait(timeoutMilliseconds: 1000)
        #expect(events == [Epoll.Event(events: .readable, data: 0xB)])

        // Level-triggered: still ready until consumed.
        #expect(try epoll.wait(timeoutMilliseconds: 0).count == 1)
        _ = try b.consume()
        #expect(try epoll.wait(timeoutMilliseconds: 0).isEmpty)

        try epoll.modify(a.rawValue, events: [.readable, .edgeTriggered], data: 0xAA)
        try a.signal()
        #expect(try epoll.wait(timeoutMilliseconds: 1000).map(\.data) == [0xAA])
        #expect(try epoll.wait(timeoutMilliseconds: 0).isEmpty)   // edge already reported

        try epoll.remove(a.rawValue)
        try a.signal()
        #expect(try epoll.wait(timeoutMilliseconds: 0).isEmpty)
    }

    @Test func wakeFromAnotherThread() throws {
        let epoll = try Epoll()
        let e = try EventFD()
        try epoll.add(e.rawValue, events: .readable, data: 1)
        let raw = e.rawValue
        // A real thread, not a task: the test itself blocks in epoll_wait, and a task could
        // wait behind it for a cooperative-pool thread that never comes free.
        let waker = Thread {
            usleep(20_000)
            var one: UInt64 = 1
            _ = Glibc.write(raw, &one, 8)
        }
        waker.start()
        let events = try epoll.wait(timeoutMilliseconds: 5000)
        #expect(events.map(\.data) == [1])
    }

    @Test func removingAnUnregisteredFdIsENOENT() throws {
        let epoll = try Epoll()
        let e = try EventFD()
        #expect(throws: SystemError(.noSuchFileOrDirectory, operation: "epoll_ctl(remove)",
                                    context: "fd \(e.rawValue)")) {
            try epoll.remove(e.rawValue)
        }
    }

    @Test func epollEventLayoutMatchesTheKernel() {
        // x86-64 packs struct epoll_event to 12 bytes; Swift must import it that way.
        #expect(MemoryLayout<epoll_event>.size == 12)
        #expect(MemoryLayout<epoll_event>.stride == 12)
    }
}

@Suite struct IOControlTests {
    @Test(.requires(FileSystem.exists("/dev/kvm"), "/dev/kvm does not exist on this host"))
    func kvmAPIVersionIs12() throws {
        let kvm = try FileDescriptor.open("/dev/kvm", .readWrite)
        #expect(try ioctl(kvm, sy_kvm_get_api_version()) == 12)
    }

    @Test func ioctlOnAPipeReportsENOTTYWithTheRequest() throws {
        let pipe = try FileDescriptor.pipe()
        let request = sy_kvm_get_api_version()
        do {
            try ioctl(pipe.readEnd, request)
            Issue.record("KVM ioctl on a pipe succeeded")
        } catch {
            #expect(error.errno == .inappropriateIOControl)
            #expect(error.operation == "ioctl")
            #expect(error.context?.contains(String(request, radix: 16)) == true)
        }
    }

    @Test func ioctlInoutReadsBack() throws {
        // FIONREAD on a pipe: the kernel writes the number of bytes waiting.
        let pipe = try FileDescriptor.pipe()
        try pipe.writeEnd.writeAll([1, 2, 3])
        var waiting: Int32 = 0
        try ioctl(pipe.readEnd, UInt(FIONREAD), &waiting)
        #expect(waiting == 3)
    }
}

@Suite struct FileSystemTests {
    @Test func treeHelpers() throws {
        let root = try FileSystem.makeTemporaryDirectory(prefix: "hostos-test")
        defer { try? FileSystem.removeTree(root) }
        try FileSystem.makeDirectories(root + "/a/b/c")
        try FileSystem.writeFile(root + "/a/b/c/file", Array("x\n".utf8))
        try FileSystem.createSymbolicLink(at: root + "/a/link", to: "b/c")
        #expect(try FileSystem.listDirectory(root + "/a") == ["b", "link"])
        #expect(try FileSystem.readLink(root + "/a/link") == "b/c")
        #expect(try FileSystem.readFile(root + "/a/link/file") == Array("x\n".utf8))
        #expect(FileSystem.isDirectory(root + "/a/link"))
        #expect(throws: SystemError.self) { try FileSystem.readLink(root + "/a/b") }
        try FileSystem.removeTree(root)
        #expect(!FileSystem.exists(root))
    }
}
