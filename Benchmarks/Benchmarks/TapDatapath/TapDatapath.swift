// virtio-net's userspace transmit datapath over a tap against the physical limit of that path:
// raw writev(2) of the same frames (12-byte vnet header + frame) to a tap from this process.
// Both taps live in a network namespace the benchmark creates (iproute2, root) and removes.
//
// Datapath, one measured iteration: the "driver" makes 256 transmit buffers available in
// guest RAM (queue 1, 256 entries, VIRTQ_AVAIL_F_NO_INTERRUPT as a NAPI driver sets it) and
// writes the queue's notify address; the device's I/O thread takes every chain and writevs it
// to its tap; the iteration ends when used.idx has caught up. Raw, one iteration: 256 writevs
// of the same bytes to a second tap. `report.sh` turns both into packets/s and their ratio.
//
// Receive, one measured iteration: 256 frames already wait in the NIC's tap (written untimed,
// before the measurement, into a producer tap bridged to it); the driver makes 256 receive
// buffers available and kicks; the device's I/O thread readvs every frame into a buffer and
// the iteration ends when used.idx has caught up. Raw: 256 frames wait the same way in a second
// tap, and this thread readvs them, one call each. The producer's work is outside both.
//
// "Raw ... other thread": the same raw loop on a thread of its own, started the way the device's
// I/O thread is (an eventfd it sleeps on, written by the benchmark thread, which then spins until
// the loop reports it is done), reading into 256 distinct 2 KiB buffers as the device does. It
// pays what any I/O thread pays and a loop on the producer's own thread does not: the wake-up,
// and frames (receive) or sends (transmit) whose socket buffers another CPU touched last. So
// datapath/raw-other-thread is what our own code costs; datapath/raw is the whole gap.

import Benchmark
import Foundation
import Glibc
import HostNetwork
import HostOS
import Machine
import Synchronization
import VMMBase

/// SWITCHYARD_BENCH_SMOKE=1: a couple of iterations each (`make test` keeps the workload running).
let smoke = ProcessInfo.processInfo.environment["SWITCHYARD_BENCH_SMOKE"] == "1"

/// Frames per measured iteration: one full transmit ring.
let batch = 256

/// Runs a program; a non-zero exit stops the benchmark with its standard error.
@discardableResult
func run(_ arguments: [String]) -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: arguments[0])
    process.arguments = Array(arguments.dropFirst())
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    do { try process.run() } catch { fatalError("\(arguments.joined(separator: " ")): \(error)") }
    let output = out.fileHandleForReading.readDataToEndOfFile()
    let error = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        fatalError("\(arguments.joined(separator: " ")): exit \(process.terminationStatus): \(String(decoding: error, as: UTF8.self)) (the tap benchmarks need root, iproute2 and /dev/net/tun)")
    }
    return String(decoding: output, as: UTF8.self)
}

/// Writes `packet` to `queue` `batch` times, one writev each, from this thread.
func writeRing(_ packet: [UInt8], to queue: TapQueue) {
    packet.withUnsafeBytes { bytes in
        var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        withUnsafePointer(to: &vector) { v in
            for _ in 0..<batch {
                guard (try? queue.writev(UnsafeBufferPointer(start: v, count: 1))) != nil else { fatalError("tap writev failed") }
            }
        }
    }
}

/// A thread that runs one job per wake-up, as the device's I/O thread does: it sleeps in
/// read(2) on an eventfd; `run` writes the eventfd and spins (sched_yield) until the job ran.
final class RawIOThread: @unchecked Sendable {
    private let wake: SharedEventFD
    private let job = Mutex<(@Sendable () -> Void)?>(nil)
    private let finished = Atomic<Int>(0)

    init(name: String) {
        wake = try! SharedEventFD(options: [.closeOnExec])  // blocking: the thread sleeps in read(2)
        let thread = Foundation.Thread { [self] in
            var count: UInt64 = 0
            while read(wake.rawValue, &count, 8) == 8 {
                job.withLock { $0 }?()
                finished.add(1, ordering: .releasing)
            }
        }
        thread.name = name
        thread.start()
    }

    /// Runs `work` on the thread and returns when it has.
    func run(_ work: @escaping @Sendable () -> Void) {
        job.withLock { $0 = work }
        let target = finished.load(ordering: .acquiring) + 1
        try! wake.eventFD.signal()
        while finished.load(ordering: .acquiring) < target { sched_yield() }
    }
}

