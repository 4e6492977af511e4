import VMMBase

// Decoding the info structs and their capability chains into the protocol's values.

extension VFIORegionInfo {
    init(decoding b: IoctlBuffer) {
        let flags = b[u32: 4]
        self.init(index: b[u32: 8], readable: flags & VFIOLayout.regionFlagRead != 0,
                  writable: flags & VFIOLayout.regionFlagWrite != 0, mappable: flags & VFIOLayout.regionFlagMmap != 0,
                  size: b[u64: 16], offset: b[u64: 24])
        guard flags & VFIOLayout.regionFlagCaps != 0 else { return }
        for cap in b.capabilities(first: b[u32: 12]) {
            let body = cap.offset + 8
            switch cap.id {
            case VFIOLayout.regionCapSparseMmap where b.has(body, 8):
                // struct vfio_region_info_cap_sparse_mmap: nr_areas, reserved, areas[] of {offset, size}
                let count = Int(b[u32: body])
                var areas: [VFIOMappableArea] = []
                for i in 0..<min(count, 1024) where b.has(body + 8 + 16 * i, 16) {
                    let at = body + 8 + 16 * i
                    areas.append(VFIOMappableArea(offset: b[u64: at], size: b[u64: at + 8]))
                }
                sparseAreas = areas.filter { $0.size > 0 }
            case VFIOLayout.regionCapType where b.has(body, 8):
                regionType = VFIORegionType(type: b[u32: body], subtype: b[u32: body + 4])
            case VFIOLayout.regionCapMSIXMappable:
                msixMappable = true
            default:
                continue
            }
        }
    }
}

extension VFIOIOMMUInfo {
    init(decoding b: IoctlBuffer) {
        let flags = b[u32: 4]
        self.init(pageSizes: flags & VFIOLayout.iommuFlagPageSizes != 0 ? b[u64: 8] : 0)
        guard flags & VFIOLayout.iommuFlagCaps != 0 else { return }
        for cap in b.capabilities(first: b[u32: 16]) {
            let body = cap.offset + 8
            switch cap.id {
            case VFIOLayout.iommuCapIOVARange where b.has(body, 8):
                // struct vfio_iommu_type1_info_cap_iova_range: nr_iovas, reserved, iova_ranges[] of {start, end}
                let count = Int(b[u32: body])
                for i in 0..<min(count, 1024) where b.has(body + 8 + 16 * i, 16) {
                    let at = body + 8 + 16 * i
                    iovaRanges.append(VFIOIOVARange(start: b[u64: at], end: b[u64: at + 8]))
                }
            case VFIOLayout.iommuCapDMAAvailable where b.has(body, 4):
                // struct vfio_iommu_type1_info_dma_avail: avail
                dmaMappingsAvailable = b[u32: body]
            default:
                continue
            }
        }
    }
}

extension VFIODeviceInfo {
    init(decoding b: IoctlBuffer) {
        let flags = b[u32: 4]
        self.init(supportsReset: flags & VFIOLayout.deviceFlagReset != 0, isPCI: flags & VFIOLayout.deviceFlagPCI != 0,
                  regionCount: b[u32: 8], irqCount: b[u32: 12])
    }
}

extension VFIOIRQInfo {
    init(decoding b: IoctlBuffer) {
        let flags = b[u32: 4]
        self.init(index: b[u32: 8], count: b[u32: 12], eventfd: flags & VFIOLayout.irqFlagEventfd != 0,
                  maskable: flags & VFIOLayout.irqFlagMaskable != 0, automasked: flags & VFIOLayout.irqFlagAutomasked != 0,
                  noResize: flags & VFIOLayout.irqFlagNoResize != 0)
    }
}

extension VFIOIRQRequest {
    /// struct vfio_irq_set for this request.
    var encoded: IoctlBuffer {
        let (flags, data): (UInt32, [Int32]) = switch operation {
        case .trigger(let fds): (VFIOLayout.irqSetDataEventfd | VFIOLayout.irqSetActionTrigger, fds.map { $0 ?? -1 })
        case .disable: (VFIOLayout.irqSetDataNone | VFIOLayout.irqSetActionTrigger, [])
        case .mask: (VFIOLayout.irqSetDataNone | VFIOLayout.irqSetActionMask, [])
        case .unmask: (VFIOLayout.irqSetDataNone | VFIOLayout.irqSetActionUnmask, [])
        case .unmaskOnEventfd(let fd): (VFIOLayout.irqSetDataEventfd | VFIOLayout.irqSetActionUnmask, [fd ?? -1])
        }
        var b = IoctlBuffer.withArgsz(VFIOLayout.irqSetHeaderSize + 4 * data.count)
        b[u32: 4] = flags
        b[u32: 8] = index
        b[u32: 12] = start
        b[u32: 16] = count
        for (i, fd) in data.enumerated() { b[u32: VFIOLayout.irqSetHeaderSize + 4 * i] = UInt32(bitPattern: fd) }
        return b
    }
}
