/// A function that may carry an SR-IOV capability. Its virtual functions are not attached to
/// the bus: they answer at their routing IDs while software has VF Enable set, so disabling
/// VFs, resetting or removing the physical function makes them vanish with nothing to undo.
public protocol SRIOVPhysicalFunction: PCIFunction {
    /// Fixed at creation: whether the function has the SR-IOV capability at all.
    var isSRIOVCapable: Bool { get }
    /// The enabled VF whose routing ID lies `offset` past this function's, or nil.
    func virtualFunction(atRoutingOffset offset: Int) -> (any PCIFunction)?
    /// Every enabled VF in VF order, with its routing-ID offset and 0-based VF number.
    var enabledVirtualFunctions: [EnabledVirtualFunction] { get }
}

public struct EnabledVirtualFunction: Sendable {
    public let routingOffset: Int
    /// 0-based: the spec's VF 1 is index 0.
    public let index: Int
    public let function: any PCIFunction

    public init(routingOffset: Int, index: Int, function: any PCIFunction) {
        self.routingOffset = routingOffset
        self.index = index
        self.function = function
    }
}

/// The virtual functions of one physical function, kept under the physical function's lock:
/// each is made on first use while enabled and dropped once VF Enable or NumVFs no longer
/// covers it, so re-enabling brings fresh functions, as a VF's state does not survive
/// VF Enable going to 0 (SR-IOV 1.1, 3.3.3.1).
public struct VirtualFunctionTable: Sendable {
    public typealias Factory = @Sendable (_ index: Int) -> any PCIFunction
    private var made: [Int: any PCIFunction] = [:]
    private let make: Factory

    public init(make: @escaping Factory) { self.make = make }

    public mutating func function(atRoutingOffset offset: Int, state: SRIOVState?) -> (any PCIFunction)? {
        guard let index = state?.vfIndex(atRoutingOffset: offset) else { return nil }
        return obtain(index)
    }

    public mutating func enabled(state: SRIOVState?) -> [EnabledVirtualFunction] {
        guard let state else { return [] }
        return (0..<state.activeVFs).map {
            EnabledVirtualFunction(routingOffset: state.routingIDOffset(ofVF: $0), index: $0, function: obtain($0))
        }
    }

    /// Forgets the VFs `state` no longer enables.
    public mutating func release(outside state: SRIOVState?) {
        let active = state?.activeVFs ?? 0
        made = made.filter { $0.key < active }
    }

    private mutating func obtain(_ index: Int) -> any PCIFunction {
        if let existing = made[index] { return existing }
        let function = make(index)
        made[index] = function
        return function
    }
}
