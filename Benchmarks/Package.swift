// swift-tools-version:6.1
import PackageDescription

// A path dependency's package identity is its folder's name, which differs between clones and
// worktrees (the root package is "Switchyard" but may be checked out as main/, bench/, ...).
let rootPackageIdentity = Context.packageDirectory
    .split(separator: "/").dropLast().last.map(String.init) ?? "switchyard"

// Benchmarks for Switchyard, kept in their own package so that the root package does not
// depend on package-benchmark. Run them with `make bench` from the root or `./report.sh` here.
let package = Package(
    name: "SwitchyardBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        // The MallocInterposer trait (and not the default traits) avoids jemalloc and the
        // Swift 6.3 runtime interposer, neither of which this machine has.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1",
                 traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "ConfigAccess",
            dependencies: [
                .product(name: "SwitchyardMachine", package: rootPackageIdentity),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/ConfigAccess",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark"),
            ]
        ),
        .executableTarget(
            name: "HotPlug",
            dependencies: [
                .product(name: "SwitchyardMachine", package: rootPackageIdentity),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/HotPlug",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark"),
            ]
        ),
        .executableTarget(
            name: "TapDatapath",
            dependencies: [
                .product(name: "SwitchyardMachine", package: rootPackageIdentity),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/TapDatapath",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark"),
            ]
        ),
        .executableTarget(
            name: "VFIODMA",
            dependencies: [
                .product(name: "SwitchyardMachine", package: rootPackageIdentity),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/VFIODMA",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark"),
            ]
        ),
    ]
)
