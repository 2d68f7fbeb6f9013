"""Signing with an AWS KMS asymmetric key: the private key never leaves KMS.

The C2PA library hands the bytes to sign to a callback; here the callback
is ``kms.sign``. The certificate chain for the KMS key's public half comes
from the operator's CA, like any other signing certificate, and the two are
matched at start-up (``kms.get_public_key``), so a wrong key id stops the
worker before it signs anything.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pipelines.provenance.credentials import CredentialError, Credentials, behind, check_chain

_RAW_LIMIT = 4096   # bytes KMS signs as a message; more must be sent as a digest
# C2PA algorithm -> KMS signing algorithm, chosen by the certificate's key type
_BY_KEY = {ec.EllipticCurvePublicKey: ("ES256", "ECDSA_SHA_256"), rsa.RSAPublicKey: ("PS256", "RSASSA_PSS_SHA_256")}


def credentials(chain: Path, key_id: str, client: Any, *, timestamp_url: str | None = None) -> Credentials:
    """Credentials that sign through ``client`` (a boto3 KMS client) with ``key_id``; the caller adds the
    trust anchors (worker.processing.signing.anchors)."""
    chain_pem = Path(chain).read_text(encoding="ascii")
    leaf_key = check_chain(chain_pem).public_key()
    chosen = next((algs for kind, algs in _BY_KEY.items() if isinstance(leaf_key, kind)), None)
    if chosen is None:
        raise CredentialError("a KMS signing certificate must hold an ECDSA P-256 or RSA key")
    algorithm, kms_algorithm = chosen
    try:
        described = client.get_public_key(KeyId=key_id)
    except Exception as exc:  # botocore's errors: refused credentials, no such key, no network
        raise CredentialError(f"KMS key {key_id} cannot be used: {exc}") from None
    if described.get("KeyUsage") != "SIGN_VERIFY" or kms_algorithm not in described.get("SigningAlgorithms", []):
        raise CredentialError(f"KMS key {key_id} is not a signing key for {kms_algorithm}")

    def sign(data: bytes) -> bytes:
        # KMS takes at most 4096 bytes of message, and what C2PA signs holds the whole certificate chain;
        # a longer one goes as its SHA-256 digest, which gives the same signature for these algorithms.
        # (moto's KMS hashes a digest again, so the tests here only reach the RAW branch.)
        if len(data) <= _RAW_LIMIT:
            return client.sign(KeyId=key_id, Message=data, MessageType="RAW",
                               SigningAlgorithm=kms_algorithm)["Signature"]
        return client.sign(KeyId=key_id, Message=hashlib.sha256(data).digest(), MessageType="DIGEST",
                           SigningAlgorithm=kms_algorithm)["Signature"]

    return behind(chain_pem, described["PublicKey"], sign, algorithm, timestamp_url=timestamp_url,
                  source=f"KMS key {key_id}")
