// HostDevices: see ARCHITECTURE.md
