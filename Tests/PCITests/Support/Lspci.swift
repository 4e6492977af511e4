import VMMBase
import PCI
import TestRequirements

/// Runs the real `lspci` over config spaces (TestRequirements' RealLspci over their bytes).
enum Lspci {
    static var isInstalled: Bool { RealLspci.isInstalled }

    static func dump(_ functions: [(address: String, config: ConfigSpace)]) -> String {
        RealLspci.dump(functions.map { ($0.address, Array($0.config.bytes.prefix($0.config.size))) })
    }

    static func decode(_ functions: [(address: String, config: ConfigSpace)], arguments: [String]) throws -> String {
        try RealLspci.decode(functions.map { ($0.address, Array($0.config.bytes.prefix($0.config.size))) }, arguments: arguments)
    }
}
