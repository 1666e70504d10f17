"""Model lifecycle: registry, integrity, safe switching, shadow and canary runs, quantization.

The registry lives in the SQL store (``bridge.store.registry``); this package holds the rules
around it. Nothing here imports a connector or a protocol library.
"""
