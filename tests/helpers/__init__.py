"""Test helpers shared by several test packages (host-safety snapshots, ...)."""
