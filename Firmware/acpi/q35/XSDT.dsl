[000h 0000   4]                    Signature : "XSDT"    [Extended System Description Table]
[004h 0004   4]                 Table Length : 00000044
[008h 0008   1]                     Revision : 01
[009h 0009   1]                     Checksum : 8C
[00Ah 0010   6]                       Oem ID : "SWYARD"
[010h 0016   8]                 Oem Table ID : "SWYDQ35 "
[018h 0024   4]                 Oem Revision : 00000001
[01Ch 0028   4]              Asl Compiler ID : "SWYD"
[020h 0032   4]        Asl Compiler Revision : 00000001

[024h 0036   8]       ACPI Table Address   0 : 00000000000E0080
[02Ch 0044   8]       ACPI Table Address   1 : 00000000000E1B20
[034h 0052   8]       ACPI Table Address   2 : 00000000000E1BA0
[03Ch 0060   8]       ACPI Table Address   3 : 00000000000E1BE0

Raw Table Data: Length 68 (0x44)

    0000: 58 53 44 54 44 00 00 00 01 8C 53 57 59 41 52 44  // XSDTD.....SWYARD
    0010: 53 57 59 44 51 33 35 20 01 00 00 00 53 57 59 44  // SWYDQ35 ....SWYD
    0020: 01 00 00 00 80 00 0E 00 00 00 00 00 20 1B 0E 00  // ............ ...
    0030: 00 00 00 00 A0 1B 0E 00 00 00 00 00 E0 1B 0E 00  // ................
    0040: 00 00 00 00                                      // ....
