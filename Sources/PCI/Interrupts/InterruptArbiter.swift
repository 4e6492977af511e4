import VMMBase

/// What a function must send after its lock is released: messages in order, then the INTx
/// level when it changed.
public struct InterruptDelivery: Sendable, Hashable {
    public var messages: [MSIMessage] = []
    /// The new level of the INTx pin; nil when it did not change.
    public var intx: Bool?

    public init(messages: [MSIMessage] = [], intx: Bool? = nil) {
        self.messages = messages
        self.intx = intx
    }

    public var isEmpty: Bool { messages.isEmpty && intx == nil }

    /// `later` happened after this delivery: its messages follow, its INTx level wins.
    public mutating func append(_ later: InterruptDelivery) {
        messages += later.messages
        if let level = later.intx { intx = level }
    }

    /// Sends it. Call without holding the function's lock.
    public func send(to output: any PCIInterruptOutput) {
        for message in messages { output.signal(message) }
        if let intx { output.setINTx(intx) }
    }
}

/// The one place a function's interrupt requests are turned into MSI-X, MSI or INTx
/// (PCI Local Bus 3.0, 6.8; PCI Express Base 6.1):
/// - MSI-X when its Enable bit is set; a vector masked by its entry or by the Function Mask
///   sets its Pending Bit instead, and is sent (its bit cleared) once unmasked (6.8.2.9);
/// - else MSI when enabled, with the vector in the low Multiple Message Enable bits of the data;
///   with per-vector masking a masked vector sets its Pending bit and is sent when unmasked
///   (6.8.1.7-6.8.1.8);
/// - else INTx: the Status register's Interrupt Status bit shows the function's request, and
///   the pin is asserted while that bit is set and Command.Interrupt Disable is clear (6.2.2,
///   6.2.3). A function with MSI or MSI-X enabled never uses its pin (6.8).
///
/// A function drives its INTx request either by events (`request`/`lowerINTx`) or by a level
/// condition (`setCondition`), not both: the condition sets the request.
///
/// It lives beside the `ConfigSpace` under the function's lock: every method takes the config
/// space it reads the capabilities from, changes only the bits the function owns (MSI pending
/// bits, Interrupt Status), and returns an `InterruptDelivery` to send after the lock.
public struct InterruptArbiter: Sendable, Hashable, Codable {
    /// The MSI-X table and PBA, when the function has MSI-X.
    public private(set) var msixTable: MSIXTable?
    /// The function wants its INTx pin asserted (a level it holds until it lowers it).
    public private(set) var intxRequested = false
    /// The level of a level-triggered interrupt condition, for edge detection.
    private var conditionLevel = false
    /// The level the pin was last driven to.
    public private(set) var intxDriven = false

    public init(msix layout: MSIXLayout? = nil) {
        msixTable = layout.map(MSIXTable.init)
    }

    /// True when MSI or MSI-X is enabled: the function signals by messages, not by its pin.
    public static func usesMessages(_ config: ConfigSpace) -> Bool {
        (config.msixControl?.enabled ?? false) || (config.msiState?.enabled ?? false)
    }

    // MARK: Requests from the function

    /// The function raises vector `vector` (an event): a message when MSI-X or MSI is enabled
    /// (or a pending bit when masked; nothing for a vector that is not allocated), else its
    /// INTx pin is asserted until `lowerINTx`.
    public mutating func request(vector: Int, in config: inout ConfigSpace) -> InterruptDelivery {
        if let control = config.msixControl, control.enabled {
            guard var table = msixTable else { return InterruptDelivery() }
            let result = table.fire(vector, control: control)
            msixTable = table
            if case .deliver(let message) = result { return InterruptDelivery(messages: [message]) }
            return InterruptDelivery()
        }
        if config.msiState?.enabled ?? false {
            return InterruptDelivery(messages: config.signalMSI(vector).map { [$0] } ?? [])
        }
        intxRequested = true
        return evaluateINTx(&config)
    }

