"""The requester's client library: read a subject list, run the blind protocol, write the clue report.

Other systems import it as the procuratorate's SDK: `requester.sdk.match_subjects` runs a
model over subjects held in memory; `requester.job.match_file` runs a whole job over a list
file; `requester.protocol.run_match` the protocol over subjects already read;
`requester.gateway_client.GatewayClient` the gateway's API. Everything identifying stays
here, inside the procuratorate's network: the gateway gets blinded elements and tokens,
and answers with flags by row position.
"""
