import Foundation
import Testing

/// COM1 on a Unix socket (`-serial unix:PATH,server=on,wait=off`), driven through qtest: what
/// the "guest" writes to the UART's THR reaches the socket client, and what the client sends
/// shows up in the receive buffer.
@Suite("COM1 on a socket", .serialized)
struct SerialSocketTests {
    @Test func bytesFlowBothWays() throws {
        let serialPath = temporarySocketPath("com1")
        let vm = try QTestProtocolTests.start(["-serial", "unix:\(serialPath),server=on,wait=off"])
        let qt = vm.qtest
        defer { vm.stop() }
        let client = try TestSocket.connect(serialPath)
        // The server accepts on its own thread: wait until writes reach this client.
        var line: String?
        for attempt in 0..<50 {
            _ = try qt.command("outb 0x3f8 0x\(String(0x30 + attempt % 10, radix: 16))")
            _ = try qt.command("outb 0x3f8 0x0a")
            line = client.readLine()
            if line != nil { break }
        }
        #expect(line != nil)  // the first byte may have gone out before the accept
        for byte in Array("OK\n".utf8) { #expect(try qt.command("outb 0x3f8 0x\(String(byte, radix: 16))") == "OK") }
        #expect(client.readLine() == "OK")

        try client.send("Z")
        var status = ""
        for _ in 0..<200 {
            status = try qt.command("inb 0x3fd")  // LSR: bit 0 = data ready
            if let v = UInt8(status.dropFirst(5), radix: 16), v & 1 != 0 { break }
            usleep(10_000)
        }
        #expect(status.hasPrefix("OK 0x") && (UInt8(status.dropFirst(5), radix: 16) ?? 0) & 1 == 1, "\(status)")
        let received = try qt.command("inb 0x3f8")
        #expect(received == "OK 0x005a", "LSR \(status)")  // QEMU formats inb as 0x%04x
    }
}
