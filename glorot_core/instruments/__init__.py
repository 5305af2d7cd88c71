"""Instruments: one module per measured quantity. Each reduces on the device and returns tensors;
the snapshot moves everything to the host in one synchronisation (``glorot_core.instruments.host``)."""
