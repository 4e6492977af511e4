import Firmware
import Foundation
import TestRequirements
import Testing

@Suite struct LinuxBootImageTests {
    typealias F = LinuxBootFixtures

    @Test(.requires(F.realKernelPath != nil,
                   "no /boot/vmlinuz-6.1.* installed: `apt-get install linux-image-amd64` provides it"))
    func parsesDebianKernel() throws {
        let path = try #require(F.realKernelPath)
        let bytes = [UInt8](try #require(FileManager.default.contents(atPath: path)))
        let image = try BzImage(bytes: bytes)
        let h = image.header
        #expect(h.version >= BootProtocolVersion(major: 2, minor: 15))
        #expect(h.supports64BitEntry)
        #expect(h.supportsACPIRSDPAddress)
        #expect(h.loadedHigh)
        #expect(h.relocatableKernel)
        #expect(h.kernelAlignment == 0x20_0000)
        #expect(h.prefAddress == 0x100_0000)
        #expect(h.cmdlineSize >= 255)
        #expect(h.initrdAddrMax >= 0x37FF_FFFF)
        let initSize = try #require(h.initSize)
        #expect(UInt64(initSize) >= UInt64(image.protectedModeKernel.count))
        #expect(image.setupSize == (h.setupSects + 1) * 512)
        #expect(image.setupSize + image.protectedModeKernel.count == bytes.count)
        // syssize covers the kernel; a signed image carries only its signature behind it.
        let declared = Int(h.syssize) * 16
        #expect(declared <= image.protectedModeKernel.count)
        #expect(image.protectedModeKernel.count - declared < 0x1_0000)
        #expect(image.rawSetupHeader.count == 0x202 + Int(bytes[0x201]) - 0x1F1)
        #expect(Array(image.rawSetupHeader) == Array(bytes[0x1F1..<(0x1F1 + image.rawSetupHeader.count)]))
    }

    @Test func parsesSyntheticImage() throws {
        let bytes = F.image(setupSects: 6, payloadSize: 0x3000)
        let image = try BzImage(bytes: bytes)
        #expect(image.header.version == BootProtocolVersion(0x020F))
        #expect(image.header.version.description == "2.15")
        #expect(image.setupSize == 7 * 512)
        #expect(image.protectedModeKernel.count == 0x3000)
        #expect(image.protectedModeKernel[0x201] == 0x01)
        #expect(image.header.supports64BitEntry)
        #expect(image.header.initSize == 0x80_0000)
        #expect(image.header.minAlignment == 21)
    }

    @Test func setupSectsZeroMeansFour() throws {
        let image = try BzImage(bytes: F.image(setupSects: 0))
        #expect(image.header.rawSetupSects == 0)
        #expect(image.header.setupSects == 4)
        #expect(image.setupSize == 5 * 512)
    }

    @Test func olderProtocolLacksNewerFields() throws {
        let image = try BzImage(bytes: F.image(version: 0x0206))
        #expect(image.header.initSize == nil)
        #expect(image.header.prefAddress == nil)
        #expect(image.header.xloadflags == nil)
        #expect(!image.header.supports64BitEntry)
        #expect(!image.header.supportsACPIRSDPAddress)
    }

    @Test func everyTruncationIsATypedError() {
        let full = F.image(setupSects: 4, payloadSize: 0x400)
        #expect((try? BzImage(bytes: full)) != nil)
        for length in 0..<full.count {
            #expect(throws: BzImageError.self, "prefix of \(length) bytes") {
                try BzImage(bytes: Array(full[0..<length]))
            }
        }
    }

