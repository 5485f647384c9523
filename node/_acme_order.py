"""[shell] The blocking ACME order flow with certbot's ``acme`` library (loaded on first use).

Split from :mod:`node.acme_client` so that importing the node or the CLI does not pull in
``acme``, ``josepy`` and ``requests`` (about half a second) unless an order is placed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from acme import challenges, client, crypto_util, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwa import ES256, ES384, ES512, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA
from requests.adapters import HTTPAdapter

from node.errors import AcmeError, BadInput
from node.model import PrivateKey

if TYPE_CHECKING:
    from node.acme_client import Http01Responder

__all__ = ["check_issued", "run_order"]


def _jwk(account_key: PrivateKey) -> tuple[JWK, JWASignature]:
    if isinstance(account_key, rsa.RSAPrivateKey):
        return JWKRSA(key=account_key), RS256
    if isinstance(account_key, ec.EllipticCurvePrivateKey):
        algs = {256: ES256, 384: ES384, 521: ES512}
        return JWKEC(key=account_key), algs[account_key.curve.key_size]
    raise BadInput("an ACME account key must be RSA or EC; Ed25519 is not accepted by ACME CAs")


class _PinnedCAAdapter(HTTPAdapter):
    """Verify TLS against one CA bundle instead of the system store (e.g. Pebble's test CA).

    ``acme.client.ClientNetwork`` passes ``verify=True`` on every request, which ``requests``
    may turn into ``$REQUESTS_CA_BUNDLE``; the bundle is substituted at the transport adapter,
    after both.
    """

    def __init__(self, ca_bundle: Path) -> None:
        super().__init__()
        self._ca_bundle = str(ca_bundle)

    def send(  # type: ignore[override]  # same call, verify narrowed to the pinned bundle
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        if kwargs.get("verify", True) is not False:
            kwargs["verify"] = self._ca_bundle
        return super().send(request, **kwargs)


def _problem(err: BaseException) -> str:
    """A one-line description of an ACME failure, from the server's problem document."""
    if isinstance(err, acme_errors.ValidationError):
        details = [
            f"{chall.error.detail or chall.error.typ}"
            for authzr in err.failed_authzrs
            for chall in authzr.body.challenges
            if chall.error is not None
        ]
        return "; ".join(details) or "validation failed"
    if isinstance(err, acme_errors.IssuanceError):
        return str(err.error.detail or err.error.typ)
    if isinstance(err, messages.Error):
        return str(err.detail or err.typ)
    return str(err) or type(err).__name__


def _blocking_order(
    *,
    directory_url: str,
    email: str | None,
    hostname: str,
    key: PrivateKey,
    account_key: PrivateKey,
    responder: Http01Responder,
    ca_bundle: Path | None,
    poll_for: dt.timedelta,
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    jwk, alg = _jwk(account_key)
    net = client.ClientNetwork(jwk, alg=alg, user_agent="certsync", timeout=30)
    if ca_bundle is not None:
        net.session.mount("https://", _PinnedCAAdapter(ca_bundle))
    directory = client.ClientV2.get_directory(directory_url, net)
    acme = client.ClientV2(directory, net)
    registration = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
    try:
        acme.new_account(registration)
    except acme_errors.ConflictError as err:  # the key has an account already: use it
        regr = messages.RegistrationResource(uri=err.location, body=messages.Registration())
        net.account = regr
        net.account = acme.query_registration(regr)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    order = acme.new_order(crypto_util.make_csr(key_pem, [hostname]))
    tokens: list[str] = []
    try:
        for authzr in order.authorizations:
            if authzr.body.status == messages.STATUS_VALID:  # reused authorisation
                continue
            http01 = [c for c in authzr.body.challenges if isinstance(c.chall, challenges.HTTP01)]
            if not http01:
                raise AcmeError(
                    f"the ACME server offers no HTTP-01 challenge for {hostname!r}; "
                    "use a CA that supports HTTP-01",
                    hostname=hostname,
                    retryable=False,
                )
            challb = http01[0]
            response, validation = challb.response_and_validation(jwk)
            token = challb.chall.encode("token")
            responder.add(token, validation)
            tokens.append(token)
            acme.answer_challenge(challb, response)
        # the acme library compares its deadlines with naive local time
        deadline = dt.datetime.now() + poll_for  # noqa: DTZ005
        finished = acme.poll_and_finalize(order, deadline)
    finally:
        for token in tokens:
            responder.discard(token)
    certs = x509.load_pem_x509_certificates(finished.fullchain_pem.encode("ascii"))
    return certs[0], tuple(certs[1:])


def _check_issued(
    cert: x509.Certificate, key: PrivateKey, hostname: str, directory_url: str
) -> None:
    if cert.public_key() != key.public_key():
        raise AcmeError(
            f"the certificate {directory_url!r} issued for {hostname!r} does not match the "
            "key certsync sent; report this to the CA",
            hostname=hostname,
            retryable=False,
        )
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names: list[str] = []
    else:
        names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    if hostname not in names:
        raise AcmeError(
            f"the certificate {directory_url!r} issued does not name {hostname!r} "
            f"(it names {names!r}); report this to the CA",
            hostname=hostname,
            retryable=False,
        )



def run_order(
    *,
    directory_url: str,
    email: str | None,
    hostname: str,
    given: str,
    key: PrivateKey,
    account_key: PrivateKey,
    responder: Http01Responder,
    ca_bundle: Path | None,
    poll_for: dt.timedelta,
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """Run one order (blocking; call it in a thread); library errors become AcmeError."""
    try:
        cert, chain = _blocking_order(
            directory_url=directory_url,
            email=email,
            hostname=hostname,
            key=key,
            account_key=account_key,
            responder=responder,
            ca_bundle=ca_bundle,
            poll_for=poll_for,
        )
    except AcmeError:
        raise
    except requests.exceptions.SSLError as err:
        raise AcmeError(
            f"TLS verification of the ACME directory {directory_url!r} failed; "
            "check the URL and the CA bundle",
            hostname=given,
        ) from err
    except requests.exceptions.RequestException as err:
        raise AcmeError(
            f"cannot reach the ACME directory {directory_url!r} ({type(err).__name__}); "
            "check the URL and the network",
            hostname=given,
        ) from err
    except acme_errors.ValidationError as err:
        raise AcmeError(
            f"the CA could not validate {given!r} over HTTP-01 ({_problem(err)}); check "
            "that the name points at this node and that the challenge port reaches it",
            hostname=given,
        ) from err
    except acme_errors.TimeoutError as err:
        raise AcmeError(
            f"the ACME order for {given!r} did not finish within {poll_for}; try again later",
            hostname=given,
        ) from err
    except (acme_errors.Error, messages.Error) as err:
        raise AcmeError(
            f"the ACME server refused the request for {given!r} ({_problem(err)}); "
            "check the account e-mail and the name, then try again",
            hostname=given,
        ) from err
    return cert, chain


check_issued = _check_issued
