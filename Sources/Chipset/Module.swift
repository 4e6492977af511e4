// Chipset: see ARCHITECTURE.md
