"""Environment adapters. Each lives in its own subpackage and is registered in `firsthand.registry`."""
