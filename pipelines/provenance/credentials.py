"""Signing credentials: a certificate chain and something that signs with its key.

The key may be a PEM file or a key that never leaves a KMS: either way the
C2PA library only sees a callback that signs bytes. The chain is checked
when the credentials are loaded, so a worker with an expired, self-signed
or CA certificate refuses to start instead of failing every run. A trial
CA can be made here; its certificates say "not for production" in their
own subject, and so does everything that shows a signature made with them.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TEST_MARK = "TEST CA, not for production"
_ACCEPTED_EKU = {ExtendedKeyUsageOID.EMAIL_PROTECTION, x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")}


class CredentialError(Exception):
    """Signing credentials that cannot sign; a person must fix the settings."""


@dataclass(frozen=True)
class Credentials:
    chain_pem: str                          # end-entity certificate first, then its issuers
    sign: Callable[[bytes], bytes]          # returns a signature of the bytes (DER or raw)
    algorithm: str                          # "ES256", "PS256" or "Ed25519"
    anchors_pem: str | None = None          # trust anchors for verifying what we signed
    test: bool = False                      # signed by a trial CA: say so wherever a signature is shown
    timestamp_url: str | None = None        # RFC 3161 time-stamp authority; None signs offline, untimed

    @property
    def signer_name(self) -> str:
        leaf = x509.load_pem_x509_certificates(self.chain_pem.encode())[0]
        return ", ".join(str(attribute.value) for attribute in reversed(list(leaf.subject)))


def check_chain(chain_pem: str, now: dt.datetime | None = None) -> x509.Certificate:
    """The end-entity certificate, if it can sign C2PA claims; CredentialError naming the rule otherwise."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError as exc:
        raise CredentialError(f"the certificate chain is not PEM certificates: {exc}") from None
    leaf = chain[0]
    now = now or dt.datetime.now(dt.timezone.utc)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise CredentialError(f"the signing certificate is valid from {leaf.not_valid_before_utc:%Y-%m-%d} to "
                              f"{leaf.not_valid_after_utc:%Y-%m-%d}, not now")
    if leaf.issuer == leaf.subject:
        raise CredentialError("the signing certificate is self-signed; C2PA needs one issued by a CA")
    try:
        if leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise CredentialError("the signing certificate is a CA certificate; use an end-entity certificate")
    except x509.ExtensionNotFound:
        pass
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature:
            raise CredentialError("the signing certificate's key usage lacks digitalSignature")
    except x509.ExtensionNotFound:
        raise CredentialError("the signing certificate has no key usage extension") from None
    try:
        extended = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        extended = set()
    if not extended & _ACCEPTED_EKU:
        raise CredentialError("the signing certificate's extended key usage must include emailProtection "
                              "(or documentSigning)")
    return leaf


def _algorithm(key) -> tuple[str, Callable[[bytes], bytes]]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256", lambda data: key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return "PS256", lambda data: key.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "Ed25519", key.sign
    raise CredentialError("the private key must be ECDSA P-256, RSA (PS256) or Ed25519")


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def behind(chain_pem: str, public_key_der: bytes, sign: Callable[[bytes], bytes], algorithm: str, *,
           anchors_pem: str | None = None, timestamp_url: str | None = None, source: str = "the key") -> Credentials:
    """Credentials whose key is somewhere else (a KMS, a token): only ``sign`` reaches it.

    The chain is checked as for a key file, and the key's public half must be
    the certificate's, so that a wrong key id stops the worker at its start.
    """
    leaf = check_chain(chain_pem)
    if public_key_der != _spki(leaf.public_key()):
        raise CredentialError(f"{source} does not belong to the signing certificate")
    test = any(TEST_MARK in str(attribute.value) for attribute in leaf.subject)
    return Credentials(chain_pem, sign, algorithm, anchors_pem, test, timestamp_url)


def from_files(chain: Path, key: Path, anchors: Path | None = None, timestamp_url: str | None = None) -> Credentials:
    try:
        private = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
    except (ValueError, TypeError) as exc:   # not PEM, or protected by a passphrase the worker cannot type
        raise CredentialError(f"the private key {key} cannot be loaded: {exc}") from None
    algorithm, sign = _algorithm(private)
    return behind(Path(chain).read_text(encoding="ascii"), _spki(private.public_key()), sign, algorithm,
                  anchors_pem=Path(anchors).read_text(encoding="ascii") if anchors else None,
                  timestamp_url=timestamp_url, source=f"the private key {key}")


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"evidence-worker {TEST_MARK}"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def test_ca_paths(folder: Path) -> dict[str, Path]:
    """Where a trial CA made in ``folder`` keeps its anchor, signer chain and signer key."""
    return {"ca": folder / "ca.pem", "chain": folder / "signer-chain.pem", "key": folder / "signer-key.pem"}


def make_test_ca(folder: Path, signer_public_key=None, signer_valid_for: dt.timedelta = dt.timedelta(days=730)
                 ) -> dict[str, Path]:
    """A trial CA and an end-entity signing certificate in ``folder``: ca.pem, signer-chain.pem, signer-key.pem.

    With ``signer_public_key`` (a key kept elsewhere, such as in a KMS) the
    certificate is issued for that key and no signer-key.pem is written.
    """
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    leaf_public = signer_public_key or leaf_key.public_key()
    ca = (x509.CertificateBuilder().subject_name(_name("trial root")).issuer_name(_name("trial root"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name("trial signer")).issuer_name(ca.subject)
            .public_key(leaf_public).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + signer_valid_for)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    paths = test_ca_paths(folder)
    contents = {"ca": pem(ca), "chain": pem(leaf) + pem(ca),
                "key": leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())}
    if signer_public_key is not None:
        del paths["key"], contents["key"]
    for role, path in paths.items():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(contents[role])
    return paths
