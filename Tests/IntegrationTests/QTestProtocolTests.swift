import Foundation
import Testing

/// The real `switchyard` binary driven over QEMU's qtest protocol, as libqtest drives QEMU:
/// the test listens, Switchyard connects with `-qtest unix:PATH`.
@Suite("qtest protocol against the switchyard binary", .serialized)
struct QTestProtocolTests {
    static let baseArguments = ["-machine", "q35", "-accel", "qtest", "-nodefaults", "-display", "none"]

    /// Starts switchyard with a qtest socket (logging to `log`).
    static func start(_ extra: [String] = [], log: String = "none") throws -> QTestSession {
        try QTestSession(switchyardBinary, baseArguments + extra, qtestLog: log)
    }

    @Test func chipsetIdentityThroughCF8() throws {
        let vm = try Self.start()
        let qt = vm.qtest
        defer { vm.stop() }
        #expect(try qt.configRead(device: 0, offset: 0) == "OK 0x29c08086")        // MCH
        #expect(try qt.configRead(device: 0, offset: 8) == "OK 0x6000000")         // class 06 00 00, rev 0
        #expect(try qt.configRead(device: 0x1F, offset: 0) == "OK 0x29188086")     // ICH9 LPC
        #expect(try qt.configRead(device: 0x1F, offset: 8) == "OK 0x6010002")      // ISA bridge, rev 2
        #expect(try qt.configRead(device: 0x1F, offset: 0xC) == "OK 0x800000")     // multi-function header
        #expect(try qt.configRead(device: 5, offset: 0) == "OK 0xffffffff")        // nothing there
        #expect(try qt.command("inl 0xcf8") == "OK 0x80002800")
        #expect(try qt.command("inw 0xcfc") == "OK 0xffff")
    }

    @Test func memoryAccessCommands() throws {
        let vm = try Self.start()
        let qt = vm.qtest
        defer { vm.stop() }
        #expect(try qt.command("writel 0x1000 0x12345678") == "OK")
        #expect(try qt.command("readl 0x1000") == "OK 0x0000000012345678")
        #expect(try qt.command("readb 0x1001") == "OK 0x0000000000000056")
        #expect(try qt.command("writeq 0x1008 0x1122334455667788") == "OK")
        #expect(try qt.command("readq 0x1008") == "OK 0x1122334455667788")
        #expect(try qt.command("readw 0x100e") == "OK 0x0000000000001122")
        #expect(try qt.command("read 0x1000 4") == "OK 0x78563412")
        #expect(try qt.command("write 0x2000 4 0xa1b2") == "OK")                   // short data: zero-filled
        #expect(try qt.command("read 0x2000 4") == "OK 0xa1b20000")
        #expect(try qt.command("b64write 0x3000 5 AQIDBAU=") == "OK")
        #expect(try qt.command("b64read 0x3000 5") == "OK AQIDBAU=")
        #expect(try qt.command("memset 0x4000 3 0x5a") == "OK")
        #expect(try qt.command("read 0x3fff 5") == "OK 0x005a5a5a00")
        #expect(try qt.command("memset 0x4000 0 0x11") == "OK")                    // zero size: nothing
        #expect(try qt.command("endianness") == "OK little")
        #expect(try qt.command("write 0x2000 4 0x") == "ERR invalid argument size")
    }

