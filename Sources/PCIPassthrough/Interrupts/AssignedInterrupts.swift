import PCI
import Synchronization
import VFIO
import VMMBase

/// How the guest wants an assigned function to interrupt, read from the emulated MSI and
/// MSI-X registers and table (PCI Local Bus 3.0, 6.8: MSI-X over MSI over INTx). A value,
/// computed under the function's lock and applied after it.
public struct DesiredInterrupts: Sendable, Hashable {
    public typealias Vector = MessageVectorState

    public enum Mode: Sendable, Hashable {
        case intx
        case msi([Vector])
        case msix([Vector])
    }

    public var mode: Mode

    /// The vectors VFIO can signal: the device's IRQ counts (VFIO_DEVICE_GET_IRQ_INFO).
    public struct Limits: Sendable, Hashable {
        public var msi: Int
        public var msix: Int
        public init(msi: Int, msix: Int) {
            self.msi = msi
            self.msix = msix
        }
    }

    public init(mode: Mode) { self.mode = mode }

    /// - Parameter device: names the function in guest-error lines.
    public init(config: ConfigSpace, table: MSIXTable?, limits: Limits, device: String) {
        if let control = config.msixControl, control.enabled, let table {
            mode = .msix(Array(table.vectorStates(control: control).prefix(limits.msix)))
        } else if let msi = config.msiState, msi.enabled {
            let count = min(msi.vectorsAllocated, limits.msi)
            if count < msi.vectorsAllocated {
                GuestErrorLog.report(device: device, kind: "msi-vectors",
                                     "MSI enabled with \(msi.vectorsAllocated) vectors; the device signals \(limits.msi)")
            }
            mode = .msi((0..<count).compactMap { vector in
                msi.message(forVector: vector).map { Vector(message: $0, masked: msi.isMasked(vector)) }
            })
        } else {
            mode = .intx
        }
    }
}

/// The assigned function's interrupts as VFIO and the machine have them: which VFIO IRQ index
/// is on, the vectors' eventfds and routes, the INTx eventfd pair. `apply` moves them to a
/// desired state with the fewest VFIO_DEVICE_SET_IRQS calls: a mode change disables the old
/// index and enables the new one (MSI cannot resize while enabled, so a count change does the
/// same); otherwise only changed vectors' routes are updated.
final class AssignedInterrupts: Sendable {
    private struct Applied: @unchecked Sendable {
        // @unchecked: the existentials are Sendable class references; the Mutex guards the fields.
        var mode: DesiredInterrupts.Mode = .intx
        var vectors: (any MessageVectors)?
        var intx: (any KernelINTxLine)?
        var intxEnabled = false
        var generation = 0
    }

    private let name: String
    private let device: any VFIODeviceIO
    private let routing: any MessageVectorRouting
    private let hasINTx: Bool
    private let applied = Mutex(Applied())

    init(name: String, device: any VFIODeviceIO, routing: any MessageVectorRouting, hasINTx: Bool) {
        self.name = name
        self.device = device
        self.routing = routing
        self.hasINTx = hasINTx
    }

    /// The function's interrupt output (a placement, or none after unplug): INTx becomes the
    /// output's kernel line, when the device has a pin and the output offers one. VFIO signals
    /// its trigger eventfd, and its resample eventfd unmasks.
    func connect(_ output: any PCIInterruptOutput) {
        applied.withLock { a in
            guard hasINTx else { return }
            var line: (any KernelINTxLine)?
            do throws(KernelINTxError) { line = try output.kernelINTx() } catch { log("INTx line: \(error)") }
            guard a.intx !== line else { return }
            disableINTx(&a)
            a.intx = line
            if a.mode == .intx { enableINTx(&a) }
        }
    }

    /// Wires INTx again after `stop` (a reset), on the line the output gave.
    func start() {
        applied.withLock { a in
            if a.mode == .intx { enableINTx(&a) }
        }
    }

