import Foundation

/// A virtio-net driver played over qtest, as QEMU's tests/qtest/virtio-net-test.c and
/// libqos do: PCI config cycles through CF8/CFC, the modern capabilities found by walking the
/// capability list (virtio 1.x, 4.1.4), queues in guest RAM, kicks written to the notify area.
/// Every layout here is the spec's, written out, not taken from Switchyard's code.
final class VirtioNetDriver {
    let qtest: QTestClient
    let device: Int
    /// BAR addresses the driver assigns (no firmware runs under qtest).
    static let regionsBAR: UInt64 = 0xE000_0000
    static let msixBAR: UInt64 = 0xE100_0000

    /// Where each modern capability's structure lies: BAR 4 + offset.
    private(set) var common: UInt64 = 0, notify: UInt64 = 0, isr: UInt64 = 0, deviceConfig: UInt64 = 0
    private(set) var notifyMultiplier: UInt64 = 0
    private var notifyOffsets: [Int: UInt64] = [:]

    /// Queue i's rings: descriptor table, available ring, used ring (16-entry queues).
    static let queueSize = 16
    static func ringBase(_ queue: Int) -> UInt64 { 0x10_0000 + UInt64(queue) * 0x1_0000 }
    static func descriptors(_ queue: Int) -> UInt64 { ringBase(queue) }
    static func available(_ queue: Int) -> UInt64 { ringBase(queue) + 0x1000 }
    static func used(_ queue: Int) -> UInt64 { ringBase(queue) + 0x2000 }
    /// Buffer memory for queue i, 64 KiB per descriptor slot.
    static func buffer(_ queue: Int, _ slot: Int) -> UInt64 { 0x100_0000 + UInt64(queue) * 0x10_0000 + UInt64(slot) * 0x1_0000 }
    private var availableIndex: [Int: UInt16] = [:]

    // virtio 1.x feature bits used here.
    static let mac: UInt64 = 1 << 5, status: UInt64 = 1 << 16, mergeable: UInt64 = 1 << 15
    static let controlQueue: UInt64 = 1 << 17, controlRX: UInt64 = 1 << 18, multiQueue: UInt64 = 1 << 22, version1: UInt64 = 1 << 32

    init(_ qtest: QTestClient, device: Int) throws {
        self.qtest = qtest
        self.device = device
        // BAR 1 (32-bit, MSI-X) and BAR 4 (64-bit), then memory decoding and bus mastering.
        try qtest.configWrite(device: device, offset: 0x14, width: "l", value: UInt32(Self.msixBAR))
        try qtest.configWrite(device: device, offset: 0x20, width: "l", value: UInt32(Self.regionsBAR))
        try qtest.configWrite(device: device, offset: 0x24, width: "l", value: 0)
        try qtest.configWrite(device: device, offset: 0x04, width: "w", value: 0x6)
        try findCapabilities()
    }

    func config8(_ offset: Int) throws -> UInt8 {
        let dword = try Self.value(try qtest.configRead(device: device, offset: offset & ~3))
        return UInt8(truncatingIfNeeded: dword >> (8 * UInt64(offset & 3)))
    }

    func config32(_ offset: Int) throws -> UInt32 { UInt32(try Self.value(try qtest.configRead(device: device, offset: offset))) }

    /// Vendor-specific capabilities (ID 9): cfg_type at +3, bar at +4, offset at +8,
    /// notify_off_multiplier at +16 for the notification structure (4.1.4).
    private func findCapabilities() throws {
        var pointer = Int(try config8(0x34))
        var seen = 0
        while pointer != 0 && seen < 48 {
            seen += 1
            if try config8(pointer) == 0x09, try config8(pointer + 4) == 4 {
                let offset = UInt64(try config32(pointer + 8))
                switch try config8(pointer + 3) {
                case 1: common = Self.regionsBAR + offset
                case 2:
                    notify = Self.regionsBAR + offset
                    notifyMultiplier = UInt64(try config32(pointer + 16))
                case 3: isr = Self.regionsBAR + offset
                case 4: deviceConfig = Self.regionsBAR + offset
                default: break
                }
            }
            pointer = Int(try config8(pointer + 1))
        }
        guard common != 0, notify != 0, isr != 0, deviceConfig != 0 else { throw TestFailure("virtio capabilities missing") }
    }

    // MARK: qtest memory access

    static func value(_ reply: String) throws -> UInt64 {
        guard reply.hasPrefix("OK 0x"), let v = UInt64(reply.dropFirst(5), radix: 16) else { throw TestFailure("bad qtest reply '\(reply)'") }
        return v
    }

