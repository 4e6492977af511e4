import HostOS
import Interrupts
import KVM
import Synchronization
import VMMBase

/// Why a route or notifier change failed.
public enum InterruptRouteError: Error, Sendable, CustomStringConvertible {
    case table(GSIRouteError)
    case kernel(SystemError)
    case noSuchVector(Int, count: Int)

    public var description: String {
        switch self {
        case .table(let error): "interrupt route: \(error)"
        case .kernel(let error): "interrupt route: \(error)"
        case .noSuchVector(let vector, let count): "vector \(vector) does not exist (the group has \(count))"
        }
    }
}

extension GSIRouteTable {
    /// The table as KVM_SET_GSI_ROUTING takes it, for an in-kernel PIC pair and IOAPIC
    /// (KVM's irqchip numbers: 0 the master 8259, 1 the slave, 2 the IOAPIC).
    public var kvmRoutes: [KVMVirtualMachine.GSIRoute] {
        sorted.flatMap { gsi, route -> [KVMVirtualMachine.GSIRoute] in
            switch route {
            case .controllers(let ioapic, let pic):
                (pic.map { [.irqchip(gsi: gsi.number, chip: $0 < 8 ? 0 : 1, pin: $0 % 8)] } ?? [])
                    + (ioapic.map { [.irqchip(gsi: gsi.number, chip: 2, pin: $0)] } ?? [])
            case .msi(let message):
                [.msi(gsi: gsi.number, message: message)]
            }
        }
    }

    /// The table as KVM_SET_GSI_ROUTING takes it under a split irqchip, where KVM has no PIC or
    /// IOAPIC and refuses irqchip routes: the reserved GSIs are one MSI route per userspace
    /// IOAPIC pin (GSI n for pin n, as QEMU numbers them), each the message the pin's
    /// redirection entry sends. KVM scans these routes for level-triggered vectors to build its
    /// EOI-exit bitmap (Linux arch/x86/kvm/irq_comm.c, kvm_scan_ioapic_routes). Allocated GSIs
    /// stay as they are.
    public func kvmRoutes(splitIOAPICPins pins: [MSIMessage]) -> [KVMVirtualMachine.GSIRoute] {
        pins.prefix(Int(firstAllocatable)).enumerated().map { .msi(gsi: UInt32($0.offset), message: $0.element) }
            + sorted.filter { $0.gsi.number >= firstAllocatable }.flatMap { gsi, route -> [KVMVirtualMachine.GSIRoute] in
                guard case .msi(let message) = route else { return [] }
                return [.msi(gsi: gsi.number, message: message)]
            }
    }
}

/// The machine's GSI routes bound to a KVM VM with an in-kernel irqchip: every change to the
/// table is committed to the kernel whole (KVM_SET_GSI_ROUTING replaces the table), under one
/// lock, so the kernel's routing is always the table's. Under a split irqchip the IOAPIC pins'
/// messages are part of what is committed (`updateIOAPICPins`).
public final class KVMInterruptRoutes: Sendable {
    public let virtualMachine: KVMVirtualMachine
    private struct Committed: Sendable {
        var table: GSIRouteTable
        /// The userspace IOAPIC's pin messages under a split irqchip; nil with KVM's IOAPIC.
        var ioapicPins: [MSIMessage]?
        var routes: [KVMVirtualMachine.GSIRoute]

        init(table: GSIRouteTable, ioapicPins: [MSIMessage]?) {
            self.table = table
            self.ioapicPins = ioapicPins
            routes = ioapicPins.map { table.kvmRoutes(splitIOAPICPins: $0) } ?? table.kvmRoutes
        }
    }
    private let committed: Mutex<Committed>

    /// Commits `table` (a PC's wiring unless told otherwise) to the VM. Under a split irqchip,
    /// `ioapicPins` are the userspace IOAPIC's pin messages (one per pin).
    public init(virtualMachine: KVMVirtualMachine, table: GSIRouteTable = .pc,
                ioapicPins: [MSIMessage]? = nil) throws(SystemError) {
        self.virtualMachine = virtualMachine
        let first = Committed(table: table, ioapicPins: ioapicPins)
        try virtualMachine.setGSIRouting(first.routes)
        committed = Mutex(first)
    }

    /// The routes as committed.
    public var snapshot: GSIRouteTable { committed.withLock { $0.table } }

    /// KVM's irqchip has the IOAPIC (not a split irqchip, whose IOAPIC is the machine's).
    public var hasKernelIOAPIC: Bool { committed.withLock { $0.ioapicPins == nil } }

    /// What KVM_SET_GSI_ROUTING was last given.
    public var kernelRoutes: [KVMVirtualMachine.GSIRoute] { committed.withLock { $0.routes } }

    /// Applies `edit` and commits the result; on failure the table is left as it was.
    func change<T: Sendable>(_ edit: (inout GSIRouteTable) throws(GSIRouteError) -> T) throws(InterruptRouteError) -> T {
        try committed.withLock { (current: inout Committed) throws(InterruptRouteError) -> T in
            var table = current.table
            let result: T
            do throws(GSIRouteError) { result = try edit(&table) } catch { throw .table(error) }
            try commit(Committed(table: table, ioapicPins: current.ioapicPins), over: &current)
            return result
        }
    }

