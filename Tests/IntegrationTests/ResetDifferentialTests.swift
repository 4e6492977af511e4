import Foundation
import Testing

/// Reset requests on QEMU and on Switchyard, driven the same way (qtest for the guest's
/// accesses, QMP for system_reset): the QMP events they send (RESET, or SHUTDOWN with
/// -no-reboot), in the same order relative to the reply, with the same members and data; the
/// chipset back at its power-on state afterwards; and with -no-reboot the process gone with
/// status 0.
@Suite("reset differential against QEMU")
struct ResetDifferentialTests {
    /// What one run saw: event and reply lines (timestamps dropped, keys sorted), qtest
    /// replies, and the exit status when the process ended.
    struct Run: Equatable {
        var lines: [String] = []
        var exitStatus: Int32?
    }

    static let qemuArguments = ["-machine", "q35", "-accel", "tcg", "-S", "-monitor", "none", "-serial", "none"]
    static let switchyardArguments = ["-machine", "q35", "-accel", "qtest"]

    /// An event or reply with its timestamp replaced by its member names (the values differ
    /// from run to run), keys sorted.
    static func normalized(_ line: String) throws -> String {
        let raw = line.hasSuffix("\r") ? String(line.dropLast()) : line
        guard var object = try JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any] else {
            throw TestFailure("not a JSON object: \(raw)")
        }
        if let timestamp = object["timestamp"] as? [String: Any] {
            object["timestamp"] = timestamp.keys.sorted().joined(separator: ",")
        }
        return String(decoding: try JSONSerialization.data(withJSONObject: object, options: .sortedKeys), as: UTF8.self)
    }

    /// Starts `executable` with a qtest and a QMP socket, sets PCIEXBAR (firmware's first
    /// write), then runs `steps`: "qmp:COMMAND" sends a QMP command and records every line up
    /// to its reply; "qt:LINE" sends a qtest command and records its reply ("qt!:LINE" only
    /// sends it: the process may end before it replies). "qmp-drain" records
    /// what QMP sent until a query-status reply or end of stream; "qmp-eof" what it sent
    /// until it closed (a command sent to a process that is closing could reset the socket).
    static func observe(_ executable: String, _ arguments: [String], noReboot: Bool, devices: [String] = [],
                        steps: [String]) throws -> Run {
        let vm = try QTestSession(executable, arguments + devices + (noReboot ? ["-no-reboot"] : []) + [
            "-m", "128M", "-display", "none", "-nodefaults"], monitor: .qmp(negotiated: true), name: "rstdiff", grace: 0)
        defer { vm.stop() }
        let (qt, qmp, child) = (vm.qtest, vm.qmp!, vm.child)
        var run = Run()
        for command in ["outl 0xcf8 0x80000060", "outl 0xcfc 0xb0000001", "inl 0xcfc"] {
            run.lines.append("qt \(command): " + (try qt.command(command)))
        }
        for step in steps {
            if step.hasPrefix("qt!:") {
                try? qt.socket.send(step.dropFirst(4) + "\n")
            } else if step.hasPrefix("qt:") {
                let command = String(step.dropFirst(3))
                let reply = (try? qt.command(command)) ?? "<connection closed>"
                run.lines.append("qt \(command): \(reply)")
            } else if step.hasPrefix("qmp:") {
                // "qmp:NAME" or "qmp:NAME {ARGUMENTS}"
                let text = step.dropFirst(4)
                let name = text.prefix { $0 != " " }
                let arguments = text.dropFirst(name.count + 1)
                try qmp.socket.send("{\"execute\": \"\(name)\"" + (arguments.isEmpty ? "" : ", \"arguments\": \(arguments)") + "}\n")
                while let line = qmp.socket.readLine() {
                    run.lines.append(try normalized(line))
                    if line.contains("\"return\"") || line.contains("\"error\"") { break }
                }
            } else if step == "qmp-eof" {
                while let line = qmp.socket.readLine() { run.lines.append(try normalized(line)) }
            } else if step == "qmp-drain" {
                try? qmp.socket.send("{\"execute\": \"query-status\"}\n")
                while let line = qmp.socket.readLine() {
                    if line.contains("\"return\"") { break }
                    run.lines.append(try normalized(line))
                }
            }
        }
        if noReboot { run.exitStatus = child.waitForExit(seconds: 10) }
        return run
    }

    /// `qemuExtra`: QEMU's options for the same machine (native PCIe hot-plug for ports).
    static func compare(noReboot: Bool, devices: [String] = [], qemuExtra: [String] = [],
                        steps: [String]) throws -> (ours: Run, theirs: Run) {
        let ours = try observe(switchyardBinary, switchyardArguments, noReboot: noReboot, devices: devices, steps: steps)
        let theirs = try observe(QTestDifferentialTests.qemu!, qemuArguments + qemuExtra, noReboot: noReboot,
                                 devices: devices, steps: steps)
        #expect(ours == theirs)
        return (ours, theirs)
    }

    static let readPCIEXBAR = ["qt:outl 0xcf8 0x80000060", "qt:inl 0xcfc"]

    @Test(.enabled(if: QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 is not installed"), .timeLimit(.minutes(1)))
    func systemResetSendsRESETBeforeItsReplyAndResetsTheChipset() throws {
        let (ours, _) = try Self.compare(noReboot: false, steps: ["qmp:system_reset"] + Self.readPCIEXBAR)
        #expect(ours.lines.contains(#"{"data":{"guest":false,"reason":"host-qmp-system-reset"},"event":"RESET","timestamp":"microseconds,seconds"}"#))
    }

    /// A device hot-plugged into a root port is still there after a reset, its slot still
    /// occupied: the reset returns registers to power-on values, not the topology.
    @Test(.enabled(if: QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 is not installed"), .timeLimit(.minutes(1)))
    func aHotPluggedDeviceStaysPluggedAcrossAReset() throws {
        // Firmware's minimum after the reset: ECAM on, the root port (00:02.0) forwarding bus 1.
        let enumerate = ["qt:outl 0xcf8 0x80000060", "qt:outl 0xcfc 0xb0000001", "qt:writel 0xb0010018 0x10100"]
        let look = ["qt:readw 0xb001006e", "qt:readl 0xb0100000"]   // slot status (presence); vendor/device behind
        let (ours, _) = try Self.compare(
            noReboot: false, devices: ["-device", "pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x2"],
            qemuExtra: ["-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"],
            steps: ["qt:writel 0xb0010018 0x10100", #"qmp:device_add {"driver": "pci-testdev", "id": "hp", "bus": "rp1"}"#,
                    "qmp:system_reset"] + enumerate + look)
        #expect(ours.lines.last == "qt readl 0xb0100000: OK 0x0000000000051b36")
    }

    @Test(.enabled(if: QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 is not installed"), .timeLimit(.minutes(1)),
          arguments: ["qt:outb 0xcf9 0x06", "qt:outb 0x64 0xfe"])
    func aGuestResetRequestResetsTheMachineAndSendsRESET(request: String) throws {
        let (ours, _) = try Self.compare(noReboot: false, steps: [request] + Self.readPCIEXBAR + ["qmp-drain"])
        #expect(ours.lines.contains(#"{"data":{"guest":true,"reason":"guest-reset"},"event":"RESET","timestamp":"microseconds,seconds"}"#))
    }

    @Test(.enabled(if: QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 is not installed"), .timeLimit(.minutes(1)))
    func withNoRebootSystemResetSendsSHUTDOWNAndExits() throws {
        let (ours, _) = try Self.compare(noReboot: true, steps: ["qmp:system_reset"])
        #expect(ours.lines.contains(#"{"data":{"guest":false,"reason":"host-qmp-system-reset"},"event":"SHUTDOWN","timestamp":"microseconds,seconds"}"#))
        #expect(ours.exitStatus == 0)
    }

    @Test(.enabled(if: QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 is not installed"), .timeLimit(.minutes(1)))
    func withNoRebootAGuestResetSendsSHUTDOWNAndExits() throws {
        // Linux tries RST_CNT, then the keyboard controller: one SHUTDOWN all the same.
        let (ours, _) = try Self.compare(noReboot: true, steps: ["qt!:outb 0xcf9 0x06", "qt!:outb 0x64 0xfe", "qmp-eof"])
        #expect(ours.lines.contains(#"{"data":{"guest":true,"reason":"guest-reset"},"event":"SHUTDOWN","timestamp":"microseconds,seconds"}"#))
        #expect(ours.exitStatus == 0)
    }
}
