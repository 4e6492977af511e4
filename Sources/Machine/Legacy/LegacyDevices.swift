import AddressSpace
import Chipset
import HostOS
import Interrupts
import VMMBase

/// The PC devices around the chipset that a guest expects at fixed ports: COM1, the RTC and
/// CMOS, the i8042, the reset control register, the ACPI PM block and APM ports, and the
/// ACPI PCI hot-plug block. The machine owns one set and maps it in its port space.
public final class LegacyDevices: Sendable {
    public let serial: UART16550
    public let rtc: CMOSRTC
    public let keyboardController: I8042
    public let resetControl: ResetControlRegister
    public let powerManagement: ICH9PowerManagement
    public let acpiHotPlug: ACPIHotPlugController

    init(interrupts: any InterruptSink, events: any PlatformEventSink, clock: any PlatformClock,
         serialBackend: any SerialBackend, lpc: ICH9LPC, belowFourGiB: UInt64, aboveFourGiB: UInt64) {
        serial = UART16550(interrupts: interrupts, backend: serialBackend, clock: clock)
        rtc = CMOSRTC(clock: clock, interrupts: interrupts,
                      ram: CMOSRTC.qemuPCLayout(belowFourGiB: belowFourGiB, aboveFourGiB: aboveFourGiB))
        keyboardController = I8042(interrupts: interrupts, events: events)
        resetControl = ResetControlRegister(events: events)
        powerManagement = ICH9PowerManagement(clock: clock, interrupts: interrupts, events: events,
                                              smiLocked: { [lpc] in lpc.smiLocked })
        acpiHotPlug = ACPIHotPlugController(gpe: powerManagement)
    }

    /// Platform reset of every legacy device.
    func reset() {
        serial.reset()
        rtc.reset()
        keyboardController.reset()
        resetControl.reset()
        powerManagement.reset()
        acpiHotPlug.reset()
    }
}

extension Region {
    /// Maps the legacy devices in the I/O space as the LPC's registers say now: the PM block
    /// only while ACPI decoding is on (at PMBASE), and the SCI on the selected interrupt.
    /// (0xCF9 is not mapped here: it shares 0xCF8-0xCFB with CONFIG_ADDRESS, see
    /// `ConfigAddressAndResetControl`.)
    mutating func addLegacyDevices(_ legacy: LegacyDevices, lpc: ICH9LPC) {
        add(.leaf("serial0", size: UART16550.registerCount, handler: legacy.serial), at: UInt64(UART16550.com1Base))
        add(.leaf("rtc", size: CMOSRTC.portCount, handler: legacy.rtc), at: UInt64(CMOSRTC.basePort))
        add(.leaf("i8042-data", size: 1, handler: legacy.keyboardController.port(I8042.dataPort)), at: UInt64(I8042.dataPort))
        add(.leaf("i8042-cmd", size: 1, handler: legacy.keyboardController.port(I8042.commandPort)),
            at: UInt64(I8042.commandPort))
        add(.leaf("apm", size: 2, handler: legacy.powerManagement.apmPorts), at: UInt64(ICH9PowerManagement.apmControlPort))
        add(.leaf("acpi-pci-hotplug", size: ACPIHotPlugController.size, handler: legacy.acpiHotPlug.registers),
            at: UInt64(ACPIHotPlugController.basePort))
        if let pmBase = lpc.pmBase {
            add(.leaf("ich9-pm", size: ICH9PowerManagement.blockSize, handler: legacy.powerManagement.pmBlock),
                at: UInt64(pmBase), priority: 1)
        }
        // A reserved SCI selection keeps the previous interrupt, as QEMU does.
        if let irq = lpc.sciIRQ { legacy.powerManagement.routeSCI(to: GSI(UInt32(irq))) }
    }
}

/// The host's clocks (through HostOS): CLOCK_MONOTONIC and CLOCK_REALTIME.
public struct SystemClock: PlatformClock {
    public init() {}
    public func monotonicNanoseconds() -> UInt64 { HostClock.monotonicNanoseconds() }
    public func wallClockNanoseconds() -> Int64 { HostClock.realtimeNanoseconds() }
}

/// Writes the guest's serial output to a duplicate of a host fd (standard output by
/// default). Output that cannot be written is dropped, as a UART with nothing attached.
public final class FileDescriptorSerialBackend: SerialBackend {
    private let output: FileDescriptor?

    public init(fd: Int32 = 1) {
        output = try? FileDescriptor.duplicating(fd)
    }

    public func transmit(_ bytes: [UInt8]) {
        try? output?.writeAll(bytes)
    }
}

/// Turns device `PlatformEvent`s into `MachineEvent`s for the machine's listeners.
final class PlatformEventForwarder: PlatformEventSink {
    let broadcaster: EventBroadcaster
    init(_ broadcaster: EventBroadcaster) { self.broadcaster = broadcaster }
    func platformEvent(_ event: PlatformEvent) {
        switch event {
        case .resetRequested(let source): broadcaster.emit(.resetRequested(source))
        case .powerOffRequested: broadcaster.emit(.powerOff)
        }
    }
}