    /// Under a split irqchip: the userspace IOAPIC's redirection entries changed, so its pins'
    /// routes (and with them KVM's EOI-exit bitmap) follow.
    public func updateIOAPICPins(_ pins: [MSIMessage]) throws(InterruptRouteError) {
        try committed.withLock { (current: inout Committed) throws(InterruptRouteError) in
            guard current.ioapicPins != nil, current.ioapicPins != pins else { return }
            try commit(Committed(table: current.table, ioapicPins: pins), over: &current)
        }
    }

    private func commit(_ next: Committed, over current: inout Committed) throws(InterruptRouteError) {
        do throws(SystemError) { try virtualMachine.setGSIRouting(next.routes) } catch { throw .kernel(error) }
        current = next
    }

    /// A group of `vectors` MSI/MSI-X vectors, each with its own GSI and eventfd.
    public func makeMSIGroup(vectors: Int) throws(InterruptRouteError) -> MSIVectorGroup {
        try MSIVectorGroup(routes: self, vectors: vectors)
    }
}

/// A per-vector notifier: the eventfd a device model or a host backend (VFIO, vhost) signals
/// to raise the vector, and the GSI KVM's irqfd turns that into.
public struct InterruptNotifier: Sendable {
    public let event: SharedEventFD
    public let gsi: GSI

    init(gsi: GSI) throws(SystemError) {
        event = try SharedEventFD()
        self.gsi = gsi
    }
}

/// The MSI or MSI-X vectors of one function, shaped as cloud-hypervisor's MSI
/// `InterruptSourceGroup`: each vector owns a GSI (an MSI route) and an eventfd bound to it by
/// KVM_IRQFD. When the guest rewrites a vector's message the route follows; a masked vector's
/// irqfd is detached, so signals wait in its eventfd (the vector is pending) and are delivered
/// when the guest unmasks it (PCI Local Bus 3.0, 6.8.2.9).
public final class MSIVectorGroup: Sendable {
    private let routes: KVMInterruptRoutes
    public let notifiers: [InterruptNotifier]
    /// Which vectors have their irqfd attached (unmasked).
    private let attached: Mutex<[Bool]>

    init(routes: KVMInterruptRoutes, vectors: Int) throws(InterruptRouteError) {
        self.routes = routes
        // Vectors start masked with an empty message, as an MSI-X table comes out of reset.
        let placeholder = GSIRoute.msi(MSIMessage(address: 0, data: 0))
        let gsis = try routes.change { (table: inout GSIRouteTable) throws(GSIRouteError) -> [GSI] in
            var gsis: [GSI] = []
            for _ in 0..<vectors { gsis.append(try table.allocate(placeholder)) }
            return gsis
        }
        var notifiers: [InterruptNotifier] = []
        do throws(SystemError) {
            for gsi in gsis { notifiers.append(try InterruptNotifier(gsi: gsi)) }
        } catch {
            _ = try? routes.change { table in for gsi in gsis { table.release(gsi) } }
            throw .kernel(error)
        }
        self.notifiers = notifiers
        attached = Mutex(Array(repeating: false, count: vectors))
    }

    public var count: Int { notifiers.count }

    private func notifier(_ vector: Int) throws(InterruptRouteError) -> InterruptNotifier {
        guard notifiers.indices.contains(vector) else { throw .noSuchVector(vector, count: notifiers.count) }
        return notifiers[vector]
    }

    /// The guest (re)programmed `vector`: its route carries `message`; `masked` detaches its
    /// irqfd. Unmasking a vector that was signalled while masked delivers it once.
    public func update(vector: Int, message: MSIMessage, masked: Bool) throws(InterruptRouteError) {
        let notifier = try notifier(vector)
        let gsi = notifier.gsi
        try routes.change { (table: inout GSIRouteTable) throws(GSIRouteError) in try table.update(gsi, to: .msi(message)) }
        try attached.withLock { (attached: inout [Bool]) throws(InterruptRouteError) in
            do throws(SystemError) {
                if masked && attached[vector] {
                    try routes.virtualMachine.unregisterIRQFD(notifier.event.eventFD, gsi: gsi.number)
                    attached[vector] = false
                } else if !masked && !attached[vector] {
                    let pending = (try notifier.event.eventFD.consume() ?? 0) > 0
                    try routes.virtualMachine.registerIRQFD(notifier.event.eventFD, gsi: gsi.number)
                    attached[vector] = true
                    if pending { try notifier.event.eventFD.signal() }
                }
            } catch {
                throw .kernel(error)
            }
        }
    }

    /// Raises `vector` as a backend would: a signal on its eventfd.
    public func trigger(vector: Int) throws(InterruptRouteError) {
        let notifier = try notifier(vector)
        do throws(SystemError) { try notifier.event.eventFD.signal() } catch { throw .kernel(error) }
    }

    /// Whether `vector` has its irqfd attached.
    public func isAttached(_ vector: Int) -> Bool {
        attached.withLock { $0.indices.contains(vector) && $0[vector] }
    }

    /// Detaches every irqfd and frees the GSIs.
    public func release() throws(InterruptRouteError) {
        try attached.withLock { (attached: inout [Bool]) throws(InterruptRouteError) in
            for (vector, notifier) in notifiers.enumerated() where attached[vector] {
                do throws(SystemError) { try routes.virtualMachine.unregisterIRQFD(notifier.event.eventFD, gsi: notifier.gsi.number) } catch {
                    throw .kernel(error)
                }
                attached[vector] = false
            }
        }
        try routes.change { table in for notifier in notifiers { table.release(notifier.gsi) } }
    }
}
