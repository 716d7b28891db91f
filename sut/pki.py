"""A throwaway local certificate authority for the reference stack's TLS proxy.

The tester is handed ``ca.pem`` and verifies the proxy against it, exactly as it would verify a production
gateway against a private CA: no "insecure" switch is needed to test the reference stack.
Uses ``cryptography`` (always installed: aiortc depends on it). EC P-256 keys, so generation is instant.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALID_DAYS = 3650
SERVER_VALID_DAYS = 825  # the longest lifetime clients such as Chromium accept for a server certificate
RENEW_MARGIN = dt.timedelta(days=1)


@dataclass(frozen=True)
class CertPaths:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Create with 0600 from the start: the key must never be readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def create_ca(cert_path: Path, key_path: Path, common_name: str = "speechload local CA") -> None:
    """Write a new self-signed CA certificate and key (overwrites)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)


def _usable_ca(cert_path: Path, key_path: Path) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError:
        return False
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    same_key = cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    return same_key and cert.not_valid_after_utc - RENEW_MARGIN > _now()


def _subject_alt_names(server_name: str, ips: list[str], extra_names: Sequence[str] = ()
                       ) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for dns in dict.fromkeys([server_name, "localhost", *extra_names]):  # ordered, no duplicates
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(dns)))
        except ValueError:
            names.append(x509.DNSName(dns))
    for ip in dict.fromkeys(["127.0.0.1", *ips]):
        entry = x509.IPAddress(ipaddress.ip_address(ip))
        if entry not in names:
            names.append(entry)
    return x509.SubjectAlternativeName(names)


def issue_server_cert(
    ca_cert_path: Path,
    ca_key_path: Path,
    cert_path: Path,
    key_path: Path,
    server_name: str,
    ips: list[str],
    only_name: str = "",
    extra_names: Sequence[str] = (),
) -> None:
    """Issue a server certificate for `server_name` (+ DNS:localhost, `extra_names` such as
    ``*.speechload.test``, IP:127.0.0.1 and `ips`), or, with `only_name`, for that one name alone (the
    stack's misissued-certificate fault)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_key_path}: expected an EC private key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    san = (
        x509.SubjectAlternativeName([x509.DNSName(only_name)]) if only_name
        else _subject_alt_names(server_name, ips, extra_names)
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, only_name or server_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_VALID_DAYS))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)


def ensure_pki(directory: Path, server_name: str, ips: list[str], only_name: str = "",
               extra_names: Sequence[str] = ()) -> CertPaths:
    """Keep the CA of `directory` if still valid (so a tester's CA file stays good across restarts);
    issue a fresh server certificate every time (the name or addresses may have changed)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
    )
    if not _usable_ca(paths.ca_cert, paths.ca_key):
        create_ca(paths.ca_cert, paths.ca_key)
    issue_server_cert(
        paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key, server_name, ips, only_name,
        extra_names,
    )
    return paths
