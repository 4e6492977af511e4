import PCI
import Synchronization
import VFIO
import VMMBase

/// How an assigned function is presented (QEMU's vfio-pci properties and the guest's topology).
public struct AssignmentOptions: Sendable, Hashable {
    /// `rombar=0` hides the expansion ROM.
    public var romBAR: Bool
    /// `x-no-mmap` reaches every BAR through the region's read/write instead of mmaps.
    public var mmap: Bool
    public var position: GuestPCIExpressPosition

    public init(romBAR: Bool = true, mmap: Bool = true, position: GuestPCIExpressPosition) {
        self.romBAR = romBAR
        self.mmap = mmap
        self.position = position
    }
}

/// Why a host function could not be assigned; `description` names the fix.
public enum AssignmentError: Error, CustomStringConvertible {
    case vfio(VFIOError)
    case notPCI(device: String)
    case config(device: String, VirtualConfigSpaceError)
    case quirks(VFIOQuirkTableError)

    public var description: String {
        switch self {
        case .vfio(let error): "\(error)"
        case .notPCI(let device): "vfio \(device): not a vfio-pci device; bind it to vfio-pci: switchyard host bind BDF"
        case .config(let device, let error): "vfio \(device): \(error)"
        case .quirks(let error): "\(error); fix DeviceTables/vfio-quirks.txt and rebuild"
        }
    }
}

/// A host PCI function assigned to the guest through VFIO. Its config space is the
/// `VirtualConfigSpace` overlay; BARs are the device's regions (mmap'd where VFIO allows) at
/// the guest's addresses, except the MSI-X table and PBA, which are emulated; MSI and MSI-X
/// are eventfds VFIO signals straight into the machine's routes; INTx is a resampled eventfd
/// pair. Reset is VFIO's device reset (FLR, PM or slot reset, the kernel's choice).
public final class AssignedPCIFunction: DirectlyMappedBARs, HostResourceHolder, InterruptingFunction {
    public let name: String
    public let device: any VFIODeviceIO
    /// BARs the device has but the guest cannot be given (with the reason).
    public let skippedBARs: [VirtualBARs.Skipped]
    /// The mmap'd parts of the BARs, for the machine to map into the guest.
    public var mappedAreas: [MappedBARArea] { bars.mapped }

    struct State {
        var config: VirtualConfigSpace
        var arbiter: InterruptArbiter
        var generation = 0
    }
    let state: Mutex<State>
    let host: VFIOConfigRegion
    private let bars: AssignedBARs
    let interrupts: AssignedInterrupts
    let limits: DesiredInterrupts.Limits
    private let supportsReset: Bool
    /// A secondary-bus reset of the device, for one with neither FLR nor PM reset (nil: none).
    private let busReset: (@Sendable () throws(VFIOError) -> Void)?
    private let release: @Sendable () -> Void

