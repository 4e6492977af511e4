import VMMBase

/// What answers accesses to a leaf region. Offsets are relative to the region's start.
/// Implementations synchronise their own state: the same handler may be called from
/// several vCPU threads.
public protocol IORegionHandler: AnyObject, Sendable {
    func read(offset: UInt64, width: AccessWidth) -> UInt64
    func write(offset: UInt64, width: AccessWidth, value: UInt64)
}

/// A node of a region tree: a leaf with a handler, a container of subregions, or an alias
/// that shows a window of another region (how a bridge window exposes its secondary bus).
/// Trees are values; they are flattened into a `FlatView` for dispatch.
public struct Region: Sendable {
    /// A container's list is held in the enum itself, not boxed: `add` then grows it in place
    /// instead of boxing a new content for every subregion.
    public enum Content: Sendable {
        indirect case handler(any IORegionHandler)
        case container([Subregion])
        /// Shows `target` from `targetOffset` on, for the alias's size.
        indirect case alias(target: Region, targetOffset: UInt64)
    }

    public var name: String
    public var size: UInt64
    public var content: Content

    public init(name: String, size: UInt64, content: Content) {
        self.name = name
        self.size = size
        self.content = content
    }

    public static func leaf(_ name: String, size: UInt64, handler: any IORegionHandler) -> Region {
        Region(name: name, size: size, content: .handler(handler))
    }

    public static func container(_ name: String, size: UInt64, _ children: [Subregion] = []) -> Region {
        Region(name: name, size: size, content: .container(children))
    }

    public static func alias(_ name: String, of target: Region, offset: UInt64, size: UInt64) -> Region {
        Region(name: name, size: size, content: .alias(target: target, targetOffset: offset))
    }

    /// Adds a subregion to a container. Higher priority wins where subregions overlap;
    /// among equal priorities the one added later wins.
    public mutating func add(_ region: Region, at base: UInt64, priority: Int = 0) {
        guard case .container(var children) = content else {
            preconditionFailure("add(_:at:) on a non-container region \(name)")
        }
        // Release the tree's own reference first, so the append grows `children` in place
        // instead of copying it: adding n subregions costs O(n), not O(n^2), and allocates
        // only when the list's storage grows.
        content = .container([])
        children.append(Subregion(base: base, priority: priority, region: region))
        content = .container(children)
    }
}

public struct Subregion: Sendable {
    public var base: UInt64
    public var priority: Int
    public var region: Region

    public init(base: UInt64, priority: Int = 0, region: Region) {
        self.base = base
        self.priority = priority
        self.region = region
    }
}
