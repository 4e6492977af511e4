import Chipset
import VMMBase
import Machine

/// The commands Switchyard's QMP monitor answers, with their argument schemas.
enum QMPCommands {
    struct Handler: Sendable {
        let schema: QMPArguments.Schema
        let run: @Sendable (QMPMonitor, QMPSession, QMPArguments) throws(QMPError) -> JSONValue
        /// Runs after the reply was sent (quit).
        var after: (@Sendable (QMPMonitor) -> Void)? = nil
    }

    static let none = QMPArguments.Schema.fields([])

    static let table: [String: Handler] = [
        "qmp_capabilities": Handler(schema: .fields([.init(name: "enable", kind: .stringArray, required: false)])) {
            _, session, args throws(QMPError) in
            for (i, item) in (args["enable"]?.arrayValue ?? []).enumerated() {
                let name = item.stringValue ?? ""
                guard name == "oob" else {
                    throw QMPError("Parameter 'enable[\(i)]' does not accept value '\(name)'")
                }
                throw QMPError("Capability 'oob' not available")
            }
            session.setNegotiated()
            return [:]
        },
        "query-version": Handler(schema: none) { monitor, _, _ in monitor.versionInfo },
        "query-status": Handler(schema: none) { monitor, _, _ in
            let state = monitor.controller.runState
            return ["status": .string(state.rawValue), "running": .bool(state == .running)]
        },
        "query-commands": Handler(schema: none) { _, _, _ in
            .array(table.keys.sorted().map { ["name": .string($0)] })
        },
        "query-pci": Handler(schema: none) { monitor, _, _ in monitor.pciQuery.value() },
        "device_add": Handler(schema: .open(required: [
            .init(name: "driver", kind: .string, required: true),
            .init(name: "id", kind: .string, required: false),
            .init(name: "bus", kind: .string, required: false),
        ])) { monitor, _, args throws(QMPError) in
            let spec = try deviceSpec(args)
            // QEMU looks the driver up before the bus.
            guard Machine.knownDrivers.contains(spec.driver) else {
                throw QMPError("'\(spec.driver)' is not a valid device model name")
            }
            do throws(MachineConfigurationError) {
                try monitor.machine.hotPlug(spec)
            } catch {
                throw qmpError(error)
            }
            return [:]
        },
        // x-surprise (Switchyard's, not QEMU's): a surprise removal from a slot with Hot-Plug
        // Surprise; the device goes at once and the guest is told afterwards.
        "device_del": Handler(schema: .fields([.init(name: "id", kind: .string, required: true),
                                               .init(name: "x-surprise", kind: .bool, required: false)])) {
            monitor, _, args throws(QMPError) in
            let mode: UnplugMode = args["x-surprise"]?.boolValue == true ? .surprise : .attentionButton
            do throws(MachineConfigurationError) {
                try monitor.machine.unplug(id: args["id"]?.stringValue ?? "", mode: mode)
            } catch {
                throw qmpError(error)
            }
            return [:]
        },
        "set_link": Handler(schema: .fields([.init(name: "name", kind: .string, required: true),
                                             .init(name: "up", kind: .bool, required: true)])) {
            monitor, _, args throws(QMPError) in
            do throws(MachineConfigurationError) {
                try monitor.machine.setLink(name: args["name"]?.stringValue ?? "", up: args["up"]?.boolValue ?? true)
            } catch {
                throw qmpError(error)
            }
            return [:]
        },
        "system_reset": Handler(schema: none, run: { monitor, _, _ in
            // As QEMU: RESET (or, with -no-reboot, SHUTDOWN) goes out before the reply.
            monitor.controller.systemReset()
            return [:]
        }, after: { monitor in
            if monitor.controller.runState == .shutdown { monitor.controller.requestExit(code: 0) }
        }),
        "stop": Handler(schema: none) { monitor, _, _ in
            monitor.controller.setRunState(.paused)  // STOP comes from the run-state change
            return [:]
        },
        "cont": Handler(schema: none) { monitor, _, _ in
            monitor.controller.setRunState(.running)  // and RESUME
            return [:]
        },
        "quit": Handler(schema: none, run: { monitor, _, _ in
            monitor.controller.setRunState(.shutdown)
            monitor.emit("SHUTDOWN", data: ["guest": false, "reason": "host-qmp-quit"])
            return [:]
        }, after: { monitor in monitor.controller.requestExit(code: 0) }),
    ]

    /// device_add's arguments as a device description: QEMU's property names, values given
    /// as strings, numbers or booleans. A numeric `addr` is a devfn, as QEMU reads it.
    static func deviceSpec(_ args: QMPArguments) throws(QMPError) -> DeviceSpec {
        var spec = DeviceSpec(driver: args["driver"]?.stringValue ?? "")
        for (name, value) in args.values where name != "driver" {
            let text: String
            switch value {
            case .string(let s): text = s
            case .int(let i): text = String(i)
            case .unsigned(let u): text = String(u)
            case .bool(let b): text = b ? "on" : "off"
            case .double(let d): text = "\(d)"
            default: throw QMPError("Invalid parameter type for '\(name)', expected: string")
            }
            if name == "addr", case .int(let devfn) = value {
                guard (0...255).contains(devfn) else { throw QMPError("Property 'addr' expects a PCI address 0-255 or SLOT.FN") }
                spec.devfn = UInt8(devfn)
                continue
            }
            do {
                try spec.set(name, text)
            } catch {
                switch error {
                case .address(let value):
                    throw QMPError("Property 'addr' expects a PCI address SLOT[.FN] with slot 0-31 and function 0-7, not addr=\(value)")
                case .multifunction: throw QMPError("Parameter 'multifunction' expects 'on' or 'off'")
                case .romFile: throw QMPError(error.reason)
                }
            }
        }
        return spec
    }

    /// Machine errors in QEMU's words where QEMU has words for them.
    static func qmpError(_ error: MachineConfigurationError) -> QMPError {
        switch error {
        case .unknownDriver(let driver, _): QMPError("'\(driver)' is not a valid device model name")
        case .noSuchBus(let bus, _): QMPError("Bus '\(bus)' not found")
        case .duplicateID(let id): QMPError("Duplicate device ID '\(id)'")
        case .invalidID: QMPError("Parameter 'id' expects an identifier; \(error)")
        case .noSuchDevice(let id): QMPError(.deviceNotFound, "Device '\(id)' not found")
        case .notHotPluggable(let bus, let reason):
            reason.contains("does not support hotplugging") ? QMPError("Bus '\(bus)' does not support hotplugging")
                                                            : QMPError(reason)
        default: QMPError("\(error)")
        }
    }
}
