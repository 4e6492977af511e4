import Machine
import VMMBase

let machine = try Machine(.defaultMachine)
let report = try machine.runFirmware()
for f in report.functions {
    print(f.address.shortDescription, hex(f.vendorID, 4) + ":" + hex(f.deviceID, 4), f.bars.map { "\($0.index)=\($0.range)" }, f.windows)
}
print(report.summary)
print(machine.describeMemory())
print(machine.describePorts())
