import AddressSpace
import Chipset
import Foundation
import PCI
import Synchronization
import Testing
import VMMBase
@testable import Machine

/// Every change commits new views before it returns. A commit whose composition is overtaken
/// by a newer one must not replace it (no lost invalidation), and once a commit returns no
/// access reaches a region it removed (the grace period).
@Suite struct AddressSpaceRebuildTests {
    final class Marker: IORegionHandler {
        let value: UInt64
        init(_ value: UInt64) { self.value = value }
        func read(offset: UInt64, width: AccessWidth) -> UInt64 { value }
        func write(offset: UInt64, width: AccessWidth, value: UInt64) {}
    }

    /// Stands for the topology: a number bumped by every change.
    final class Topology: Sendable {
        let state = Mutex(0)
        func change() -> Int { state.withLock { $0 += 1; return $0 } }
        func set(_ value: Int) { state.withLock { $0 = value } }
        var value: Int { state.withLock { $0 } }
    }

    /// A PCI layer showing one marker region whose value is the topology state it was composed from.
    static func spaces(state: Topology, beforeCompose: @escaping @Sendable (Int) -> Void = { _ in }) -> MachineAddressSpaces {
        MachineAddressSpaces(rootBus: PCIBus(name: "pcie.0"), barWriteObserver: { _ in }, composePCI: {
            let seen = state.value
            beforeCompose(seen)
            var memory = Region.container("pci", size: .max)
            memory.add(.leaf("state-\(seen)", size: 4, handler: Marker(UInt64(seen))), at: 0x1000)
            return (memory, Region.container("pci-io", size: 1 << 16))
        }, composePlatform: { (Region.container("system", size: .max), Region.container("io", size: 1 << 16)) })
    }

    @Test func aCommitOvertakenByANewerOneDoesNotReplaceIt() {
        let state = Topology()
        let entered = DispatchSemaphore(value: 0), proceed = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
        let stallFirst = Mutex(false)
        let spaces = Self.spaces(state: state) { seen in
            guard seen == 1, stallFirst.withLock({ let first = !$0; $0 = true; return first }) else { return }
            entered.signal()
            proceed.wait()
        }
        state.set(1)
        let thread = Thread {
            spaces.invalidatePCI()   // composes state 1, then stalls
            done.signal()
        }
        thread.start()
        entered.wait()
        state.set(2)  // a device leaves...
        spaces.invalidatePCI()     // ...and its commit publishes state 2 first
        #expect(spaces.read(io: false, at: 0x1000, width: .dword) == 2)
        proceed.signal()
        done.wait()
        #expect(spaces.read(io: false, at: 0x1000, width: .dword) == 2)
    }

    @Test func concurrentChangesAreNeverLost() {
        let state = Topology()
        let spaces = Self.spaces(state: state)
        let threads = 4, changesEach = 150
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            for _ in 0..<changesEach {
                let mine = state.change()
                spaces.invalidatePCI()
                // When a commit returns, the view is at least as new as the change it followed.
                let seen = spaces.read(io: false, at: 0x1000, width: .dword)
                if seen < UInt64(mine) { Issue.record("commit for state \(mine) returned with state \(seen) published") }
            }
        }
        #expect(spaces.read(io: false, at: 0x1000, width: .dword) == UInt64(threads * changesEach))
    }

    /// The issue's hot-plug case: threads keep writing a device's BAR while it is surprise-removed;
    /// from DEVICE_DELETED on, nothing reaches the device (its scratch register stays as it was).
    @Test func noAccessReachesARemovedDeviceAfterDeviceDeleted() throws {
        for round in 0..<8 {
            let machine = try Machine(MachineConfiguration(devices: [
                try DeviceSpec(parsing: "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x2"),
                try DeviceSpec(parsing: "pci-testdev,id=t1,bus=rp1"),
            ]))
            try machine.runFirmware()
            let device = try #require(machine.device(id: "t1")).function
            let bar = try #require(device.configSnapshot().decodedBARRange(1))  // the 32-bit memory BAR
            machine.mmioWrite(bar.base, width: .dword, value: 0x1234)
            #expect(device.barRead(1, offset: 0, width: .dword) == 0x1234, "BAR1 scratch is not reachable before the unplug")

            let atDeletion = Mutex<UInt64?>(nil)
            _ = machine.addEventListener { event in
                guard case .deviceDeleted = event else { return }
                atDeletion.withLock { $0 = device.barRead(1, offset: 0, width: .dword) }
            }
            let stop = Atomic<Bool>(false)
            let finished = DispatchGroup()
            for writer in 0..<2 {
                finished.enter()
                Thread {
                    var value = UInt64(writer) << 24
                    while !stop.load(ordering: .relaxed) {
                        value &+= 1
                        machine.mmioWrite(bar.base, width: .dword, value: value & 0xFFFF_FFFF)
                    }
                    finished.leave()
                }.start()
            }
            Thread.sleep(forTimeInterval: 0.002)
            try machine.unplug(id: "t1", mode: .surprise)
            Thread.sleep(forTimeInterval: 0.01)
            stop.store(true, ordering: .relaxed)
            finished.wait()
            let snapshot = try #require(atDeletion.withLock { $0 }, "no DEVICE_DELETED in round \(round)")
            #expect(device.barRead(1, offset: 0, width: .dword) == snapshot,
                    "a write reached the device after DEVICE_DELETED (round \(round))")
            #expect(machine.mmioRead(bar.base, width: .dword) == 0xFFFF_FFFF)
        }
    }
}
