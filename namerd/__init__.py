"""l5d-py namerd: versioned dtabs served to routers (see docs/ARCHITECTURE.md)."""
