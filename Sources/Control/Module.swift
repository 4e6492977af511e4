// Control: see ARCHITECTURE.md
