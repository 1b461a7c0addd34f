"""Xiezhi: a privacy-preserving data-sharing gateway for civil-enforcement supervision.

This package is the core every party shares and imports, never the other way round:
identifier normalisation, the ristretto255 group and the RFC 9497 OPRF, token derivation
and the other cryptographic primitives, wire formats, relay tickets and their key sets,
supervision models, the error tree, TLS and telemetry helpers. The services (`gateway`,
`connectors`), the requester's client library (`requester`), the command line (`cli`) and
the development kit (`devkit`) are packages of their own above it.
"""

__version__ = "0.1.0"