/// A statistics counter of `interface` in `namespace` ("rx_packets", "tx_packets").
func counter(_ name: String, of interface: String, in namespace: String) -> Int {
    Int(run([TapFixture.ip, "netns", "exec", namespace, "cat", "/sys/class/net/\(interface)/statistics/\(name)"])
        .trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
}

/// The driver side of one queue of the NIC at `TapFixture.devfn`, set up over MMIO (virtio 1.2,
/// 4.1.4.3): BAR 4 at `TapFixture.bar`, VERSION_1 only (no offloads), queue `queue` with `batch`
/// entries, descriptor i one buffer of `length` bytes with `flags` at `buffers + i * 0x800`, the
/// available ring's entries fixed (slot i holds descriptor i) and none offered yet,
/// VIRTQ_AVAIL_F_NO_INTERRUPT (as a NAPI driver sets it), DRIVER_OK.
func setUpDriverQueue(_ machine: Machine, queue: UInt64, length: UInt32, flags: UInt16) {
    let bar = TapFixture.bar
    func setCommon(_ offset: UInt64, _ width: AccessWidth, _ value: UInt64) { machine.mmioWrite(bar + offset, width: width, value: value) }
    let cycles = PortConfigCycles(machine)
    cycles.write(bus: 0, devfn: TapFixture.devfn, offset: 0x20, width: .dword, value: UInt32(truncatingIfNeeded: bar))
    cycles.write(bus: 0, devfn: TapFixture.devfn, offset: 0x24, width: .dword, value: UInt32(bar >> 32))
    cycles.write(bus: 0, devfn: TapFixture.devfn, offset: 0x04, width: .word, value: 0x0006)
    let ram = machine.guestMemory
    for slot in 0..<batch {
        let descriptor = TapFixture.descriptors + UInt64(slot) * 16
        try! ram.store(TapFixture.buffers + UInt64(slot) * 0x800, at: GuestAddress(descriptor))
        try! ram.store(length, at: GuestAddress(descriptor + 8))
        try! ram.store(flags, at: GuestAddress(descriptor + 12))
        try! ram.store(UInt16(slot), at: GuestAddress(TapFixture.available + 4 + UInt64(slot) * 2))
    }
    try! ram.store(UInt16(1), at: GuestAddress(TapFixture.available))
    setCommon(0x14, .byte, 0)
    setCommon(0x14, .byte, 3)
    setCommon(0x08, .dword, 1)
    setCommon(0x0C, .dword, 1)  // VIRTIO_F_VERSION_1
    setCommon(0x14, .byte, 0xB)
    setCommon(0x16, .word, queue)
    setCommon(0x18, .word, UInt64(batch))
    setCommon(0x20, .dword, TapFixture.descriptors); setCommon(0x24, .dword, 0)
    setCommon(0x28, .dword, TapFixture.available); setCommon(0x2C, .dword, 0)
    setCommon(0x30, .dword, TapFixture.used); setCommon(0x34, .dword, 0)
    setCommon(0x1C, .word, 1)
    setCommon(0x14, .byte, 0xF)
    precondition(machine.mmioRead(bar + 0x14, width: .byte) == 0xF, "virtio-net refused DRIVER_OK")
}

/// A NIC on tap `sytx0` and a raw tap queue on `syraw0`, both up in a namespace of their own;
/// the driver side of the NIC's transmit queue set up over MMIO (virtio 1.2, 4.1.4.3).
final class TapFixture: Sendable {
    static let ip = "/usr/sbin/ip"
    static let bar: UInt64 = 0xC000_0000
    static let devfn: UInt8 = 5 << 3
    static let descriptors: UInt64 = 0x1_0000, available: UInt64 = 0x1_1000, used: UInt64 = 0x1_2000
    static let buffers: UInt64 = 0x10_0000
    /// Queue 1's notify address: BAR 4 + 0x3000 + queue_notify_off (1) * 4.
    static let notify = bar + 0x3000 + 4

    let namespace: String
    let machine: Machine
    let raw: TapQueue
    /// Header + frame, as each transmit buffer holds it.
    let packet: [UInt8]
    private let availableIndex = Mutex<UInt16>(0)

    init(frameLength: Int) {
        namespace = "sybench\(getpid())f\(frameLength)"
        run([Self.ip, "netns", "add", namespace])
        run([Self.ip, "netns", "exec", namespace, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
             "net.ipv6.conf.default.disable_ipv6=1"])
        let opened = try! NetworkNamespace.run(in: namespace) {
            Result { () throws -> (Machine, TapQueue) in
                var configuration = MachineConfiguration(memorySize: 16 << 20,
                                                         devices: [try DeviceSpec(parsing: "virtio-net-pci,netdev=n0,id=nic0,addr=5")])
                configuration.netdevs = [try NetdevSpec(parsing: "tap,id=n0,ifname=sytx0,script=no,downscript=no")]
                let raw = try TapQueue.open(interfaceName: "syraw0", multiQueue: false)
                try raw.configure(headerSize: 12, offloads: [])
                return (try Machine(configuration), raw)
            }
        }
        (machine, raw) = try! opened.get()
        run([Self.ip, "-n", namespace, "link", "set", "sytx0", "up"])
        run([Self.ip, "-n", namespace, "link", "set", "syraw0", "up"])
        // A broadcast frame with the local experimental EtherType 0x88B5: the host stack
        // takes it in and drops it, the same work for both taps.
        let frame = [UInt8](repeating: 0xFF, count: 6) + [0x02, 0, 0, 0, 0, 1, 0x88, 0xB5]
            + (0..<(frameLength - 14)).map { UInt8(truncatingIfNeeded: $0) }
        packet = [UInt8](repeating: 0, count: 12) + frame
        setUpDriver()
    }

    private func setCommon(_ offset: UInt64, _ width: AccessWidth, _ value: UInt64) {
        machine.mmioWrite(Self.bar + offset, width: width, value: value)
    }

    /// Queue 1 (transmit): each descriptor one readable buffer holding the packet.
    private func setUpDriver() {
        let ram = machine.guestMemory
        for slot in 0..<batch { try! ram.write(at: GuestAddress(Self.buffers + UInt64(slot) * 0x800), bytes: packet) }
        setUpDriverQueue(machine, queue: 1, length: UInt32(packet.count), flags: 0)
    }

    /// One ring of frames through the device: available, kicked, waited for.
    func transmitThroughDatapath() {
        let ram = machine.guestMemory
        let target = availableIndex.withLock { index in
            index &+= UInt16(batch)
            return index
        }
        try! ram.store(target, at: GuestAddress(Self.available + 2))
        machine.mmioWrite(Self.notify, width: .word, value: 1)
        while try! ram.load(UInt16.self, at: GuestAddress(Self.used + 2)) != target { sched_yield() }
    }

    /// The same frames by writev from this thread, one call each.
    func transmitRaw() { writeRing(packet, to: raw) }

    private let rawThread = RawIOThread(name: "raw-tx")
    /// The same frames by writev from a thread of its own, woken for each ring.
    func transmitRawOnOtherThread() {
        let (packet, raw) = (packet, raw)
        rawThread.run { writeRing(packet, to: raw) }
    }

    /// Frames the host stack took in on `interface` (its receive counter).
    func received(on interface: String) -> Int { counter("rx_packets", of: interface, in: namespace) }

    /// Resets the NIC (its I/O thread ends) and removes the namespace with both taps.
    func remove() {
        setCommon(0x14, .byte, 0)
        run([Self.ip, "netns", "del", namespace])
    }
}

/// Waits until `condition` holds, at most `seconds`; a benchmark whose frames went missing
/// stops with `what` instead of hanging.
func waitFor(_ what: String, seconds: Double = 5, _ condition: () -> Bool) {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        guard Date() < deadline else { fatalError("\(what) did not happen within \(seconds) s") }
        sched_yield()
    }
}

