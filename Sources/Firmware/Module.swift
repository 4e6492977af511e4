// Firmware: ACPI tables, device tree, Linux boot (see ARCHITECTURE.md)
