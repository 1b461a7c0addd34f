"""A small development PKI: one CA and the certificates of the gateway, connectors and clients.

`xiezhi pki init` writes, under one folder:

    ca.pem, ca.key                      the development CA (ECDSA P-256, path length 0)
    gateway.pem, gateway.key            server and client certificate of the gateway
    connectors/<id>.pem, <id>.key       server and client certificate of each connector
    clients/<name>.pem, <name>.key      client certificate of each requester system

Every certificate names its holder by a DNS name in its subjectAltName (see `xiezhi.tls`:
`gateway.xiezhi.internal`, `court.connector.xiezhi.internal`, `<name>.client.xiezhi.internal`);
that name is what the other side pins. Server certificates also name `localhost` and the
loopback addresses, so a service on loopback can be reached by address. Keys are written
with mode 0600. Production takes certificates from its own CA through configuration; this
module is for development, CI and the demo.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from xiezhi.tls import TRUST_DOMAIN, TLSFiles, client_identity, connector_identity, gateway_identity

LOOPBACK = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class DevPki:
    """Where `init_pki` put each holder's files."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    def gateway(self) -> TLSFiles:
        return TLSFiles(cert=self.folder / "gateway.pem", key=self.folder / "gateway.key", ca=self.ca)

    def connector(self, connector: str) -> TLSFiles:
        return self._files("connectors", connector)

    def client(self, name: str) -> TLSFiles:
        return self._files("clients", name)

    def _files(self, kind: str, name: str) -> TLSFiles:
        return TLSFiles(cert=self.folder / kind / f"{name}.pem", key=self.folder / kind / f"{name}.key", ca=self.ca)


def init_pki(
    folder: Path,
    connectors: Sequence[str],
    clients: Sequence[str],
    now: datetime,
    *,
    days: int = 365,
    domain: str = TRUST_DOMAIN,
) -> DevPki:
    """Create the CA and every certificate under `folder`; refuses to overwrite a CA."""
    pki = DevPki(folder)
    if pki.ca.exists():
        raise FileExistsError(f"{pki.ca} exists: a PKI is already there (remove the folder to start again)")
    for sub in ("connectors", "clients"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Xiezhi development CA ({domain})")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(folder / "ca.key", ca_key)
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    issue = _Issuer(ca, ca_key, now, days)
    issue(pki.gateway(), gateway_identity(domain), server=True)
    for connector in connectors:
        issue.party(pki, "connector", connector, domain)
    for client in clients:
        issue.party(pki, "client", client, domain)
    return pki


def add_party(pki: DevPki, kind: Literal["connector", "client"], name: str, now: datetime, days: int = 365) -> TLSFiles:
    """Issue one more connector or client certificate from `pki`'s CA (a new agency joining)."""
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    ca_key = serialization.load_pem_private_key((pki.folder / "ca.key").read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{pki.folder / 'ca.key'} is not the development CA's EC key")
    return _Issuer(ca, ca_key, now, days).party(pki, kind, name, _domain(pki))


def _domain(pki: DevPki) -> str:
    """The trust domain, read from the gateway's certificate (`gateway.<domain>`)."""
    certificate = x509.load_pem_x509_certificate(pki.gateway().cert.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    for name in names.get_values_for_type(x509.DNSName):
        if name.startswith("gateway."):
            return name.removeprefix("gateway.")
    raise ValueError(f"{pki.gateway().cert} names no gateway.<domain>")


@dataclass(frozen=True)
class _Issuer:
    ca: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    now: datetime
    days: int

    def party(self, pki: DevPki, kind: Literal["connector", "client"], name: str, domain: str) -> TLSFiles:
        """Issue a connector's (server and client) or a client system's certificate into `pki`."""
        if kind == "connector":
            files = pki.connector(name)
            self(files, connector_identity(name, domain), server=True)
        else:
            files = pki.client(name)
            self(files, client_identity(name, domain), server=False)
        return files

    def __call__(self, files: TLSFiles, identity: str, *, server: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(identity)]
        if server:
            names += [x509.DNSName("localhost"), *(x509.IPAddress(ipaddress.ip_address(a)) for a in LOOPBACK)]
        purposes = [ExtendedKeyUsageOID.CLIENT_AUTH, *([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)])
        certificate = (
            _builder(subject, self.ca.subject, key.public_key(), self.now, self.days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        _write_key(files.key, key)
        files.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey, now: datetime, days: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # small clock differences between hosts
        .not_valid_after(now + timedelta(days=days))
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
