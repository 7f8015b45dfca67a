"""An example modalign encoder plugin (see docs/encoders.md)."""
