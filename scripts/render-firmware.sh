#!/usr/bin/env bash
# Renders the default machine's ACPI tables (iasl -d) and device tree (dtc) into Firmware/acpi/q35
# and Firmware/devicetree/q35.dts, for reading. They are documentation: no test compares against
# them (the tests check the tables against the ACPI specification and QEMU's own q35 tables).
# usage: scripts/render-firmware.sh [SWITCHYARD-BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-.build/debug/switchyard}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin" firmware --out "$out" >/dev/null
mkdir -p Firmware/acpi/q35 Firmware/devicetree
rm -f Firmware/acpi/q35/*.dsl
for table in "$out"/*.bin; do
  sig=$(basename "$table" .bin)
  [ "$sig" = RSDP ] && continue   # iasl will not disassemble a binary RSDP
  (cd "$out" && iasl -d "$sig.bin" >/dev/null)
  # Without iasl's leading comment block (tool version, date, file name).
  awk 'NR == 1 && $0 == "/*" { skip = 1 } !skip { print } skip && $0 == " */" { skip = 0 }' "$out/$sig.dsl" >"Firmware/acpi/q35/$sig.dsl"
done
dtc -I dtb -O dts "$out/machine.dtb" >Firmware/devicetree/q35.dts
echo "rendered Firmware/acpi/q35/*.dsl and Firmware/devicetree/q35.dts from $bin"
