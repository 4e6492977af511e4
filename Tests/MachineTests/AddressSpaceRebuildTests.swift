import AddressSpace
import Foundation
import PCI
import Synchronization
import Testing
import VMMBase
@testable import Machine

/// The PCI layer is rebuilt on demand outside the lock. A change (a device leaving) that
/// lands while a rebuild is under way must not be lost: the view built from the older state
/// may serve the access that built it, but is never cached for the accesses after the change.
@Suite struct AddressSpaceRebuildTests {
    final class Marker: IORegionHandler {
        let value: UInt64
        init(_ value: UInt64) { self.value = value }
        func read(offset: UInt64, width: AccessWidth) -> UInt64 { value }
        func write(offset: UInt64, width: AccessWidth, value: UInt64) {}
    }

    @Test func anInvalidationDuringARebuildIsNotLost() {
        let builds = Mutex(0)
        let entered = DispatchSemaphore(value: 0), proceed = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
        let spaces = MachineAddressSpaces(rootBus: PCIBus(name: "pcie.0"), barWriteObserver: { _ in }, composePCI: {
            let number = builds.withLock { $0 += 1; return $0 }
            if number == 1 {
                entered.signal()
                proceed.wait()
            }
            var memory = Region.container("pci", size: .max)
            memory.add(.leaf("build-\(number)", size: 4, handler: Marker(UInt64(number))), at: 0x1000)
            return (memory, Region.container("pci-io", size: 1 << 16))
        }, composePlatform: { (Region.container("system", size: .max), Region.container("io", size: 1 << 16)) })

        let thread = Thread {
            _ = spaces.read(io: false, at: 0x1000, width: .dword)
            done.signal()
        }
        thread.start()
        entered.wait()           // build 1 has read the old topology...
        spaces.invalidatePCI()   // ...when a device leaves
        proceed.signal()
        done.wait()
        // Every access after the change sees a view built after it.
        #expect(spaces.read(io: false, at: 0x1000, width: .dword) >= 2)
        #expect(builds.withLock { $0 } == 2)
    }
}
