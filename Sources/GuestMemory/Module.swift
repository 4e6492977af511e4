// GuestMemory: see ARCHITECTURE.md
