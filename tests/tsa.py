"""A real RFC 3161 time-stamp authority on loopback for the tests: OpenSSL's ``openssl ts -reply`` behind a
small HTTP handler, with its own root and a time-stamping certificate made here (nothing is mocked: the
replies are OpenSSL's, signed with the TSA's key)."""

from __future__ import annotations

import datetime as dt
import http.server
import subprocess
import tempfile
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_QUERY_LIMIT = 64 * 1024   # an RFC 3161 query is a few hundred bytes
_SIGNS_CERTIFICATES = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
_SIGNS = x509.KeyUsage(True, False, False, False, False, False, False, False, False)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evidence-worker tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem(value) -> bytes:
    if isinstance(value, x509.Certificate):
        return value.public_bytes(serialization.Encoding.PEM)
    return value.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())


class TimeStampAuthority:
    """``url`` answers time-stamp queries; ``root`` is the PEM file a verifier must trust for its stamps.
    ``requests`` counts the queries answered; ``up`` False makes it answer 503 (an outage)."""

    def __init__(self, folder: Path, name: str = "test TSA"):
        self.folder, self.requests, self.up = folder, 0, True
        folder.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.timezone.utc)
        root_key, tsa_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        root = (x509.CertificateBuilder().subject_name(_name(f"{name} root")).issuer_name(_name(f"{name} root"))
                .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(_SIGNS_CERTIFICATES, critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
                .sign(root_key, hashes.SHA256()))
        unit = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(root.subject)
                .public_key(tsa_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_SIGNS, critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(tsa_key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                               critical=False)
                .sign(root_key, hashes.SHA256()))
        self.root = folder / "tsa-root.pem"
        self.root.write_bytes(_pem(root))
        (folder / "tsa.pem").write_bytes(_pem(unit))
        (folder / "tsa-key.pem").write_bytes(_pem(tsa_key))
        (folder / "serial").write_text("01\n")
        (folder / "tsa.cnf").write_text(
            "[tsa]\ndefault_tsa = unit\n[unit]\n"
            f"serial = {folder}/serial\ncrypto_device = builtin\nsigner_cert = {folder}/tsa.pem\n"
            f"signer_key = {folder}/tsa-key.pem\nsigner_digest = sha256\n"
            "default_policy = 1.3.6.1.4.1.4146.2.3\nother_policies = 1.3.6.1.4.1.4146.2.2\n"
            "digests = sha256, sha384, sha512\naccuracy = secs:1\nordering = no\ntsa_name = yes\n"
            "ess_cert_id_chain = no\ness_cert_id_alg = sha256\n")
        self._lock = threading.Lock()   # openssl bumps the serial file: one reply at a time
        authority = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:   # noqa: N802 (the standard library's name)
                length = int(self.headers.get("Content-Length") or 0)
                if not authority.up or not 0 < length <= _QUERY_LIMIT:
                    self.send_error(503 if not authority.up else 400)
                    return
                reply = authority.reply(self.rfile.read(length))
                if reply is None:
                    self.send_error(400)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/tsa"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def reply(self, query: bytes) -> bytes | None:
        with self._lock, tempfile.TemporaryDirectory(dir=self.folder) as work:
            (Path(work) / "query.tsq").write_bytes(query)
            done = subprocess.run(["openssl", "ts", "-reply", "-config", str(self.folder / "tsa.cnf"),
                                   "-queryfile", f"{work}/query.tsq", "-out", f"{work}/reply.tsr"],
                                  capture_output=True, timeout=30, check=False)
            if done.returncode != 0:
                return None
            self.requests += 1
            return (Path(work) / "reply.tsr").read_bytes()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
