// Machine: see ARCHITECTURE.md
