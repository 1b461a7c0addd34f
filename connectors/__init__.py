"""The connector runtime: an agency's side of Xiezhi.

One runtime, configured per agency by a YAML file (see `court.yaml`, `tax.yaml`,
`housing_fund.yaml`, `civil_affairs.yaml` beside this file). It builds capability indexes
from the agency's own database, publishes them to the gateway, and serves OPRF
evaluation for ticketed batches.
"""
