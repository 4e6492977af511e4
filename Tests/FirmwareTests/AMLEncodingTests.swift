import Testing
@testable import Firmware

// Expected bytes below are derived by hand from ACPI 6.5 §20 (AML grammar) and §6.4 (resources).

/// Parses at run time (a literal argument would pick the trapping literal initializer).
func parseName(_ text: String) throws -> AMLName { try AMLName(text) }

@Suite("AML encodings")
struct AMLEncodingTests {
    @Test("PkgLength uses 1-4 bytes at the 63 / 4095 / 1 MiB boundaries, counting itself")
    func packageLengthBoundaries() throws {
        // One byte: total (body + 1) up to 0x3F.
        #expect(try AMLEncoding.packageLength(bodyLength: 0) == [0x01])
        #expect(try AMLEncoding.packageLength(bodyLength: 62) == [0x3F])
        // 63 bytes of body need two length bytes: total 65 = 0x041 -> 0x41 0x04.
        #expect(try AMLEncoding.packageLength(bodyLength: 63) == [0x41, 0x04])
        // Largest two-byte total is 0xFFF: body 0xFFD.
        #expect(try AMLEncoding.packageLength(bodyLength: 0xFFD) == [0x4F, 0xFF])
        // Next needs three bytes: total 0xFFE + 3 = 0x1001 -> 0x81 0x00 0x01.
        #expect(try AMLEncoding.packageLength(bodyLength: 0xFFE) == [0x81, 0x00, 0x01])
        #expect(try AMLEncoding.packageLength(bodyLength: 0xFFFFC) == [0x8F, 0xFF, 0xFF])
        #expect(try AMLEncoding.packageLength(bodyLength: 0xFFFFD) == [0xC1, 0x00, 0x00, 0x01])
        #expect(throws: AMLError.self) { try AMLEncoding.packageLength(bodyLength: 0x0FFF_FFFC) }
        // Field widths do not count themselves.
        #expect(try AMLEncoding.fieldLength(32) == [0x20])
        #expect(try AMLEncoding.fieldLength(0x3F) == [0x3F])
        #expect(try AMLEncoding.fieldLength(0x40) == [0x40, 0x04])
    }

    @Test("Integers take the shortest prefix")
    func integers() {
        #expect(AML.int(0).bytes == [0x00])
        #expect(AML.int(1).bytes == [0x01])
        #expect(AML.int(UInt64.max).bytes == [0xFF])
        #expect(AML.int(2).bytes == [0x0A, 0x02])
        #expect(AML.int(0xFF).bytes == [0x0A, 0xFF])
        #expect(AML.int(0x100).bytes == [0x0B, 0x00, 0x01])
        #expect(AML.int(0xFFFF).bytes == [0x0B, 0xFF, 0xFF])
        #expect(AML.int(0x10000).bytes == [0x0C, 0x00, 0x00, 0x01, 0x00])
        #expect(AML.int(0xFFFF_FFFF).bytes == [0x0C, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(AML.int(0x1_0000_0000).bytes == [0x0E, 0, 0, 0, 0, 1, 0, 0, 0])
    }

    @Test("Names: segments pad with '_', root/parent prefixes, dual and multi paths")
    func names() throws {
        #expect(try parseName("PCI0").bytes == Array("PCI0".utf8))
        #expect(try parseName("S8").bytes == Array("S8__".utf8))
        #expect(try parseName("\\").bytes == [0x5C, 0x00])
        #expect(try parseName("\\_SB").bytes == [0x5C] + Array("_SB_".utf8))
        #expect(try parseName("\\_SB.PCI0").bytes == [0x5C, 0x2E] + Array("_SB_PCI0".utf8))
        #expect(try parseName("\\_SB.PCI0.ISA").bytes == [0x5C, 0x2F, 0x03] + Array("_SB_PCI0ISA_".utf8))
        #expect(try parseName("^^BSEL").bytes == [0x5E, 0x5E] + Array("BSEL".utf8))
        #expect(throws: AMLError.self) { try parseName("1ABC") }
        #expect(throws: AMLError.self) { try parseName("ABCDE") }
        #expect(throws: AMLError.self) { try parseName("pci0") }
        #expect(throws: AMLError.self) { try parseName("\\_SB..X") }
        #expect(throws: AMLError.self) { try parseName("^") }
    }