/// The receive side: a NIC on tap `syrx0` and a raw tap `syrr0`, each bridged (sybr0, sybr1) to a
/// producer tap (`syin0`, `syin1`) this process writes frames into; the driver side of the NIC's
/// receive queue (queue 0) set up over MMIO.
final class ReceiveFixture: Sendable {
    static let bar = TapFixture.bar, devfn = TapFixture.devfn
    static let descriptors = TapFixture.descriptors, available = TapFixture.available, used = TapFixture.used
    static let buffers = TapFixture.buffers
    static let bufferSize: UInt64 = 0x800
    /// Queue 0's notify address: BAR 4 + 0x3000 + queue_notify_off (0) * 4.
    static let notify = bar + 0x3000

    let namespace: String
    let machine: Machine
    let producer: TapQueue, rawProducer: TapQueue, raw: TapQueue
    let packet: [UInt8]
    private let availableIndex = Mutex<UInt16>(0)

    init(frameLength: Int) {
        namespace = "sybench\(getpid())r\(frameLength)"
        let ip = TapFixture.ip
        run([ip, "netns", "add", namespace])
        // No IPv6 (its router and neighbour messages would be frames of their own on the bridges).
        run([ip, "netns", "exec", namespace, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
             "net.ipv6.conf.default.disable_ipv6=1"])
        let opened = try! NetworkNamespace.run(in: namespace) {
            Result { () throws -> (Machine, TapQueue, TapQueue, TapQueue) in
                var configuration = MachineConfiguration(memorySize: 16 << 20,
                                                         devices: [try DeviceSpec(parsing: "virtio-net-pci,netdev=n0,id=nic0,addr=5")])
                configuration.netdevs = [try NetdevSpec(parsing: "tap,id=n0,ifname=syrx0,script=no,downscript=no")]
                let taps = try ["syin0", "syin1", "syrr0"].map { name in
                    let queue = try TapQueue.open(interfaceName: name, multiQueue: false)
                    try queue.configure(headerSize: 12, offloads: [])
                    return queue
                }
                return (try Machine(configuration), taps[0], taps[1], taps[2])
            }
        }
        (machine, producer, rawProducer, raw) = try! opened.get()
        for (bridge, ports) in [("sybr0", ["syin0", "syrx0"]), ("sybr1", ["syin1", "syrr0"])] {
            run([ip, "-n", namespace, "link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
            for port in ports {
                run([ip, "-n", namespace, "link", "set", port, "master", bridge])
                run([ip, "-n", namespace, "link", "set", port, "up"])
            }
            run([ip, "-n", namespace, "link", "set", bridge, "up"])
        }
        let frame = [UInt8](repeating: 0xFF, count: 6) + [0x02, 0, 0, 0, 0, 1, 0x88, 0xB5]
            + (0..<(frameLength - 14)).map { UInt8(truncatingIfNeeded: $0) }
        packet = [UInt8](repeating: 0, count: 12) + frame
        setUpDriver()
    }

    /// Queue 0 (receive): each descriptor one device-writable 2 KiB buffer.
    private func setUpDriver() {
        setUpDriverQueue(machine, queue: 0, length: UInt32(Self.bufferSize), flags: 2)  // VIRTQ_DESC_F_WRITE
    }

    /// Writes a ring's worth of frames into `queue` (the producer side of a bridge).
    func produce(into queue: TapQueue) { writeRing(packet, to: queue) }

    /// Frames `interface`'s reader took (a tap counts them as transmitted when they are read).
    func sent(on interface: String) -> Int { counter("tx_packets", of: interface, in: namespace) }

    /// One ring of frames through the device: the buffers offered, kicked, the frames' arrival waited for.
    func receiveThroughDatapath() {
        let ram = machine.guestMemory
        let target = availableIndex.withLock { index in
            index &+= UInt16(batch)
            return index
        }
        try! ram.store(target, at: GuestAddress(Self.available + 2))
        machine.mmioWrite(Self.notify, width: .word, value: 0)
        waitFor("256 frames into the receive ring") { (try? ram.load(UInt16.self, at: GuestAddress(Self.used + 2))) == target }
    }

    /// The same number of frames read by this thread from the raw tap, one readv each.
    func receiveRaw() {
        var buffer = [UInt8](repeating: 0, count: Int(Self.bufferSize))
        buffer.withUnsafeMutableBytes { bytes in
            var vector = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
            withUnsafePointer(to: &vector) { v in
                for _ in 0..<batch {
                    // nil: no frame waits (yet), or the read failed (then the wait times out).
                    waitFor("a frame on the raw tap") { (try? raw.readv(UnsafeBufferPointer(start: v, count: 1))) != nil }
                }
            }
        }
    }

    private let rawThread = RawIOThread(name: "raw-rx")
    /// 256 distinct 2 KiB buffers for the other thread's reads, as the device's ring has.
    private nonisolated(unsafe) let rawBuffers = UnsafeMutableRawBufferPointer.allocate(byteCount: batch * Int(bufferSize), alignment: 4096)

    /// The same number of frames read by a thread of its own, woken for each ring, one readv
    /// each into the next of 256 buffers.
    func receiveRawOnOtherThread() {
        struct Loan: @unchecked Sendable { let bytes: UnsafeMutableRawBufferPointer; let queue: TapQueue }
        let loan = Loan(bytes: rawBuffers, queue: raw)
        rawThread.run {
            for slot in 0..<batch {
                var vector = iovec(iov_base: loan.bytes.baseAddress! + slot * Int(Self.bufferSize), iov_len: Int(Self.bufferSize))
                withUnsafePointer(to: &vector) { v in
                    waitFor("a frame on the raw tap") { (try? loan.queue.readv(UnsafeBufferPointer(start: v, count: 1))) != nil }
                }
            }
        }
    }

    func remove() {
        machine.mmioWrite(Self.bar + 0x14, width: .byte, value: 0)
        run([TapFixture.ip, "netns", "del", namespace])
    }
}

let receiveFixtures = Mutex<[Int: ReceiveFixture]>([:])
func receiveFixture(_ length: Int) -> ReceiveFixture {
    receiveFixtures.withLock { table in
        if let f = table[length] { return f }
        let made = ReceiveFixture(frameLength: length)
        table[length] = made
        return made
    }
}
func removeReceiveFixture(_ length: Int) {
    receiveFixtures.withLock { $0.removeValue(forKey: length) }?.remove()
}

/// The fixture of each frame length, made in each benchmark's setup and removed in its teardown.
let fixtures = Mutex<[Int: TapFixture]>([:])
func fixture(_ length: Int) -> TapFixture {
    fixtures.withLock { table in
        if let f = table[length] { return f }
        let made = TapFixture(frameLength: length)
        table[length] = made
        return made
    }
}
func removeFixture(_ length: Int) {
    fixtures.withLock { $0.removeValue(forKey: length) }?.remove()
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .microseconds,
        warmupIterations: smoke ? 0 : 20,
        scalingFactor: .one,
        maxDuration: smoke ? .milliseconds(100) : .seconds(3),
        maxIterations: smoke ? 2 : 5000)

    for length in [64, 1500] {
        Benchmark("Tap TX \(length) B datapath", closure: { benchmark in
            let f = fixture(length)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { f.transmitThroughDatapath() }
            benchmark.stopMeasurement()
        }, setup: {
            // The frames reach the host: one untimed ring, counted by the kernel.
            let f = fixture(length)
            let before = f.received(on: "sytx0")
            f.transmitThroughDatapath()
            let after = f.received(on: "sytx0")
            precondition(after - before >= batch, "the tap took in \(after - before) of \(batch) frames")
        }, teardown: { removeFixture(length) })
        // The raw writes, from this thread and from one of their own.
        for (name, send) in [("raw writev", { (f: TapFixture) in f.transmitRaw() }),
                             ("raw other thread", { (f: TapFixture) in f.transmitRawOnOtherThread() })] {
            Benchmark("Tap TX \(length) B \(name)", closure: { benchmark in
                let f = fixture(length)
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations { send(f) }
                benchmark.stopMeasurement()
            }, setup: {
                let f = fixture(length)
                let before = f.received(on: "syraw0")
                send(f)
                precondition(f.received(on: "syraw0") - before >= batch, "the raw tap's frames did not arrive")
            }, teardown: { removeFixture(length) })
        }
        Benchmark("Tap RX \(length) B datapath", closure: { benchmark in
            let f = receiveFixture(length)
            for _ in benchmark.scaledIterations {
                f.produce(into: f.producer)
                benchmark.startMeasurement()
                f.receiveThroughDatapath()
                benchmark.stopMeasurement()
            }
        }, setup: {
            // The bridge takes the frames to the NIC's tap, and the device reads every one (it
            // stops with a message if not): one untimed ring; the tap counts what its reader took.
            let f = receiveFixture(length)
            let before = f.sent(on: "syrx0")
            f.produce(into: f.producer)
            f.receiveThroughDatapath()
            precondition(f.sent(on: "syrx0") - before >= batch, "the NIC's tap gave its reader \(f.sent(on: "syrx0") - before) of \(batch) frames")
        }, teardown: { removeReceiveFixture(length) })
        // The raw reads, from this thread and from one of their own: the same frames waiting.
        for (name, read) in [("raw readv", { (f: ReceiveFixture) in f.receiveRaw() }),
                             ("raw other thread", { (f: ReceiveFixture) in f.receiveRawOnOtherThread() })] {
            Benchmark("Tap RX \(length) B \(name)", closure: { benchmark in
                let f = receiveFixture(length)
                for _ in benchmark.scaledIterations {
                    f.produce(into: f.rawProducer)
                    benchmark.startMeasurement()
                    read(f)
                    benchmark.stopMeasurement()
                }
            }, setup: {
                let f = receiveFixture(length)
                f.produce(into: f.rawProducer)
                read(f)
            }, teardown: { removeReceiveFixture(length) })
        }
    }
}
