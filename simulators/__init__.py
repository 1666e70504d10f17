"""The simulated plant, PLC and MES receiver, and the demo that runs them.

Installed and imported as ``bridge.simulators`` only: the folder sits at the top of the
checkout and ``bridge/simulators`` links to it. A top-level ``simulators`` would collide with
other distributions and give every module two names."""

if __name__ != "bridge.simulators":
    raise ImportError(f"import bridge.simulators, not {__name__} (the package's only name)")
