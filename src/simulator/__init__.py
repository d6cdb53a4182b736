"""An Apple-compatible Find My fetch endpoint on loopback, for development and tests."""