    /// Applies `desired` unless a later generation was already applied (two vCPUs writing at once).
    func apply(_ desired: DesiredInterrupts, generation: Int) {
        applied.withLock { a in
            guard generation > a.generation else { return }
            a.generation = generation
            let (old, new) = (a.mode, desired.mode)
            switch (old, new) {
            case (.msi(let was), .msi(let now)) where was.count == now.count:
                updateRoutes(a.vectors, from: was, to: now)
            case (.msix(let was), .msix(let now)) where was.count == now.count:
                updateRoutes(a.vectors, from: was, to: now)
            default:
                guard old != new else { return }
                disableMessages(&a)
                switch new {
                case .intx: enableINTx(&a)
                case .msi(let vectors): enableMessages(&a, index: VFIOPCIIRQ.msi, vectors)
                case .msix(let vectors): enableMessages(&a, index: VFIOPCIIRQ.msix, vectors)
                }
            }
            a.mode = new
        }
    }

    /// Everything off, the vectors released: before a reset and on unplug. `start` wires INTx
    /// again (the line stays the output's).
    func stop() {
        applied.withLock { a in
            disableMessages(&a)
            disableINTx(&a)
            a.mode = .intx
        }
    }

    // MARK: Steps

    private func enableMessages(_ a: inout Applied, index: UInt32, _ wanted: [DesiredInterrupts.Vector]) {
        guard !wanted.isEmpty else { return }
        disableINTx(&a)
        let vectors: any MessageVectors
        do throws(InterruptRoutingError) { vectors = try routing.makeMessageVectors(count: wanted.count) } catch {
            log("\(wanted.count) message vectors: \(error)")
            return
        }
        // Routes first, so the first signal already finds its message.
        updateRoutes(vectors, from: nil, to: wanted)
        do throws(VFIOError) {
            try device.setIRQs(VFIOIRQRequest(index: index, .trigger(eventfds: vectors.eventFDs.map { Optional($0) })))
        } catch {
            log("\(error)")
            vectors.release()
            return
        }
        a.vectors = vectors
    }

    private func disableMessages(_ a: inout Applied) {
        let index: UInt32
        switch a.mode {
        case .intx: return
        case .msi: index = VFIOPCIIRQ.msi
        case .msix: index = VFIOPCIIRQ.msix
        }
        do throws(VFIOError) { try device.setIRQs(VFIOIRQRequest(index: index, .disable)) } catch { log("\(error)") }
        a.vectors?.release()
        a.vectors = nil
        a.mode = .intx
    }

    private func enableINTx(_ a: inout Applied) {
        guard let intx = a.intx, !a.intxEnabled else { return }
        do throws(VFIOError) {
            try device.setIRQs(VFIOIRQRequest(index: VFIOPCIIRQ.intx, .trigger(eventfds: [intx.trigger])))
            try device.setIRQs(VFIOIRQRequest(index: VFIOPCIIRQ.intx, .unmaskOnEventfd(intx.resample)))
            a.intxEnabled = true
        } catch {
            log("\(error)")
        }
    }

    private func disableINTx(_ a: inout Applied) {
        guard a.intxEnabled else { return }
        do throws(VFIOError) { try device.setIRQs(VFIOIRQRequest(index: VFIOPCIIRQ.intx, .disable)) } catch { log("\(error)") }
        a.intxEnabled = false
    }

    private func updateRoutes(_ vectors: (any MessageVectors)?, from old: [DesiredInterrupts.Vector]?,
                              to new: [DesiredInterrupts.Vector]) {
        guard let vectors else { return }
        for (index, vector) in new.enumerated() where old?[index] != vector {
            do throws(InterruptRoutingError) {
                try vectors.update(vector: index, message: vector.message, masked: vector.masked)
            } catch {
                log("vector \(index): \(error)")
            }
        }
    }

    /// Host-side failures: the guest sees a device that does not interrupt; the operator a line.
    private func log(_ message: String) {
        GuestErrorLog.report(device: name, kind: "vfio-irq", "interrupt set-up failed: \(message)")
    }
}
