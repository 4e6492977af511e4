import VMMBase

/// `lspci -t` (ls-tree.c): bridges found by class and header type, devices placed on buses
/// by bus number, drawn with lspci's `+-`, `\-` and `|` connectors.
///
/// lspci's algorithm is kept as is, quirks included, because the output must match it:
/// without parent links (a dump) every bridge hangs off the host bridge and a device is
/// placed under the first bridge, in reverse discovery order, whose bus range holds it.
/// With parent links (sysfs, the `.guestKernel` view) placement follows the real topology.
extension LspciRenderer {
    final class Bridge {
        let domain: UInt32
        let primary: UInt32, secondary: UInt32, subordinate: UInt32
        /// Index into `functions`; nil for the host bridge.
        let device: Int?
        var children: [Bridge] = []  // lspci prepends: newest first
        var buses: [Bus] = []

        init(domain: UInt32, primary: UInt32, secondary: UInt32, subordinate: UInt32, device: Int?) {
            self.domain = domain
            self.primary = primary
            self.secondary = secondary
            self.subordinate = subordinate
            self.device = device
        }
    }

    final class Bus {
        let domain: UInt32, number: UInt32
        var devices: [Int] = []

        init(domain: UInt32, number: UInt32) {
            self.domain = domain
            self.number = number
        }
    }

    func renderTree(_ options: LspciOptions) -> String {
        let host = Bridge(domain: 0, primary: ~0, secondary: 0, subordinate: ~0, device: nil)
        var chain = [host]
        var bridgeOfDevice = [Int: Bridge]()
        for (index, function) in functions.enumerated() {
            let config = ConfigBytes(function.config, readable: function.readableSize)
            let headerType = config.headerType
            guard config.byte(0x0B) == 0x06, headerType == 1 || headerType == 2 else { continue }
            let bridge = Bridge(domain: UInt32(function.address.segment), primary: config.byte(0x18),
                                secondary: config.byte(0x19), subordinate: config.byte(0x1A), device: index)
            chain.append(bridge)
            bridgeOfDevice[index] = bridge
        }

        // sysfs's parent link: the bridge whose secondary bus a device sits on.
        func parent(of index: Int) -> Int? {
            guard view == .guestKernel else { return nil }
            let address = functions[index].address
            return functions.indices.first { candidate in
                guard let bridge = bridgeOfDevice[candidate] else { return false }
                return bridge.domain == UInt32(address.segment) && bridge.secondary == UInt32(address.bus)
                    && candidate != index
            }
        }

        for bridge in chain where bridge !== host {
            var best: Bridge? = parent(of: bridge.device!).flatMap { bridgeOfDevice[$0] }
            if best == nil {
                for candidate in chain where candidate !== bridge
                    && (candidate === host || bridge.domain == candidate.domain)
                    && bridge.primary >= candidate.secondary && bridge.primary <= candidate.subordinate {
                    // Unsigned arithmetic as in C: the host bridge's span is ~0 - ~0 = 0.
                    if best == nil
                        || best!.subordinate &- best!.primary > candidate.subordinate &- candidate.primary {
                        best = candidate
                    }
                }
            }
            best?.children.insert(bridge, at: 0)
        }

        func findBus(_ bridge: Bridge, _ domain: UInt32, _ number: UInt32) -> Bus? {
            bridge.buses.first { $0.domain == domain && $0.number == number }
        }
        func newBus(_ bridge: Bridge, _ domain: UInt32, _ number: UInt32) -> Bus {
            let bus = Bus(domain: domain, number: number)
            bridge.buses.append(bus)
            return bus
        }
        for bridge in chain where findBus(bridge, bridge.domain, bridge.secondary) == nil {
            _ = newBus(bridge, bridge.domain, bridge.secondary)
        }

        func insert(_ index: Int, into bridge: Bridge) {
            let domain = UInt32(functions[index].address.segment), number = UInt32(functions[index].address.bus)
            var bus: Bus? = nil
            if let parentIndex = parent(of: index), let parentBridge = bridgeOfDevice[parentIndex] {
                bus = parentBridge.buses.first ?? newBus(parentBridge, domain, number)
            }
            if bus == nil {
                bus = findBus(bridge, domain, number)
            }
            if bus == nil {
                for child in bridge.children
                    where child.domain == domain && child.secondary <= number && number <= child.subordinate {
                    insert(index, into: child)
                    return
                }
                bus = newBus(bridge, domain, number)
            }
            bus!.devices.append(index)
        }
        for index in functions.indices { insert(index, into: host) }

        var drawer = TreeDrawer(renderer: self, options: options, bridgeOfDevice: bridgeOfDevice, host: host)
        drawer.showBridge(host, at: 0)
        return drawer.out
    }

