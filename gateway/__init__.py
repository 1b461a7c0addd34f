"""The Xiezhi gateway: brokers blind queries between requesters and agency connectors."""
