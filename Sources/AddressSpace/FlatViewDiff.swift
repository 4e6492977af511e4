/// What a commit changed in one flat view: the entries only the old view had and the
/// entries only the new one has. An entry that kept its range, offset, handler and name is
/// in neither list, so listeners touch only what moved.
public struct FlatViewDiff: Sendable {
    public let removed: [FlatView.Entry]
    public let added: [FlatView.Entry]

    public var isEmpty: Bool { removed.isEmpty && added.isEmpty }

    /// One merge over both sorted entry lists: linear in the number of entries.
    public init(from old: FlatView, to new: FlatView) {
        var removed: [FlatView.Entry] = [], added: [FlatView.Entry] = []
        let a = old.entries, b = new.entries
        var i = 0, j = 0
        while i < a.count || j < b.count {
            if i < a.count, j < b.count, a[i].isSameMapping(as: b[j]) {
                i += 1
                j += 1
            } else if j == b.count || (i < a.count && a[i].range.base <= b[j].range.base) {
                removed.append(a[i])
                i += 1
            } else {
                added.append(b[j])
                j += 1
            }
        }
        self.removed = removed
        self.added = added
    }
}

extension FlatView.Entry {
    /// Same addresses served by the same handler at the same offset.
    public func isSameMapping(as other: FlatView.Entry) -> Bool {
        range == other.range && handlerOffset == other.handlerOffset && handler === other.handler && name == other.name
    }
}