    /// ls-tree.c's printing, with its one shared line buffer: branches write at positions
    /// they remember, and printing a line turns what it printed into the indentation of the
    /// next one (connectors `+` and `|` become `|`, everything else a space).
    struct TreeDrawer {
        let renderer: LspciRenderer
        let options: LspciOptions
        let bridgeOfDevice: [Int: Bridge]
        let host: Bridge
        var out = ""
        private var buffer: [Character] = []

        init(renderer: LspciRenderer, options: LspciOptions, bridgeOfDevice: [Int: Bridge], host: Bridge) {
            self.renderer = renderer
            self.options = options
            self.bridgeOfDevice = bridgeOfDevice
            self.host = host
        }

        /// Writes `text` at `position`; returns the position after it.
        private mutating func write(_ text: String, at position: Int) -> Int {
            buffer.removeSubrange(position...)
            buffer.append(contentsOf: text)
            return buffer.count
        }

        private mutating func printLine(upTo position: Int) {
            out += String(buffer[..<position]) + "\n"
            for i in 0..<position { buffer[i] = buffer[i] == "+" || buffer[i] == "|" ? "|" : " " }
        }

        mutating func showDevice(_ index: Int, at position: Int) {
            let address = renderer.functions[index].address
            var p = write(hex(address.device, 2) + "." + String(address.function, radix: 16), at: position)
            if let bridge = bridgeOfDevice[index] {
                if bridge.secondary == 0 {
                    p = write("-", at: p)
                } else if bridge.secondary == bridge.subordinate {
                    p = write("-[\(hex(bridge.secondary, 2))]-", at: p)
                } else {
                    p = write("-[\(hex(bridge.secondary, 2))-\(hex(bridge.subordinate, 2))]-", at: p)
                }
                showBridge(bridge, at: p)
                return
            }
            if options.verbosity > 0 {
                let identity = renderer.functions[index].identity(in: renderer.view)
                p = write("  " + renderer.names.vendorAndDevice(vendor: identity.vendorID, device: identity.deviceID,
                                                               numbering: options.numbering, capacity: 256), at: p)
            }
            printLine(upTo: p)
        }

        mutating func showBus(_ bus: Bus, at position: Int) {
            if bus.devices.isEmpty {
                printLine(upTo: position)
            } else if bus.devices.count == 1 {
                showDevice(bus.devices[0], at: write("--", at: position))
            } else {
                for index in bus.devices.dropLast() {
                    showDevice(index, at: write("+-", at: position))
                }
                showDevice(bus.devices.last!, at: write("\\-", at: position))
            }
        }

        mutating func showBridge(_ bridge: Bridge, at position: Int) {
            let p = write("-", at: position)
            if bridge.buses.count == 1 {
                let bus = bridge.buses[0]
                let q = bridge === host ? write("[\(hex(bus.domain, 4)):\(hex(bus.number, 2))]-", at: p) : p
                showBus(bus, at: q)
            } else {
                for bus in bridge.buses.dropLast() {
                    showBus(bus, at: write("+-[\(hex(bus.domain, 4)):\(hex(bus.number, 2))]-", at: p))
                }
                let last = bridge.buses.last!
                showBus(last, at: write("\\-[\(hex(last.domain, 4)):\(hex(last.number, 2))]-", at: p))
            }
        }
    }
}
