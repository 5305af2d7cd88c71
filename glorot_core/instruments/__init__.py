"""Instruments: one module per measured quantity, behind one interface (``base.Instrument``) and
driven by a registry (``registry.DEFAULT``) at every probe point (``probe``). Each reduces on the
device and returns tensors; the snapshot (``snapshot``) moves everything to the host in one
synchronisation (``host``). See docs/architecture.md, "Instruments"."""
