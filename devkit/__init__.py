"""The development kit, apart from production code: the demo (`devkit.demo`), a development
identity provider, roster and gateway configuration (`devkit.environment`), and a
development PKI (`devkit.pki`). Production deployments never import it."""
