"""Time-stamped custody heads: an RFC 3161 authority vouches that a chain reached a given event at a time.

The chain alone cannot show that events were cut off its end, or that the
whole log was written again with fresh hashes: either leaves a chain that
checks. A head stamped by an outside authority (after every run and every
export) is a fact nobody here can make afterwards: the stamped event must
still be in the log, with the same hash, at the same place. The stamps are
kept beside the chain, not in it, so that a log cut back does not take them
with it, and replicas carry them like the chain.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509

from worker.errors import EvidenceError
from worker.record.custody import ChainReport
from worker.record.store import EvidenceStore

if TYPE_CHECKING:   # imported where used: every command would pay for it, few stamp
    import rfc3161_client as tsp

log = logging.getLogger(__name__)

_REPLY_LIMIT = 1024 * 1024   # an RFC 3161 reply is a few KiB: the authority's certificates and a signature
_TIMEOUT_S = 30


class StampUnavailable(EvidenceError):
    """The time-stamp authority did not answer, or answered with no stamp."""


def stamp_name(seq: int) -> str:
    """The name a store keeps the stamp of event ``seq`` under: one per event, never replaced."""
    return f"{seq:012d}.json"


def message(evidence_id: str, seq: int, head: str) -> bytes:
    """What is stamped: which item's chain, at which event, with which hash (the hash covers every event
    before it)."""
    return f"evidence-worker custody head v1\n{evidence_id}\n{seq}\n{head}\n".encode("ascii")


def ask(url: str, data: bytes) -> tuple[bytes, tsp.TimeStampResponse]:
    """The authority's time-stamp over ``data`` (its DER TimeStampResp, and that decoded), asked with a nonce
    and for its certificate; StampUnavailable when it does not give one."""
    import rfc3161_client as tsp

    query = (tsp.TimestampRequestBuilder().data(data).hash_algorithm(tsp.HashAlgorithm.SHA256).nonce(nonce=True)
             .cert_request(cert_request=True).build())
    request = urllib.request.Request(url, data=query.as_bytes(), method="POST",
                                     headers={"Content-Type": "application/timestamp-query"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as answer:   # noqa: S310 - the configured URL
            reply = answer.read(_REPLY_LIMIT + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StampUnavailable(f"the time-stamp authority {url} did not answer: {exc}") from None
    if len(reply) > _REPLY_LIMIT:
        raise StampUnavailable(f"the time-stamp authority {url} answered with more than a stamp")
    try:
        decoded = tsp.decode_timestamp_response(reply)
    except ValueError as exc:
        raise StampUnavailable(f"the time-stamp authority {url} answered with no stamp: {exc}") from None
    if decoded.status not in (tsp.PKIStatus.GRANTED, tsp.PKIStatus.GRANTED_WITH_MODS) \
            or decoded.tst_info.nonce != query.nonce \
            or decoded.tst_info.message_imprint.message != hashlib.sha256(data).digest():
        raise StampUnavailable(f"the time-stamp authority {url} refused, or stamped something else")
    return reply, decoded


def stamp_head(url: str, chain: ChainReport, evidence_id: str) -> dict[str, Any]:
    """A stamp of the chain's last event, as kept beside the chain."""
    last = chain.events[-1]
    reply, decoded = ask(url, message(evidence_id, int(last["seq"]), str(last["hash"])))
    info = decoded.tst_info
    return {"seq": int(last["seq"]), "hash": str(last["hash"]), "time": info.gen_time.isoformat(),
            "authority": url, "token": base64.b64encode(reply).decode("ascii")}


def stamp_custody(store: EvidenceStore, evidence_id: str, url: str | None) -> dict[str, Any] | None:
    """Stamp the item's custody head now and keep the stamp beside the log (with no ``url``, nothing).

    An authority that does not answer delays nothing: the run or export is
    logged already, and the next stamp vouches for these events too (a head's
    hash covers every event before it). It is logged, and audit says how
    many events no stamp covers.
    """
    if not url:
        return None
    chain = store.custody(evidence_id)
    if not chain.ok or not chain.events:
        return None   # a damaged chain is audit's to report; stamping it would vouch for the damage
    try:
        stamp = stamp_head(url, chain, evidence_id)
    except StampUnavailable as exc:
        log.warning("custody head not time-stamped", extra={"evidence_id": evidence_id, "reason": str(exc)})
        return None
    store.add_custody_stamp(evidence_id, stamp)
    return stamp


def check(stamp: Mapping[str, Any], evidence_id: str, roots: Sequence[x509.Certificate]) -> str | None:
    """What is wrong with one kept stamp (None when it is the authority's, over this item's head, and the
    authority chains to ``roots``; with no roots its signature cannot be judged, only its content)."""
    import rfc3161_client as tsp

    try:
        reply = tsp.decode_timestamp_response(base64.b64decode(str(stamp["token"]), validate=True))
        stamped = message(evidence_id, int(stamp["seq"]), str(stamp["hash"]))
        if roots:
            tsp.VerifierBuilder(roots=list(roots)).build().verify_message(reply, stamped)
        elif reply.tst_info.message_imprint.message != hashlib.sha256(stamped).digest():
            return "its token stamps another head than it names"
    except (KeyError, TypeError, ValueError, tsp.VerificationError) as exc:
        return f"its token does not verify ({exc})"
    return None


def problems(stamps: Sequence[Mapping[str, Any]], chain: ChainReport, evidence_id: str,
             roots: Sequence[x509.Certificate]) -> list[str]:
    """Each way the log differs from what was stamped: events cut off its end, or written again."""
    found, by_seq = [], {event.get("seq"): event for event in chain.events}
    for stamp in stamps:
        if "damaged" in stamp:
            found.append(f"the time-stamp {stamp['name']} beside the custody log is damaged: {stamp['damaged']}")
            continue
        where = f"event {stamp.get('seq')}, stamped {stamp.get('time')}"
        wrong = check(stamp, evidence_id, roots)
        if wrong:
            found.append(f"the time-stamp of {where}: {wrong}")
        elif stamp["seq"] not in by_seq:
            found.append(f"the custody log was cut back: {where}, is no longer in it (the log ends at event "
                         f"{len(chain.events) - 1})")
        elif by_seq[stamp["seq"]].get("hash") != stamp["hash"]:
            found.append(f"the custody log was written again: {where}, had another hash then")
    return found


def kept(name: str, opened: Callable[[], bytes]) -> dict[str, Any]:
    """A stamp as a store gives it back: ``opened`` reads and unseals the object named ``name``. One that
    does not open, parse, or sit under its own event's name is {"name", "damaged"}, for audit to report."""
    try:
        stamp = json.loads(opened())
        if not isinstance(stamp, dict) or name != stamp_name(int(stamp["seq"])):
            raise ValueError("it is not the stamp of the event its name gives")
    except (EvidenceError, ValueError, KeyError, TypeError) as exc:
        return {"name": name, "damaged": str(exc)}
    return stamp


def roots_from(pem: str | None) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode("ascii")) if pem else []
