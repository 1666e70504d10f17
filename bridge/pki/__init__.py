"""Trust lists of peer certificates kept as folders (the OPC UA Part 12 layout: ``trusted/``,
``issuers/``, ``rejected/`` under a ``pki_dir``), seen from the operator's side: what is in them,
where each certificate was last seen, and trusting, rejecting or removing one.

No protocol library here: the REST API and the CLI work on the folders with this package, and
the connector that checks peers against a trust list (``bridge.connectors.opcua.trust``) writes
the where-seen records through it. A running gateway picks every change up by itself (it
watches the folders).
"""
