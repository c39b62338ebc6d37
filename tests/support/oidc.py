"""A local stand-in for Google's OIDC signer: real RS256 tokens, certificates over HTTP.

``LocalIssuer`` generates an RSA key and a self-signed certificate, serves
``{key id: PEM certificate}`` (the shape of https://www.googleapis.com/oauth2/v1/certs) at
``certs_url`` on 127.0.0.1, a URL no other issuer shares, counts the downloads, and signs
tokens shaped like the ones Pub/Sub attaches to push requests. An issuer that is never
started still signs, which makes tokens from a key the verifier does not trust.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

GOOGLE_ISSUER = "https://accounts.google.com"


def make_key_and_cert(common_name: str = "local-oidc-issuer") -> tuple[bytes, str]:
    """A fresh RSA private key (PEM) and a self-signed certificate for it (PEM text)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


class LocalIssuer:
    """Signs ID tokens with its own key and serves the certificate that verifies them."""

    def __init__(self, kid: str = "local-key-1") -> None:
        self.kid = kid
        key_pem, self.cert_pem = make_key_and_cert()
        self._signer = crypt.RSASigner.from_string(key_pem, key_id=kid)
        self.certs: dict[str, str] = {kid: self.cert_pem}
        self.certs_path = f"/{uuid.uuid4().hex}/oauth2/v1/certs"
        self.cert_requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LocalIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != issuer.certs_path:
                    self.send_error(404)
                    return
                with issuer._lock:
                    issuer.cert_requests += 1
                    body = json.dumps(issuer.certs).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="local-oidc-issuer",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def certs_url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalIssuer is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.certs_path}"

    def claims(self, audience: str, email: str, /, **overrides: Any) -> dict[str, Any]:
        """Push-token claims; overrides replace any claim, and ``None`` leaves one out."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": GOOGLE_ISSUER,
            "aud": audience,
            "azp": "112233445566778899000",
            "sub": "112233445566778899000",
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def sign(self, audience: str, email: str, /, **overrides: Any) -> str:
        """An RS256 token with this issuer's key id; claims as ``claims``."""
        token: bytes = jwt.encode(self._signer, self.claims(audience, email, **overrides))
        return token.decode("ascii")
