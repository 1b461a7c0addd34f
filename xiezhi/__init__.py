"""Xiezhi: a privacy-preserving data-sharing gateway for civil-enforcement supervision.

This package holds the code every party shares — identifier normalisation, the RFC 9497
OPRF, token derivation, wire formats and supervision models — plus the requester client,
the demo and the `xiezhi` command line.
"""

__version__ = "0.1.0"