    /// The function stops requesting INTx.
    public mutating func lowerINTx(in config: inout ConfigSpace) -> InterruptDelivery {
        intxRequested = false
        return evaluateINTx(&config)
    }

    /// A level-triggered interrupt condition (a hot-plug controller's): a 0 -> 1 change sends
    /// vector 0 when messages are enabled (PCIe Base 6.7.3.4); while messages are disabled
    /// the INTx request follows the level.
    public mutating func setCondition(_ level: Bool, in config: inout ConfigSpace) -> InterruptDelivery {
        var delivery = InterruptDelivery()
        let messages = Self.usesMessages(config)
        if level && !conditionLevel && messages {
            delivery = request(vector: 0, in: &config)
        }
        conditionLevel = level
        intxRequested = level && !messages
        delivery.append(evaluateINTx(&config))
        return delivery
    }

    // MARK: Guest writes

    /// After a config write: unmasked pending MSI or MSI-X vectors are sent, and the INTx pin
    /// follows Interrupt Disable and the MSI/MSI-X enables.
    public mutating func configWritten(_ effects: ConfigWriteEffects, in config: inout ConfigSpace) -> InterruptDelivery {
        var delivery = InterruptDelivery()
        if effects.contains(.msiChanged) {
            delivery.messages += config.takeUnmaskedPendingMSI()
        }
        if effects.contains(.msixChanged), let control = config.msixControl, var table = msixTable {
            delivery.messages += table.deliverPending(control: control).map(\.message)
            msixTable = table
        }
        if !effects.intersection([.msiChanged, .msixChanged, .intxDisableChanged]).isEmpty {
            if conditionLevel { intxRequested = !Self.usesMessages(config) }
            delivery.append(evaluateINTx(&config))
        }
        return delivery
    }

    /// A guest read of the MSI-X table or PBA; nil when the access is not theirs.
    public func msixRead(bar: Int, offset: UInt64, width: AccessWidth) -> UInt64? {
        msixTable?.read(bar: bar, offset: offset, width: width)
    }

    /// A guest write to the MSI-X table or PBA; nil when the access is not theirs. Unmasking a
    /// pending vector sends it. `table` tells the caller what changed in the table (a route
    /// built from an entry is stale after `.entryUpdated`).
    public mutating func msixWrite(bar: Int, offset: UInt64, width: AccessWidth, value: UInt64,
                                   in config: ConfigSpace) -> (table: MSIXTableWrite, delivery: InterruptDelivery)? {
        guard var table = msixTable else { return nil }
        let control = config.msixControl ?? MSIXControl(enabled: false, functionMasked: false)
        guard let result = table.write(bar: bar, offset: offset, width: width, value: value, control: control) else {
            return nil
        }
        msixTable = table
        if case .vectorUnmasked(_, let message?) = result { return (result, InterruptDelivery(messages: [message])) }
        return (result, InterruptDelivery())
    }

    // MARK: Reset

    /// A device reset below the PCI function (virtio status 0): pending MSI-X vectors are
    /// dropped, the table stays as software programmed it.
    public mutating func clearPendingMessages() { msixTable?.clearPending() }

    /// Function reset: the table is masked and empty, nothing is requested; the delivery
    /// lowers the pin if it was high. Call after the config space was reset.
    public mutating func reset(in config: inout ConfigSpace) -> InterruptDelivery {
        msixTable?.reset()
        intxRequested = false
        conditionLevel = false
        return evaluateINTx(&config)
    }

    /// Interrupt Status shows the request while the function uses its pin; the pin follows it
    /// unless Interrupt Disable is set. A function without a pin has neither.
    private mutating func evaluateINTx(_ config: inout ConfigSpace) -> InterruptDelivery {
        let status = intxRequested && !Self.usesMessages(config) && config.interruptPin != 0
        config.setInterruptStatus(status)
        let line = status && !config.command.contains(.intxDisable)
        guard line != intxDriven else { return InterruptDelivery() }
        intxDriven = line
        return InterruptDelivery(intx: line)
    }
}
