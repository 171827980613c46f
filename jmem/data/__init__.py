"""Data: loaders, the ``Dataset`` value, subset designs, canaries and pixel-space leakage detection."""
