"""``mapreduce certs``: a private certificate authority and one certificate it signed.

For turning TLS on (``--tls-cert``, ``--tls-key``, ``--tls-ca``) without an
organisation's PKI: a CA key and certificate, and one certificate for every host
of the cluster, whose subject alternative names are the host names and addresses
given.  Servers present it, clients (which hold it too) present it for mutual TLS,
and everyone trusts the CA.  Made with the ``cryptography`` package (ECDSA P-256,
SHA-256); nothing here is cryptography of our own.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

#: The files written, in ``DIRECTORY``.
CA_CERT, CA_KEY, CERT, KEY = "ca.pem", "ca-key.pem", "cert.pem", "key.pem"


def write_certificates(directory: str | os.PathLike[str], names: list[str], days: int) -> Path:
    """Write a new CA and a certificate for ``names`` (host names or IP addresses).

    Keys are written with mode 0600 and no file is overwritten.

    Raises:
        FileExistsError: one of the files is already there.
        ValueError: ``names`` is empty or ``days`` < 1.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not names:
        raise ValueError("at least one host name or address is needed")
    if days < 1:
        raise ValueError(f"the certificates must be valid for at least a day (got {days})")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name in (CA_CERT, CA_KEY, CERT, KEY):
        if (out / name).exists():
            raise FileExistsError(f"{out / name} exists: certificates are never overwritten")

    def subject(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def alternative(name: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            return x509.DNSName(name)

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(subject("mapreduce cluster CA"))
        .issuer_name(subject("mapreduce cluster CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([alternative(n) for n in names]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def private(path: Path, pem: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)

    def pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    private(out / CA_KEY, pem_key(ca_key))
    private(out / KEY, pem_key(key))
    (out / CA_CERT).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (out / CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out
