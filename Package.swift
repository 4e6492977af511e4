// swift-tools-version:6.1
import PackageDescription

// Warnings are errors in CI (`make test` passes -warnings-as-errors through SWIFT_FLAGS);
// locally they stay warnings so work in progress builds.
let swiftSettings: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "Switchyard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "switchyard", targets: ["switchyard"]),
        .library(name: "SwitchyardMachine", targets: ["Machine"]),
    ],
    targets: [
        // C modules: kernel UAPI headers plus a shim for what Swift cannot import (variadic
        // ioctl, function-like macros), and the host libraries.
        .target(name: "CLinux", path: "Sources/CLinux"),
        // libseccomp (the -sandbox filters) and the async-signal-safe SIGSYS reporter.
        .target(name: "CSeccomp", path: "Sources/CSeccomp", linkerSettings: [.linkedLibrary("seccomp")]),
        .systemLibrary(name: "CPCI", path: "Sources/CPCI"),
        .systemLibrary(name: "CUdev", path: "Sources/CUdev"),
        .systemLibrary(name: "CFDT", path: "Sources/CFDT"),
        // libnl-route-3 (no hand-rolled netlink): macvtap links and SR-IOV VF settings.
        .systemLibrary(name: "CNetlink", path: "Sources/CNetlink", pkgConfig: "libnl-route-3.0"),

        .target(name: "VMMBase", swiftSettings: swiftSettings),
        .target(name: "HostOS", dependencies: ["VMMBase", "CLinux", "CSeccomp"], swiftSettings: swiftSettings),
        .target(name: "GuestMemory", dependencies: ["VMMBase"], swiftSettings: swiftSettings),
        .target(name: "AddressSpace", dependencies: ["VMMBase"], swiftSettings: swiftSettings),
        .target(name: "Interrupts", dependencies: ["VMMBase"], swiftSettings: swiftSettings),
        .target(name: "PCI", dependencies: ["VMMBase", "AddressSpace", "Interrupts", "GuestMemory"],
                swiftSettings: swiftSettings),
        .target(name: "Chipset", dependencies: ["PCI", "AddressSpace", "Interrupts", "VMMBase"],
                resources: [], swiftSettings: swiftSettings),
        .target(name: "Firmware", dependencies: ["VMMBase", "CFDT"], swiftSettings: swiftSettings),
        .target(name: "KVM", dependencies: ["HostOS", "VMMBase", "CLinux"], swiftSettings: swiftSettings),
        .target(name: "HostDevices", dependencies: ["HostOS", "VMMBase", "CPCI", "CUdev", "CLinux"],
                swiftSettings: swiftSettings),
        // VFIO: the narrow kernel protocol (container, group, device ioctls), its real
        // implementation and a recording twin for hosts without VFIO.
        .target(name: "VFIO", dependencies: ["HostOS", "VMMBase", "CLinux"], swiftSettings: swiftSettings),
        // A host PCI function assigned to the guest: virtualized config space over VFIO.
        .target(name: "PCIPassthrough", dependencies: ["PCI", "VFIO", "AddressSpace", "Interrupts", "GuestMemory", "HostOS", "VMMBase"],
                resources: [.embedInCode("Quirks/vfio-quirks.txt")],  // a link to DeviceTables/vfio-quirks.txt
                swiftSettings: swiftSettings),
        // tap and macvtap queues, macvtap links and SR-IOV VF settings through libnl.
        .target(name: "HostNetwork", dependencies: ["HostOS", "VMMBase", "CLinux", "CNetlink"], swiftSettings: swiftSettings),
        // virtio 1.x over PCI: the modern transport and split virtqueues over the DMA port.
        .target(name: "Virtio", dependencies: ["PCI", "AddressSpace", "Interrupts", "GuestMemory", "HostOS", "VMMBase"],
                swiftSettings: swiftSettings),
        .target(name: "VirtioNet", dependencies: ["Virtio", "HostNetwork", "PCI", "HostOS", "VMMBase"],
                swiftSettings: swiftSettings),
        .target(name: "Machine",
                dependencies: ["Chipset", "PCI", "AddressSpace", "Interrupts", "GuestMemory",
                               "HostOS", "KVM", "Firmware", "VMMBase", "VFIO", "PCIPassthrough",
                               "Virtio", "VirtioNet", "HostNetwork"],
                swiftSettings: swiftSettings),
        .target(name: "Control", dependencies: ["Machine", "Chipset", "PCI", "VMMBase", "HostDevices", "HostNetwork"],
                swiftSettings: swiftSettings),
        .executableTarget(name: "switchyard", dependencies: ["Control", "Machine", "VMMBase", "HostOS"],
                          swiftSettings: swiftSettings),
        // Fuzz targets (Fuzz/README.md): a corpus replayer in a plain build, libFuzzer's entry
        // points when built with -DFUZZING -sanitize=fuzzer,address (make fuzz).
        .executableTarget(name: "switchyard-fuzz", dependencies: ["Control", "Machine", "Firmware", "GuestMemory", "VFIO", "VMMBase"], path: "Fuzz/Sources",
                          swiftSettings: swiftSettings),

        // `.requires(...)`: a missing tool or host capability is a visible skip, a failure under CI.
        .target(name: "TestRequirements", path: "Tests/TestRequirements", swiftSettings: swiftSettings),
        // A recording twin of the machine's in-kernel message routes, for the tests of the
        // functions that use them.
        .target(name: "RoutingTwins", dependencies: ["PCI", "HostOS", "VMMBase"], path: "Tests/RoutingTwins", swiftSettings: swiftSettings),
        // ThreadSanitizer annotations for Synchronization.Mutex's contended paths (empty unless
        // built with --sanitize=thread); linked into the test binary through MachineTests.
        .target(name: "TSanMutexAnnotations", path: "Tests/TSanMutexAnnotations"),

        .testTarget(name: "VMMBaseTests", dependencies: ["VMMBase"], swiftSettings: swiftSettings),
        .testTarget(name: "FirmwareTests", dependencies: ["Firmware", "VMMBase", "TestRequirements"], swiftSettings: swiftSettings),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "HostOS", "VMMBase", "TestRequirements"], swiftSettings: swiftSettings),
        .testTarget(name: "HostOSTests", dependencies: ["HostOS", "TestRequirements"], swiftSettings: swiftSettings),
        .testTarget(name: "GuestMemoryTests", dependencies: ["GuestMemory", "VMMBase"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "HostDevicesTests", dependencies: ["HostDevices", "HostOS", "VMMBase", "TestRequirements"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "AddressSpaceTests", dependencies: ["AddressSpace", "VMMBase", "TestRequirements"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "InterruptsTests", dependencies: ["Interrupts", "VMMBase"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "PCITests", dependencies: ["PCI", "VMMBase", "TestRequirements"], swiftSettings: swiftSettings),
        .testTarget(name: "ChipsetTests", dependencies: ["Chipset", "PCI", "VMMBase", "AddressSpace", "Interrupts", "TestRequirements"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "MachineTests", dependencies: ["Machine", "Virtio", "Chipset", "PCI", "VMMBase", "Firmware", "KVM", "Interrupts", "GuestMemory", "VFIO", "TestRequirements", "TSanMutexAnnotations"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "ControlTests", dependencies: ["Control", "Machine", "VMMBase", "PCI", "HostDevices", "TestRequirements"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "VFIOTests", dependencies: ["VFIO", "HostOS", "VMMBase", "TestRequirements"], swiftSettings: swiftSettings),
        .testTarget(name: "PCIPassthroughTests", dependencies: ["PCIPassthrough", "VFIO", "PCI", "Interrupts", "GuestMemory", "VMMBase", "TestRequirements", "RoutingTwins"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "HostNetworkTests", dependencies: ["HostNetwork", "HostOS", "VMMBase", "TestRequirements"], swiftSettings: swiftSettings),
        .testTarget(name: "VirtioTests", dependencies: ["Virtio", "VirtioNet", "HostNetwork", "HostOS", "PCI", "GuestMemory", "Interrupts", "VMMBase", "TestRequirements", "RoutingTwins"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "VirtioNetTests", dependencies: ["VirtioNet", "Virtio", "HostNetwork", "PCI", "GuestMemory", "HostOS", "VMMBase", "TestRequirements"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "IntegrationTests",
                    dependencies: ["Control", "Machine", "Chipset", "PCI", "VMMBase", "KVM", "Firmware", "TestRequirements", "VFIO",
                                   "HostNetwork", "HostOS"],
                    swiftSettings: swiftSettings),
        // The fuzz targets' machine kept across inputs (Fuzz/Sources/ReusedMachine.swift).
        .testTarget(name: "FuzzTests", dependencies: ["switchyard-fuzz", "Machine", "Chipset", "PCI", "GuestMemory", "VMMBase", "TestRequirements"],
                    swiftSettings: swiftSettings),
    ]
)
