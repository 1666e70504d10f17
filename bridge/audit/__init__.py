"""The audit ledger: verifying the chain and its signed checkpoints, exporting it for an
auditor, and the gateway's writer (mirror file, periodic checkpoints)."""