    @Test func truncationErrorsNameTheField() {
        let full = F.image()
        #expect(throws: BzImageError.truncated(field: "boot_flag", needed: 0x200, fileSize: 0x1F1)) {
            try BzImage(bytes: Array(full[0..<0x1F1]))
        }
        #expect(throws: BzImageError.truncated(field: "header magic", needed: 0x206, fileSize: 0x204)) {
            try BzImage(bytes: Array(full[0..<0x204]))
        }
        #expect(throws: BzImageError.truncated(field: "version", needed: 0x208, fileSize: 0x207)) {
            try BzImage(bytes: Array(full[0..<0x207]))
        }
        #expect(throws: BzImageError.truncated(field: "init_size", needed: 0x264, fileSize: 0x230)) {
            try BzImage(bytes: Array(full[0..<0x230]))
        }
        // Header complete, setup code cut short.
        #expect(throws: BzImageError.noProtectedModeKernel(setupSectors: 4, setupSize: 0xA00, fileSize: 0x900)) {
            try BzImage(bytes: Array(full[0..<0x900]))
        }
        // Setup complete, kernel cut short of syssize.
        #expect(throws: BzImageError.syssizeExceedsFile(declaredBytes: 0x4000, available: 0x100)) {
            try BzImage(bytes: Array(full[0..<0xB00]))
        }
    }

    @Test func badMagicAndBootFlag() {
        var noMagic = F.image()
        noMagic[0x202] = 0x58
        #expect(throws: BzImageError.badMagic(found: 0x5372_6458)) { try BzImage(bytes: noMagic) }
        var noFlag = F.image()
        noFlag[0x1FF] = 0
        #expect(throws: BzImageError.badBootFlag(found: 0x0055)) { try BzImage(bytes: noFlag) }
        #expect(throws: BzImageError.self) { try BzImage(bytes: [UInt8](repeating: 0xFF, count: 0x10000)) }
    }

    @Test func protocolTooOld() {
        #expect(throws: BzImageError.protocolTooOld(version: 0x0205, minimum: 0x0206)) {
            try BzImage(bytes: F.image(version: 0x0205))
        }
        #expect(throws: BzImageError.protocolTooOld(version: 0x0100, minimum: 0x0206)) {
            try BzImage(bytes: F.image(version: 0x0100))
        }
    }

    @Test func zImageIsRejected() {
        #expect(throws: BzImageError.notLoadedHigh(loadflags: 0)) { try BzImage(bytes: F.image(loadflags: 0)) }
    }

    @Test func hugeSetupSects() {
        // 255 setup sectors = 128 KiB of setup code in a 6.5 KiB file.
        var b = F.image(setupSects: 4, payloadSize: 0x1000)
        b[0x1F1] = 0xFF
        #expect(throws: BzImageError.noProtectedModeKernel(setupSectors: 255, setupSize: 256 * 512, fileSize: b.count)) {
            try BzImage(bytes: b)
        }
    }

    @Test func absurdSyssize() {
        #expect(throws: BzImageError.syssizeExceedsFile(declaredBytes: 0xF_FFFF_FFF0, available: 0x4000)) {
            try BzImage(bytes: F.image(syssize: 0xFFFF_FFFF))
        }
    }

    @Test func badKernelAlignment() {
        #expect(throws: BzImageError.invalidKernelAlignment(0x30_0000)) {
            try BzImage(bytes: F.image(kernelAlignment: 0x30_0000))
        }
        #expect(throws: BzImageError.invalidKernelAlignment(0)) { try BzImage(bytes: F.image(kernelAlignment: 0)) }
        // A non-relocatable kernel's alignment is not used.
        #expect((try? BzImage(bytes: F.image(relocatable: 0, kernelAlignment: 0))) != nil)
    }

    @Test func headerCopyIsClampedByJumpByte() throws {
        // A jump byte pointing far past boot_params' header area is clamped to 0x290.
        let far = try BzImage(bytes: F.image(jump: 0xFF))
        #expect(far.rawSetupHeader.count == 0x290 - 0x1F1)
        // One pointing short of the fields the version promises still copies them.
        let short = try BzImage(bytes: F.image(jump: 0x00))
        #expect(short.rawSetupHeader.count == 0x268 - 0x1F1)
    }

    /// Whatever still parses after random header corruption either plans a boot that obeys the
    /// boot protocol (Documentation/arch/x86/boot.rst), checked against the corrupted header
    /// bytes themselves, or is refused; an image without a 64-bit entry is always refused.
    @Test func randomHeaderCorruptionPlansByTheProtocolOrIsRefused() {
        var rng = LinuxBootRNG(seed: 0x5EED)
        let base = F.image(payloadSize: 0x800)
        var planned = 0, refused = 0
        for _ in 0..<3000 {
            var b = base
            for _ in 0..<Int(rng.next() % 8 + 1) {
                let o = 0x1F1 + Int(rng.next() % UInt64(0x270 - 0x1F1))
                b[o] = UInt8(truncatingIfNeeded: rng.next())
            }
            if rng.next() % 4 == 0 { b = Array(b[0..<Int(rng.next() % UInt64(b.count))]) }
            guard let image = try? BzImage(bytes: b) else { continue }
            let header = b
            func raw(_ offset: Int, _ width: Int) -> UInt64 {
                (0..<width).reduce(0) { v, i in offset + i < header.count ? v | UInt64(header[offset + i]) << (8 * UInt64(i)) : v }
            }
            // The 64-bit entry exists from protocol 2.12 on, when XLF_KERNEL_64 (bit 0) is set.
            let has64BitEntry = raw(0x206, 2) >= 0x020C && raw(0x236, 2) & 1 == 1
            let plan: LinuxBootPlan
            do {
                plan = try LinuxBootPlan.make(kernel: image, initrd: [1, 2, 3], commandLine: "console=ttyS0",
                                              memory: F.memory)
            } catch {
                refused += 1
                if !has64BitEntry, case .no64BitEntry = error {} else if !has64BitEntry {
                    Issue.record("an image without a 64-bit entry was refused for another reason: \(error)")
                }
                continue
            }
            planned += 1
            #expect(has64BitEntry, "planned a boot of an image without a 64-bit entry")
            let load = plan.kernelLoadAddress
            #expect(load >= 0x10_0000, "kernel below 1 MiB: 0x\(String(load, radix: 16))")
            if raw(0x234, 1) != 0 {  // relocatable_kernel: load at a multiple of kernel_alignment
                let alignment = raw(0x230, 4)
                #expect(alignment != 0 && load % alignment == 0, "load 0x\(String(load, radix: 16)), alignment 0x\(String(alignment, radix: 16))")
            }
            // F.memory: RAM below 2 GiB and 4-6 GiB.
            let k = plan.kernelFootprint
            #expect(k.base == load && (k.last < 0x8000_0000 || (k.base >= 0x1_0000_0000 && k.last < 0x1_8000_0000)))
            if let r = plan.initrd {
                #expect(r.base % 0x1000 == 0 && r.last <= raw(0x22C, 4) && !r.overlaps(k), "initrd \(r), kernel \(k)")
            } else {
                Issue.record("a 3-byte initrd was not placed")
            }
            // boot_params carries the setup header at the image's offsets, with the loader's fields filled in.
            let bp = plan.bootParams
            func field(_ offset: Int, _ width: Int) -> UInt64 {
                (0..<width).reduce(0) { v, i in v | UInt64(bp[offset + i]) << (8 * UInt64(i)) }
            }
            #expect(field(0x202, 4) == 0x5372_6448)  // "HdrS"
            #expect(field(0x210, 1) == 0xFF)  // type_of_loader: undefined
            #expect(field(0x214, 4) == load & 0xFFFF_FFFF)  // code32_start
            #expect(field(0x228, 4) == plan.commandLineAddress)  // cmd_line_ptr
            #expect(field(0x218, 4) == (plan.initrd?.base ?? 0) && field(0x21C, 4) == 3)  // ramdisk_image, ramdisk_size
        }
        // The corruption must reach both outcomes, or the loop tests nothing.
        #expect(planned > 100 && refused > 100, "planned \(planned), refused \(refused)")
    }
}

struct LinuxBootRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
