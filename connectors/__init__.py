"""The connector runtime: an agency's side of Xiezhi.

One runtime, configured per agency by a YAML file (the reference agencies' are in the
roster, `deploy/connectors/`; see `connectors.config` and `connectors.roster`). It builds
capability indexes from the agency's own database, publishes them to the gateway, serves
OPRF evaluation for ticketed batches, and witnesses the gateway's audit log.
"""
