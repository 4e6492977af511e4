// HostOS: see ARCHITECTURE.md