    /// - Parameters:
    ///   - busReset: resets the device's bus (VFIO_DEVICE_PCI_HOT_RESET with the groups it
    ///     reaches), used when the device has no function reset of its own.
    ///   - release: called once the function let go of the device (unplug), so its owner can
    ///     close it and drop the DMA maps.
    public init(name: String, device: any VFIODeviceIO, options: AssignmentOptions, quirks: VFIOQuirkTable,
                routing: any MessageVectorRouting, busReset: (@Sendable () throws(VFIOError) -> Void)? = nil,
                release: @escaping @Sendable () -> Void = {}) throws(AssignmentError) {
        self.name = name
        self.device = device
        self.busReset = busReset
        self.release = release
        func step<T>(_ body: () throws(VFIOError) -> T) throws(AssignmentError) -> T {
            do { return try body() } catch { throw .vfio(error) }
        }
        let info = try step { () throws(VFIOError) in try device.info() }
        guard info.isPCI else { throw .notPCI(device: device.name) }
        supportsReset = info.supportsReset
        let host = VFIOConfigRegion(device: device, region: try step { () throws(VFIOError) in
            try device.regionInfo(VFIOPCIRegion.config)
        }, name: name)
        self.host = host
        let bytes = try step { () throws(VFIOError) in try host.snapshot() }
        let regions = try step { () throws(VFIOError) in try AssignedBARs.regionInfos(of: device) }
        let virtualBARs = VirtualBARs.descriptors(host: bytes, regionSizes: regions.prefix(6).map { $0?.size ?? 0 })
        skippedBARs = virtualBARs.skipped
        let romSize = options.romBAR ? regions[6].map(\.size).flatMap(Self.romSize) : nil
        let config: VirtualConfigSpace
        do {
            config = try VirtualConfigSpace(host: bytes, bars: virtualBARs.bars, romSize: romSize,
                                            position: options.position,
                                            quirks: quirks.quirks(vendorID: UInt16(bytes[0]) | UInt16(bytes[1]) << 8,
                                                                  deviceID: UInt16(bytes[2]) | UInt16(bytes[3]) << 8))
        } catch {
            throw .config(device: device.name, error)
        }
        let mapped = try step { () throws(VFIOError) in
            try AssignedBARs.map(device: device, regions: regions, bars: virtualBARs.bars,
                                 msix: config.cells.msixLayout, enabled: options.mmap)
        }
        limits = DesiredInterrupts.Limits(msi: Int(try step { () throws(VFIOError) in try device.irqInfo(VFIOPCIIRQ.msi) }.count),
                                          msix: Int(try step { () throws(VFIOError) in try device.irqInfo(VFIOPCIIRQ.msix) }.count))
        let intxCount = try step { () throws(VFIOError) in try device.irqInfo(VFIOPCIIRQ.intx) }.count
        bars = AssignedBARs(regions: regions, mapped: mapped)
        state = Mutex(State(config: config, arbiter: InterruptArbiter(msix: config.cells.msixLayout)))
        interrupts = AssignedInterrupts(name: name, device: device, routing: routing,
                                        hasINTx: intxCount > 0 && config.cells.interruptPin != 0)
    }

    /// The machine placed the function (or unplugged it): its INTx pin is the output's kernel line.
    public func connect(interrupts output: any PCIInterruptOutput) {
        interrupts.connect(output)
    }

    /// The ROM region's size as a ROM BAR can decode it (2 KiB to 16 MiB, a power of two).
    private static func romSize(_ size: UInt64) -> UInt64? {
        guard size > 0 else { return nil }
        let rounded = size.nonzeroBitCount == 1 ? size : UInt64(1) << (64 - size.leadingZeroBitCount)
        return (2048...(1 << 24)).contains(rounded) ? rounded : nil
    }