    @Test("Strings, buffers, packages, EISAID and ToUUID")
    func dataObjects() throws {
        #expect(try AML.string("AB").bytes == [0x0D, 0x41, 0x42, 0x00])
        #expect(try AML.buffer([1, 2]).bytes == [0x11, 0x05, 0x0A, 0x02, 0x01, 0x02])
        #expect(try AML.package([.zero, .one]).bytes == [0x12, 0x04, 0x02, 0x00, 0x01])
        // PNP0A08: 'P'=0x10,'N'=0x0E,'P'=0x10 -> 0x41D0, digits 0x0A08.
        #expect(try AML.eisaID("PNP0A08").bytes == [0x0C, 0x41, 0xD0, 0x0A, 0x08])
        #expect(try AML.eisaID("PNP0C0F").bytes == [0x0C, 0x41, 0xD0, 0x0C, 0x0F])
        let uuid = try AML.uuid("33DB4D5B-1FF7-401C-9657-7441C03DD766")
        #expect(uuid.bytes == [0x11, 0x13, 0x0A, 0x10,
                               0x5B, 0x4D, 0xDB, 0x33, 0xF7, 0x1F, 0x1C, 0x40,
                               0x96, 0x57, 0x74, 0x41, 0xC0, 0x3D, 0xD7, 0x66])
    }

    @Test("Named objects, methods, control flow and operators")
    func namedObjectsAndStatements() throws {
        #expect(AML.nameDecl("_ADR", .int(0x1F0000)).bytes == [0x08] + Array("_ADR".utf8) + [0x0C, 0x00, 0x00, 0x1F, 0x00])
        let method = try AML.method("PCEJ", arguments: 2, serialized: true) {
            AML.acquire(.name("BLCK"))
            AML.store(.arg(0), .name("BNUM"))
            AML.store(.shiftLeft(.one, .arg(1)), .name("B0EJ"))
            AML.release(.name("BLCK"))
            AML.return(.zero)
        }
        var body: [UInt8] = Array("PCEJ".utf8) + [0x0A]
        body += [0x5B, 0x23] + Array("BLCK".utf8) + [0xFF, 0xFF]
        body += [0x70, 0x68] + Array("BNUM".utf8)
        body += [0x70, 0x79, 0x01, 0x69, 0x00] + Array("B0EJ".utf8)
        body += [0x5B, 0x27] + Array("BLCK".utf8)
        body += [0xA4, 0x00]
        #expect(method.bytes == [0x14, UInt8(body.count + 1)] + body)

        let cond = try AML.if(.lEqual(.local(0), .int(3))) { AML.increment(.local(0)) }
        #expect(cond.bytes == [0xA0, 0x07, 0x93, 0x60, 0x0A, 0x03, 0x75, 0x60])
        #expect(try AML.else { AML.break }.bytes == [0xA1, 0x02, 0xA5])
        #expect(try AML.while(.one) { AML.noop }.bytes == [0xA2, 0x03, 0x01, 0xA3])
        #expect(AML.notify(.name("S00"), .int(3)).bytes == [0x86] + Array("S00_".utf8) + [0x0A, 0x03])
        #expect(AML.and(.arg(0), .int(0x0F), target: .local(1)).bytes == [0x7B, 0x68, 0x0A, 0x0F, 0x61])
        #expect(AML.or(.arg(0), .int(0x80), target: .arg(0)).bytes == [0x7D, 0x68, 0x0A, 0x80, 0x68])
        #expect(try AML.mutex("BLCK").bytes == [0x5B, 0x01] + Array("BLCK".utf8) + [0x00])
        let dev = try AML.device("LNKA") { AML.nameDecl("_UID", .zero) }
        #expect(dev.bytes == [0x5B, 0x82, 0x0B] + Array("LNKA".utf8) + [0x08] + Array("_UID".utf8) + [0x00])
    }

    @Test("OperationRegion and Field with offsets and access")
    func regionsAndFields() throws {
        let region = AML.operationRegion("PIRQ", .pciConfig, offset: .int(0x60), length: .int(0x0C))
        #expect(region.bytes == [0x5B, 0x80] + Array("PIRQ".utf8) + [0x02, 0x0A, 0x60, 0x0A, 0x0C])
        let field = try AML.field("PIRQ", access: .byte, update: .preserve, [
            .named("PRQA", bits: 8), .offset(bytes: 8), .named("PRQE", bits: 8),
        ])
        // Offset(8) after 8 bits is a 56-bit reserved field.
        let body: [UInt8] = Array("PIRQ".utf8) + [0x01] + Array("PRQA".utf8) + [0x08, 0x00, 0x38] + Array("PRQE".utf8) + [0x08]
        #expect(field.bytes == [0x5B, 0x81, UInt8(body.count + 1)] + body)
        let dw = try AML.field("PCST", access: .dword, update: .writeAsZeros, [.named("PCIU", bits: 32)])
        #expect(dw.bytes[7] == 0x43) // DWordAcc | WriteAsZeros << 5
        #expect(throws: AMLError.self) { try AML.field("X", access: .byte, [.named("A", bits: 16), .offset(bytes: 1)]) }
    }

    @Test("Resource descriptors and EndTag checksum")
    func resources() throws {
        #expect(ResourceDescriptor.io(minimum: 0x3F8, maximum: 0x3F8, alignment: 0, length: 8).bytes
                == [0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x00, 0x08])
        #expect(try ResourceDescriptor.irqNoFlags([4]).bytes == [0x22, 0x10, 0x00])
        #expect(try ResourceDescriptor.wordBusNumber(minimum: 0, maximum: 0xFF).bytes
                == [0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00, 0, 0, 0, 0, 0xFF, 0, 0, 0, 0x00, 0x01])
        #expect(try ResourceDescriptor.wordIO(minimum: 0, maximum: 0xCF7).bytes
                == [0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03, 0, 0, 0, 0, 0xF7, 0x0C, 0, 0, 0xF8, 0x0C])
        let dmem = try ResourceDescriptor.dwordMemory(cacheability: .cacheable, minimum: 0xA0000, maximum: 0xBFFFF)
        #expect(dmem.bytes == [0x87, 0x17, 0x00, 0x00, 0x0C, 0x03, 0, 0, 0, 0,
                               0x00, 0x00, 0x0A, 0x00, 0xFF, 0xFF, 0x0B, 0x00, 0, 0, 0, 0, 0x00, 0x00, 0x02, 0x00])
        let qmem = try ResourceDescriptor.qwordMemory(cacheability: .cacheable, minimum: 0x80_0000_0000, maximum: 0xFF_FFFF_FFFF)
        #expect(qmem.bytes.count == 46 && qmem.bytes[0] == 0x8A && qmem.bytes[1] == 0x2B)
        let irq = try ResourceDescriptor.interrupt(edgeTriggered: false, activeLow: false, shared: true, [5, 10, 11])
        #expect(irq.bytes == [0x89, 0x0E, 0x00, 0x09, 0x03, 5, 0, 0, 0, 10, 0, 0, 0, 11, 0, 0, 0])
        #expect(ResourceDescriptor.memory32Fixed(writable: false, base: 0xFED0_0000, length: 0x400).bytes
                == [0x86, 0x09, 0x00, 0x00, 0x00, 0x00, 0xD0, 0xFE, 0x00, 0x04, 0x00, 0x00])
        #expect(throws: AMLError.self) { try ResourceDescriptor.irqNoFlags([16]) }
        #expect(throws: AMLError.self) { try ResourceDescriptor.wordIO(minimum: 2, maximum: 1) }

        let template = try AML.resourceTemplate([try .irqNoFlags([1])])
        // Buffer(5) { 22 02 00 79 cs } with 0x22+0x02+0x79+cs == 0 mod 256.
        #expect(template.bytes == [0x11, 0x08, 0x0A, 0x05, 0x22, 0x02, 0x00, 0x79, 0x63])
    }
}