    @Test func virtualClock() throws {
        let vm = try Self.start()
        let qt = vm.qtest
        defer { vm.stop() }
        #expect(try qt.command("clock_step") ==
                "FAIL cannot advance clock to the next deadline because there is no pending deadline")
        #expect(try qt.command("clock_step 1000") == "OK 1000")
        #expect(try qt.command("clock_step 0x10") == "OK 1016")
        #expect(try qt.command("clock_set 5000") == "OK 5000")
        #expect(try qt.command("clock_set 10") == "FAIL 5000")                     // never backwards
        #expect(try qt.command("clock_step 0") == "FAIL could not advance time")
    }

    /// A pci-testdev's doorbell raises INTx; with the IOAPIC intercepted, qtest reports the
    /// IOAPIC input: slot 3, pin A swizzles to PIRQ (3+0)%4+4 = H, which is GSI 16+7 = 23.
    @Test func intxThroughTestDeviceDoorbell() throws {
        let vm = try Self.start(["-device", "pci-testdev,id=t0,addr=0x3"])
        let qt = vm.qtest
        defer { vm.stop() }
        #expect(try qt.configRead(device: 3, offset: 0) == "OK 0x51b36")
        try qt.configWrite(device: 3, offset: 0x14, width: "l", value: 0xC000_0000)   // BAR1: doorbell page
        try qt.configWrite(device: 3, offset: 0x04, width: "w", value: 0x0002)        // memory decode
        #expect(try qt.configRead(device: 3, offset: 0x14) == "OK 0xc0000000")
        // Not intercepted yet: no notices.
        #expect(try qt.command("writel 0xc0000100 1") == "OK")
        #expect(try qt.command("writel 0xc0000104 0") == "OK")
        #expect(qt.takeIRQs().isEmpty)
        #expect(try qt.command("irq_intercept_in ioapic") == "OK")
        #expect(try qt.command("irq_intercept_in ioapic") == "OK")                 // same device again: OK
        #expect(try qt.command("irq_intercept_in /machine/nosuch") == "FAIL Unknown device")
        #expect(try qt.command("writel 0xc0000100 1") == "OK")
        #expect(qt.takeIRQs() == ["IRQ raise 23"])
        #expect(try qt.command("writel 0xc0000100 1") == "OK")                     // already high: no notice
        #expect(qt.takeIRQs().isEmpty)
        #expect(try qt.command("writel 0xc0000104 0") == "OK")
        #expect(qt.takeIRQs() == ["IRQ lower 23"])
        #expect(try qt.command("set_irq_in ioapic unnamed-gpio-in 4 1") == "OK")
        #expect(qt.takeIRQs() == ["IRQ raise 4"])
    }

    @Test func logAndExitWhenTheSocketCloses() throws {
        let log = NSTemporaryDirectory() + "sy-\(getpid())-\(UUID().uuidString.prefix(8))-qtest.log"
        defer { unlink(log) }
        let vm = try Self.start(log: log)
        let qt = vm.qtest
        defer { vm.stop() }
        #expect(try qt.command("inl 0xcf8") == "OK 0x0000")
        #expect(try qt.command("nonsense 1 2") == "FAIL Unknown command 'nonsense'")
        close(dup2(open("/dev/null", O_RDONLY), qt.socket.fd))  // hang up our end
        #expect(vm.child.waitForExit(seconds: 10) == 0)
        let text = try String(contentsOfFile: log, encoding: .utf8)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("[I ") == true && lines.first?.hasSuffix("] OPENED") == true)
        #expect(lines.contains { $0.hasPrefix("[R +") && $0.hasSuffix("] inl 0xcf8") })
        #expect(lines.contains { $0.hasPrefix("[S +") && $0.hasSuffix("] OK 0x0000") })
        #expect(lines.contains { $0.hasSuffix("] nonsense 1 2") })
        #expect(lines.last?.hasPrefix("[I +") == true && lines.last?.hasSuffix("] CLOSED") == true)
    }

    @Test func acceleratorWithoutVirtualClockHasNoClockCommands() throws {
        let vm = try QTestSession(switchyardBinary, ["-machine", "q35,accel=kvm", "-display", "none"], name: "qtest-kvm")
        defer { vm.stop() }
        let qt = vm.qtest
        #expect(try qt.command("clock_step 10") == "FAIL Unknown command 'clock_step'")
        #expect(try qt.command("readl 0x0") == "OK 0x0000000000000000")
    }
}
