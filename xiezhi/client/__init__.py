"""The requester's client: read a subject list, run the blind protocol, write the clue report.

Everything identifying stays here, inside the procuratorate's network: the gateway gets
blinded elements and tokens, and answers with flags by row position.
"""
