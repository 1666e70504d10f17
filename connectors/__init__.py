"""Protocol connectors (OPC UA, Modbus, MES, webhook), registered by entry points.

Installed and imported as ``bridge.connectors`` only: the folder sits at the top of the
checkout and ``bridge/connectors`` links to it. A top-level ``connectors`` would collide with
other distributions and give every module two names."""

if __name__ != "bridge.connectors":
    raise ImportError(f"import bridge.connectors, not {__name__} (the package's only name)")
