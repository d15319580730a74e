#!/usr/bin/env python3
"""Helpers for scripts/validate_deploy.sh (run with its venv's python: needs PyYAML, jsonschema
and cloudcoil-models-prometheus-operator).

  sm-schema OUT                      strict JSON schema of monitoring.coreos.com/v1 ServiceMonitor
  servicemonitors SCHEMA N FILE...   validate every ServiceMonitor in FILEs (exactly N of them)
  configmap-key FILE NAME KEY OUT    write data[KEY] of ConfigMap NAME in FILE (multi-doc) to OUT
  stage CONFIG DIR MERIDIAN          copy CONFIG into DIR with /etc/meridian/... paths moved under
                                     DIR, creating each referenced file (PEMs, signing keys)
"""

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

MOUNT = "/etc/meridian/"


def docs(files):
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for d in yaml.safe_load_all(fh):
                if d:
                    yield f, d


def strict(node):
    """additionalProperties: false on every object schema that lists its properties and does
    not already say what extra keys may be (maps such as labels keep theirs)."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            strict(v)
    elif isinstance(node, list):
        for v in node:
            strict(v)
    return node


def sm_schema(out):
    from cloudcoil.models.prometheus_operator import v1

    schema = v1.ServiceMonitor.model_json_schema(by_alias=True, mode="validation")
    strict(schema)
    # A manifest must say what it is (the model defaults these; kubectl needs them).
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    Path(out).write_text(json.dumps(schema, indent=1, sort_keys=True))
    print(f"ServiceMonitor schema: {len(schema.get('$defs', {}))} definitions -> {out}")


def servicemonitors(schema_file, expect, files):
    import jsonschema

    schema = json.loads(Path(schema_file).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    found = [(f, d) for f, d in docs(files) if d.get("kind") == "ServiceMonitor"]
    failed = 0
    for f, d in found:
        errors = sorted(validator.iter_errors(d), key=lambda e: list(e.absolute_path))
        name = d.get("metadata", {}).get("name")
        for e in errors:
            path = ".".join(str(p) for p in e.absolute_path) or "(root)"
            print(f"ERROR {f}: ServiceMonitor/{name}: {path}: {e.message}")
        failed += bool(errors)
    # Negative control: the same object with one unknown field must be rejected, or the
    # schema is not strict and the check above proves nothing.
    if found:
        bad = copy.deepcopy(found[0][1])
        bad["spec"]["endpoints"][0]["bearerTokenSecrett"] = {"name": "x", "key": "y"}
        if validator.is_valid(bad):
            print("ERROR the strict ServiceMonitor schema accepted an unknown field")
            failed += 1
    if len(found) != expect:
        print(f"ERROR expected {expect} ServiceMonitor(s), found {len(found)}")
        failed += 1
    print(f"{len(found)} ServiceMonitor(s) checked against the strict schema, {failed} failure(s)")
    return 1 if failed else 0


def configmap_key(file, name, key, out):
    for _, d in docs([file]):
        if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == name:
            Path(out).write_text(d["data"][key])
            return 0
    print(f"ERROR {file}: no ConfigMap {name}")
    return 1


# `key = "/etc/meridian/..."` lines; the key says what the file must hold.
PATH_LINE = re.compile(r'^\s*([A-Za-z0-9_]+)\s*=\s*"(' + re.escape(MOUNT) + r'[^"]+)"', re.M)


def pem(path, kind):
    """A self-signed certificate and its key from openssl when there is one, else text in PEM
    armour (`meridian check` checks that the files can be read; the edge parses them at start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("openssl"):
        d = path.parent
        crt, key = d / ".dummy.crt", d / ".dummy.key"
        if not crt.exists():
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-days", "1", "-subj", "/CN=meridian-validate", "-keyout", str(key),
                 "-out", str(crt)],
                check=True, capture_output=True)
        shutil.copy(key if kind == "key" else crt, path)
    else:
        label = "PRIVATE KEY" if kind == "key" else "CERTIFICATE"
        path.write_text(f"-----BEGIN {label}-----\nZHVtbXk=\n-----END {label}-----\n")


def stage(config, outdir, meridian):
    outdir = Path(outdir).resolve()
    text = Path(config).read_text()
    made = []
    for key, path in PATH_LINE.findall(text):
        target = outdir / path[len(MOUNT):]
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if key == "secret_file":
            subprocess.run([meridian, "keygen", "--id", "validate", "--signing", str(target)],
                           check=True, capture_output=True)
        else:
            pem(target, "key" if key in ("key", "client_key") else "cert")
        made.append(path)
    staged = text.replace(MOUNT, str(outdir) + "/")
    if MOUNT in staged:
        print(f"ERROR {config}: a path under {MOUNT} was not moved")
        return 1
    out = outdir / Path(config).name
    out.write_text(staged)
    print(f"staged {out} with {len(made)} stand-in file(s): {', '.join(made) or '-'}")
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "sm-schema":
        sm_schema(args[0])
        return 0
    if cmd == "servicemonitors":
        return servicemonitors(args[0], int(args[1]), args[2:])
    if cmd == "configmap-key":
        return configmap_key(*args)
    if cmd == "stage":
        return stage(*args)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
