"""API keys for clients that cannot do OAuth2: a file of their hashes, client ids and scopes.

    python -m core.api_keys new --client retention-batch --scopes inference --file data/secrets/api_keys.json
    python -m core.api_keys revoke --client retention-batch --file data/secrets/api_keys.json
    python -m core.api_keys local      # make up: the local clients' key, made once (every scope)

The file is a JSON list of {"client_id", "sha256", "scopes"}; a key itself is printed once and
stored nowhere, but for the local one: `make up` keeps it in DATA_DIR/secrets/local.key (mode 600),
where the local tools (locust, the rollout CLI, the benchmarks) find it. A key is 32 random bytes, so one SHA-256 is a safe hash for it (a slow password
hash guards guessable secrets; these are not). The service re-reads the file when it changes:
adding or revoking a key needs no restart (bentos/auth.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from pathlib import Path
from typing import Annotated

import typer

PREFIX = "fsk_"  # so a leaked key is recognisable in a scanner's findings
SCOPES = ("inference", "explain", "admin")
KEYS_FILE = "api_keys.json"  # the hashes, in the secrets folder (Settings.secrets_dir)
LOCAL_KEY = "local.key"  # the local clients' key, beside them
LOCAL_CLIENT = "local"
KEY_ENV, KEY_FILE_ENV = "FINTECH_API_KEY", "FINTECH_API_KEY_FILE"  # what a client sends, or the file holding it


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys(path: Path) -> list[dict]:
    """The file's entries, every one checked before any is used; ValueError naming what is wrong
    (with the entry's index) for a file that is not a JSON list of {"client_id": text,
    "sha256": 64 hex digits, "scopes": a non-empty list of known scopes}, or that names a digest twice."""
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not JSON ({e})") from e
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of keys")  # noqa: TRY004 - one error type for a bad file
    seen = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {i} is not an object")  # noqa: TRY004
        missing = [k for k in ("client_id", "sha256", "scopes") if k not in entry]
        if missing:
            raise ValueError(f"{path}: entry {i} lacks {', '.join(missing)}")
        if not isinstance(entry["client_id"], str) or not entry["client_id"]:
            raise ValueError(f"{path}: entry {i}: client_id must be non-empty text")
        if not isinstance(entry["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
            raise ValueError(f"{path}: entry {i} ({entry['client_id']}): sha256 must be 64 lower-case hex digits")
        scopes = entry["scopes"]
        if not isinstance(scopes, list) or not scopes or not all(isinstance(x, str) for x in scopes):
            raise ValueError(f"{path}: entry {i} ({entry['client_id']}): scopes must be a non-empty list of text")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise ValueError(f"{path}: entry {i} ({entry['client_id']}) has unknown scopes {unknown}")
        if entry["sha256"] in seen:
            raise ValueError(f"{path}: entry {i} ({entry['client_id']}) repeats another entry's sha256")
        seen.add(entry["sha256"])
    return entries


def write_secret(path: Path, text: str) -> None:
    """Readable by its owner only, written then renamed so that no reader sees half a file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.touch(mode=0o600)
    partial.chmod(0o600)
    partial.write_text(text)
    partial.replace(path)


def write_keys(path: Path, entries: list[dict]) -> None:
    write_secret(path, json.dumps(entries, indent=2))


def new_key(path: Path, client_id: str, scopes: list[str]) -> str:
    """A new key for `client_id` with `scopes`, its hash added to the file; the key is returned, once."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"unknown scopes {unknown or scopes}; choose from {', '.join(SCOPES)}")
    key = PREFIX + secrets.token_urlsafe(32)
    write_keys(path, [*read_keys(path), {"client_id": client_id, "sha256": digest(key), "scopes": sorted(set(scopes))}])
    return key


def revoke(path: Path, client_id: str) -> int:
    """Remove every key of `client_id`; how many were removed."""
    entries = read_keys(path)
    kept = [e for e in entries if e["client_id"] != client_id]
    write_keys(path, kept)
    return len(entries) - len(kept)


def ensure_local_key(secrets_dir: Path) -> tuple[str, bool]:
    """The local clients' key (every scope) and whether it was made now: made once, kept in
    secrets_dir beside the hashes; a key file whose hash was revoked is replaced."""
    keys_file, key_file = secrets_dir / KEYS_FILE, secrets_dir / LOCAL_KEY
    if key_file.exists():
        key = key_file.read_text().strip()
        if any(e["sha256"] == digest(key) for e in read_keys(keys_file)):
            return key, False
        revoke(keys_file, LOCAL_CLIENT)
    key = new_key(keys_file, LOCAL_CLIENT, list(SCOPES))
    write_secret(key_file, key + "\n")
    return key, True


def client_headers(secrets_dir: Path | None = None) -> dict[str, str]:
    """The credential a local tool sends: $FINTECH_API_KEY, else the file $FINTECH_API_KEY_FILE
    names, else the local key in secrets_dir; none when there is none (a service with AUTH_MODE=off)."""
    key = os.environ.get(KEY_ENV, "").strip()
    path = Path(os.environ[KEY_FILE_ENV]) if os.environ.get(KEY_FILE_ENV) else (
        secrets_dir / LOCAL_KEY if secrets_dir is not None else None)
    if not key and path is not None and path.exists():
        key = path.read_text().strip()
    return {"X-API-Key": key} if key else {}


app = typer.Typer(help="API keys of the service's clients (the file AUTH_API_KEYS_FILE names).", no_args_is_help=True)
FileOption = Annotated[Path, typer.Option("--file", help="The API-key file.")]


@app.command("new")
def new_command(client: Annotated[str, typer.Option(help="Client id, as the audit trail names it.")],
                file: FileOption,
                scopes: Annotated[str, typer.Option(help="Comma-separated: inference, explain, admin.")] = "inference") -> None:
    """Create a key, add its hash to the file and print the key (it is shown only now)."""
    try:
        key = new_key(file, client, [s.strip() for s in scopes.split(",") if s.strip()])
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--scopes") from e
    typer.echo(key)


@app.command("revoke")
def revoke_command(client: Annotated[str, typer.Option(help="Client id whose keys are removed.")], file: FileOption) -> None:
    """Remove a client's keys; a running service stops accepting them within a second."""
    typer.echo(f"revoked {revoke(file, client)} key(s) of {client}")


@app.command("local")
def local_command(port: Annotated[int, typer.Option(help="The port the printed example calls.")] = 3000) -> None:
    """Make the local clients' key if there is none (every scope; DATA_DIR/secrets), and say how to use it."""
    from core.settings import get_settings

    secrets_dir = get_settings().secrets_dir
    _, made = ensure_local_key(secrets_dir)
    key_file = secrets_dir / LOCAL_KEY
    typer.echo(f"{'made' if made else 'using'} the local API key (scopes {', '.join(SCOPES)}): {key_file}\n"
               f"  the service accepts it (AUTH_MODE=on, the default); locust and the rollout CLI send it.\n"
               f"  curl -s localhost:{port}/api/v1/inference/churn-score -H \"X-API-Key: $(cat {key_file})\" \\\n"
               f"       -H 'content-type: application/json' -d '{{\"customer_id\": \"C0000001\"}}'")


if __name__ == "__main__":
    app()