    // MARK: PCIFunction

    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 {
        state.withLock { $0.config.read(offset, width: width, host: host) }
    }

    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        let (effects, update) = state.withLock { s -> (ConfigWriteEffects, (DesiredInterrupts, Int)?) in
            let effects = s.config.write(offset, width: width, value: value, host: host)
            if Self.initiatesFLR(s.config.cells, offset: offset, width: width, value: value) {
                // The kernel resets the device on this write; our emulated half follows.
                Self.resetEmulated(&s)
                return (effects.union(.functionLevelReset), Self.desired(&s, limits: limits, name: name))
            }
            guard !effects.isDisjoint(with: [.msiChanged, .msixChanged]) else { return (effects, nil) }
            return (effects, Self.desired(&s, limits: limits, name: name))
        }
        if let (desired, generation) = update { interrupts.apply(desired, generation: generation) }
        return effects
    }

    public func configSnapshot() -> ConfigSpace {
        state.withLock { $0.config.merged(host: host) }
    }

    /// The emulated cells: every register the platform decodes is emulated or mirrored there
    /// (Command's enables are written to both), so this reads nothing of the host's; the
    /// whole merged view costs a host read per dword (VFIO: a pread each, 1,024 for an Express
    /// function), once per function at every address-space commit before this.
    public func decodeSnapshot() -> ConfigSpace {
        state.withLock { $0.config.cells }
    }

    public func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64 {
        if let value = state.withLock({ $0.arbiter.msixRead(bar: index, offset: offset, width: width) }) { return value }
        return bars.read(device: device, bar: index, offset: offset, width: width, name: name)
    }

    public func barWrite(_ index: Int, offset: UInt64, width: AccessWidth, value: UInt64) {
        let trapped = state.withLock { s -> (DesiredInterrupts, Int)?? in
            guard let written = s.arbiter.msixWrite(bar: index, offset: offset, width: width, value: value,
                                                    in: s.config.cells) else { return .none }
            if written.table == .ignored { return .some(nil) }
            return .some(Self.desired(&s, limits: limits, name: name))
        }
        switch trapped {
        case .none: bars.write(device: device, bar: index, offset: offset, width: width, value: value, name: name)
        case .some(let update?): interrupts.apply(update.0, generation: update.1)
        case .some(nil): break
        }
    }

    /// The mmap'd areas of BAR `index`, which the machine lays over the BAR as host memory.
    public func directAreas(ofBAR index: Int) -> [DirectBARArea] {
        bars.mapped.filter { $0.bar == index }.map { DirectBARArea(offset: $0.offset, handler: $0.handler) }
    }

    /// A machine reset: interrupts off, the device reset by VFIO, the emulated registers and
    /// table back to their state at assignment, INTx wired again.
    public func reset() {
        interrupts.stop()
        resetDevice()
        state.withLock { s in
            Self.resetEmulated(&s)
            s.generation += 1
        }
        interrupts.start()
    }

    /// Unplug: interrupts off and released, the device reset, so it goes back to the host
    /// bound to vfio-pci and ready to be assigned again.
    public func unrealize() {
        interrupts.stop()
        resetDevice()
        release()
    }

    // MARK: Internals

    private func resetDevice() {
        guard supportsReset else {
            guard let busReset else {
                GuestErrorLog.report(device: name, kind: "reset", "\(device.name) has no function reset (FLR or PM); a bus reset is not done")
                return
            }
            do throws(VFIOError) { try busReset() } catch {
                GuestErrorLog.report(device: name, kind: "reset", "\(device.name) has no function reset (FLR or PM), and its bus cannot be reset: \(error)")
            }
            return
        }
        do throws(VFIOError) { try device.reset() } catch where error.system?.errno == .wouldBlock {
            // vfio-pci tries the reset without waiting for the device's lock; a host that is
            // taking the device back (an unbind) holds it, and resets the device itself when we close it.
            GuestErrorLog.report(device: name, kind: "reset", "\(device.name) is busy on the host (being unbound?): not reset here; vfio-pci resets it when released")
        } catch {
            GuestErrorLog.report(device: name, kind: "reset", "\(error)")
        }
    }

    /// Emulated registers and the MSI-X table back to their state at assignment.
    private static func resetEmulated(_ s: inout State) {
        s.config.reset()
        var arbiter = s.arbiter
        s.config.withCells { _ = arbiter.reset(in: &$0) }
        s.arbiter = arbiter
    }

    static func desired(_ s: inout State, limits: DesiredInterrupts.Limits, name: String) -> (DesiredInterrupts, Int) {
        s.generation += 1
        return (DesiredInterrupts(config: s.config.cells, table: s.arbiter.msixTable, limits: limits, device: name), s.generation)
    }

    /// A write setting Initiate Function Level Reset (PCIe Device Control bit 15) of a device
    /// that advertises FLR.
    private static func initiatesFLR(_ cells: ConfigSpace, offset: Int, width: AccessWidth, value: UInt32) -> Bool {
        guard let base = cells.pciExpressOffset else { return false }
        let bitOffset = base + PCIExpressRegister.deviceControl + 1  // the byte holding bit 15
        guard bitOffset >= offset, bitOffset < offset + width.bytes else { return false }
        return (value >> (8 * UInt32(bitOffset - offset))) & 0x80 != 0
    }
}