    func read(_ width: String, _ address: UInt64) throws -> UInt64 { try Self.value(try qtest.command("read\(width) 0x\(String(address, radix: 16))")) }
    func write(_ width: String, _ address: UInt64, _ value: UInt64) throws {
        let reply = try qtest.command("write\(width) 0x\(String(address, radix: 16)) 0x\(String(value, radix: 16))")
        guard reply == "OK" else { throw TestFailure("write\(width): \(reply)") }
    }

    func writeBytes(_ address: UInt64, _ bytes: [UInt8]) throws {
        let hex = bytes.map { String(format: "%02x", $0) }.joined()
        let reply = try qtest.command("write 0x\(String(address, radix: 16)) \(bytes.count) 0x\(hex)")
        guard reply == "OK" else { throw TestFailure("write: \(reply)") }
    }

    func readBytes(_ address: UInt64, _ count: Int) throws -> [UInt8] {
        let reply = try qtest.command("read 0x\(String(address, radix: 16)) \(count)")
        guard reply.hasPrefix("OK 0x") else { throw TestFailure("read: \(reply)") }
        let hex = Array(reply.dropFirst(5).utf8)
        return stride(from: 0, to: hex.count - 1, by: 2).map { UInt8(String(decoding: hex[$0...$0 + 1], as: UTF8.self), radix: 16)! }
    }

    // MARK: Common configuration (4.1.4.3)

    var status: UInt8 { get throws { UInt8(try read("b", common + 0x14)) } }
    func setStatus(_ value: UInt8) throws { try write("b", common + 0x14, UInt64(value)) }

    func deviceFeatures() throws -> UInt64 {
        try write("l", common + 0x00, 0)
        let low = try read("l", common + 0x04)
        try write("l", common + 0x00, 1)
        let high = try read("l", common + 0x04)
        return low | high << 32
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK; the device's status afterwards.
    @discardableResult
    func negotiate(_ features: UInt64) throws -> UInt8 {
        try setStatus(0)
        try setStatus(1)
        try setStatus(3)
        try write("l", common + 0x08, 0)
        try write("l", common + 0x0C, features & 0xFFFF_FFFF)
        try write("l", common + 0x08, 1)
        try write("l", common + 0x0C, features >> 32)
        try setStatus(0xB)
        return try status
    }

    /// Sets queue `index` up at its ring addresses (16 entries) and enables it.
    func setUpQueue(_ index: Int) throws {
        try write("w", common + 0x16, UInt64(index))
        guard try read("w", common + 0x18) >= UInt64(Self.queueSize) else { throw TestFailure("queue \(index) too small") }
        try write("w", common + 0x18, UInt64(Self.queueSize))
        try write("w", common + 0x1A, 0xFFFF)  // no MSI-X vector
        try write("q", common + 0x20, Self.descriptors(index))
        try write("q", common + 0x28, Self.available(index))
        try write("q", common + 0x30, Self.used(index))
        notifyOffsets[index] = try read("w", common + 0x1E)
        try write("w", common + 0x1C, 1)
        try writeBytes(Self.ringBase(index), [UInt8](repeating: 0, count: 0x3000))
        availableIndex[index] = 0
    }

    /// struct virtq_desc: le64 addr, le32 len, le16 flags (NEXT 1, WRITE 2), le16 next.
    func setDescriptor(_ queue: Int, _ slot: Int, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0) throws {
        let base = Self.descriptors(queue) + UInt64(slot) * 16
        try write("q", base, address)
        try write("l", base + 8, UInt64(length))
        try write("w", base + 12, UInt64(flags))
        try write("w", base + 14, UInt64(next))
    }

    /// Puts head `slot` in the available ring (flags 0, idx, ring[]) and publishes it.
    func makeAvailable(_ queue: Int, _ slot: Int) throws {
        let index = availableIndex[queue, default: 0]
        try write("w", Self.available(queue) + 4 + 2 * UInt64(Int(index) % Self.queueSize), UInt64(slot))
        availableIndex[queue] = index &+ 1
        try write("w", Self.available(queue) + 2, UInt64(index &+ 1))
    }

    func kick(_ queue: Int) throws {
        try write("w", notify + notifyOffsets[queue, default: 0] * notifyMultiplier, UInt64(queue))
    }

    /// used->idx of `queue`.
    func usedIndex(_ queue: Int) throws -> UInt16 { UInt16(try read("w", Self.used(queue) + 2)) }

    /// struct virtq_used_elem `n`: le32 id, le32 len.
    func usedElement(_ queue: Int, _ n: Int) throws -> (id: UInt32, length: UInt32) {
        let base = Self.used(queue) + 4 + 8 * UInt64(n % Self.queueSize)
        return (UInt32(try read("l", base)), UInt32(try read("l", base + 4)))
    }

    /// Waits until used->idx reaches `target` (the device works on its own thread).
    func waitForUsed(_ queue: Int, _ target: UInt16, seconds: Double = 5) throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try usedIndex(queue) == target { return true }
            usleep(5_000)
        }
        return false
    }
}
