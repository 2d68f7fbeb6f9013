"""``evidence verify FILE`` and ``evidence keys init-test-ca``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from pipelines.provenance import credentials
from pipelines.provenance.verify import NOT_BOUND, SUMS, verify
from worker.backends import open_store
from worker.cli.output import EXIT_OK, EXIT_PROBLEM, print_json, printable
from worker.config import Settings
from worker.encryption.envelope import MasterKey
from worker.errors import ConfigError, IntegrityError, NotFound
from worker.processing import signing


def register(command) -> None:
    v = command("verify", "check a signed video offline: manifest, signature, trust, content, original",
                "Check FILE's embedded C2PA manifest without any network access: that it is there, that its\n"
                "signature is valid, that its signer chains to a trust anchor (--trust-anchors, else the\n"
                "configured ones), that the media has not changed since it was signed (one changed byte\n"
                "fails), and that its ingredient chain names the original's SHA-256; with --original,\n"
                "re-hash that file and compare. Exit 0 only when every check passes.\n\n"
                "  evidence verify redacted.mp4 --trust-anchors ca.pem --original interview.mov")
    v.add_argument("file", type=Path, metavar="FILE")
    v.add_argument("--trust-anchors", type=Path, metavar="PEM", help="certificates to trust (PEM)")
    v.add_argument("--original", type=Path, metavar="PATH", help="the original, re-hashed and compared")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(handler=cmd_verify)

    k = command("keys", "keys: a trial signing CA; the storage master key, made or rotated",
                "init-test-ca --out DIR writes DIR/ca.pem (the trust anchor), DIR/signer-chain.pem and\n"
                "DIR/signer-key.pem (owner-only): a local CA and a signing certificate for trials, marked\n"
                "'not for production' in the certificates themselves, and prints the [signing] lines.\n\n"
                "init-storage-key --out PATH writes a new master key for [encryption] (owner-only; keep it\n"
                "on removable media, and a copy in escrow: a lost key is lost evidence); with --kms-key-id\n"
                "the key is made by AWS KMS and PATH holds it only as KMS ciphertext.\n\n"
                "rotate-storage-key --new-key-file PATH (workers stopped) re-wraps the data key of every\n"
                "object in the store, every local replica and the staff roster under the new key,\n"
                "without re-encrypting content; interrupted, run it again with the same keys. Then set\n"
                "[encryption] key_file = PATH. The old key still opens older backups: destroy it only once\n"
                "they are rotated or gone. S3 stores are write-once: rotate the KMS key behind them instead.")
    actions = k.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = actions.add_parser("init-test-ca", help="write a trial CA and signer")
    init.add_argument("--out", type=Path, required=True, metavar="DIR")
    storage = actions.add_parser("init-storage-key", help="write a new storage master key")
    storage.add_argument("--out", type=Path, required=True, metavar="PATH")
    storage.add_argument("--kms-key-id", metavar="ID", help="have AWS KMS make and wrap the key")
    rotate = actions.add_parser("rotate-storage-key", help="re-wrap every stored object under a new key file")
    rotate.add_argument("--new-key-file", type=Path, required=True, metavar="PATH",
                        help="the new master key ('evidence keys init-storage-key --out PATH' makes one)")
    rotate.add_argument("--json", action="store_true")
    k.set_defaults(handler=cmd_keys)


def _stored_original(settings: Settings, key: Callable[[], MasterKey | None]):
    """A check of the original in the configured store, when it holds the one a file names (else None)."""
    def check(sha256: str) -> tuple[bool, str] | None:
        if not settings.store_root.is_dir():
            return None  # a recipient's machine, with no store: nothing is created by looking
        store = open_store(settings, key())
        try:
            store.evidence(sha256)
        except NotFound:
            return None
        try:
            store.verify_original(sha256)
        except IntegrityError as exc:
            return False, f"the original in the store no longer matches: {exc}"
        return True, f"the original in the store ({store.location(sha256)}) re-hashed to {sha256}"
    return check


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    try:
        anchors = args.trust_anchors.read_text(encoding="ascii") if args.trust_anchors else signing.anchors(settings)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the trust anchors {args.trust_anchors}: {getattr(exc, 'strerror', exc)}") \
            from None
    if args.original is not None and not args.original.is_file():
        raise ValueError(f"--original {args.original} is not a readable file")
    beside = args.file.parent / SUMS   # an export bundle's: its list of every file's exact bytes
    sums = beside if beside.is_file() else None   # a link is not followed (verify opens it O_NOFOLLOW)
    report = verify(args.file, anchors, args.original, _stored_original(settings, args.master_key), sums)
    if args.json:
        print_json(report)
    else:
        print(f"     file SHA-256 {report['file_sha256'] or '(unreadable)'}")
        stamp = report.get("timestamp")
        if stamp and stamp["time"]:
            print(f"     time-stamped {stamp['time']} by {printable(stamp['authority'])} "
                  f"({'a trusted' if stamp['trusted'] else 'an UNTRUSTED'} time-stamp authority); the signature "
                  "is checked at that time")
        elif stamp:
            print(f"     NOT time-stamped: the signature verifies only while its certificate is valid (until "
                  f"{stamp['certificate_valid_until']}); configure [signing] timestamp_url")
        for check in report["checks"]:
            print(f"{'ok  ' if check['ok'] else 'FAIL'} {check['name']}: {printable(check['detail'])}")
        for link in report["chain"]:
            print(f"     {printable(link['title'])} (from {printable(link['parent'])}), signed by "
                  f"{printable(link['signer'])}")
            for action in link["actions"]:
                print(f"       action {action['action']}" + (f": {printable(action['description'])}"
                                                             if action.get("description") else ""))
        signer = report.get("signer") or {}
        if credentials.TEST_MARK in str(signer.get("issuer")):
            print("     NOTE: signed with a TEST CA, not for production")
        if sums is None and report["file_sha256"]:
            print(f"     NOTE: {NOT_BOUND}")
        print(f"{'verified' if report['ok'] else 'NOT VERIFIED'} ({report['trust']})")
    return EXIT_OK if report["ok"] else EXIT_PROBLEM


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "init-storage-key":
        return _init_storage_key(settings, args)
    if args.action == "rotate-storage-key":
        return _rotate_storage_key(settings, args)
    paths = credentials.make_test_ca(args.out)
    print("[signing]")
    print(f'certificate_chain = "{paths["chain"].resolve()}"')
    print(f'private_key = "{paths["key"].resolve()}"')
    print(f'trust_anchors = "{paths["ca"].resolve()}"')
    return EXIT_OK


def _init_storage_key(settings: Settings, args: argparse.Namespace) -> int:
    from worker import aws
    from worker.encryption import keys

    if args.kms_key_id:
        e = settings.encryption
        keys.new_kms_key(args.out, aws.client("kms", region=e.kms_region, endpoint_url=e.kms_endpoint_url),
                         args.kms_key_id)
        lines = ['key_source = "kms"', f'key_file = "{args.out.resolve()}"', f'kms_key_id = "{args.kms_key_id}"']
    else:
        keys.new_key_file(args.out)
        lines = ['key_source = "file"', f'key_file = "{args.out.resolve()}"']
    print("[encryption]")
    print("\n".join(lines))
    print("# keep a copy of this key in escrow, apart from the machines: without it, nothing it sealed can be read",
          file=sys.stderr)
    return EXIT_OK


def _rotate_storage_key(settings: Settings, args: argparse.Namespace) -> int:
    from worker.backends.local.rotation import rotate
    from worker.encryption import keys
    from worker.processing.staff import Roster, RosterError

    old = args.master_key()
    if old is None:
        raise ConfigError("[encryption] is off: there is no key to rotate")
    new = keys.from_key_file(args.new_key_file)
    if new.key_id == old.key_id:
        raise ConfigError(f"{args.new_key_file} holds the key already configured")
    if settings.store.backend != "local":
        raise ConfigError("the store is in S3, whose objects are write-once: rotate the KMS key behind "
                          "key_source = \"kms\" instead, or restore into a new store under the new key")
    local = {"store": settings.store_root} | {r.name: r.root for r in settings.replicas if r.backend == "local"}
    left = [r.name for r in settings.replicas if r.backend != "local"]
    changed = rotate(list(local.values()), old, new)
    try:
        Roster(settings.home, old).rewrap(new)
    except RosterError:
        Roster(settings.home, new).names()   # re-keyed by an earlier run that was interrupted; else this raises
    counts = {name: changed.get(Path(os.path.abspath(root)), 0) for name, root in local.items()}
    if args.json:
        print_json({"rewrapped": counts, "not_rotated": left, "key_file": str(args.new_key_file)})
    else:
        for name, count in counts.items():
            print(f"{name}: {count} objects re-wrapped")
        for name in left:
            print(f"{name}: an S3 replica, write-once, stays under the old key and cannot take new copies: keep "
                  "the old key as long as it is kept, and point [[replicas]] at a new bucket, which the worker fills")
        print(f"now set [encryption] key_file = \"{args.new_key_file.resolve()}\" (key_source = \"file\")")
    return EXIT_OK
