"""API keys for clients that cannot do OAuth2: a file of their hashes, client ids and scopes.

    python -m core.api_keys new --client retention-batch --scopes inference --file data/api_keys.json
    python -m core.api_keys revoke --client retention-batch --file data/api_keys.json

The file is a JSON list of {"client_id", "sha256", "scopes"}; the key itself is printed once and
stored nowhere. A key is 32 random bytes, so one SHA-256 is a safe hash for it (a slow password
hash guards guessable secrets; these are not). The service re-reads the file when it changes:
adding or revoking a key needs no restart (bentos/auth.py).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Annotated

import typer

PREFIX = "fsk_"  # so a leaked key is recognisable in a scanner's findings
SCOPES = ("inference", "explain", "admin")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys(path: Path) -> list[dict]:
    """The file's entries; ValueError naming what is wrong with a malformed one."""
    entries = json.loads(path.read_text()) if path.exists() else []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of keys")
    for i, entry in enumerate(entries):
        missing = [k for k in ("client_id", "sha256", "scopes") if k not in entry]
        if missing:
            raise ValueError(f"{path}: entry {i} lacks {', '.join(missing)}")
        unknown = sorted(set(entry["scopes"]) - set(SCOPES))
        if unknown:
            raise ValueError(f"{path}: entry {i} ({entry['client_id']}) has unknown scopes {unknown}")
    return entries


def write_keys(path: Path, entries: list[dict]) -> None:
    """Write then rename, so the service never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(entries, indent=2))
    partial.chmod(0o600)
    partial.replace(path)


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


if __name__ == "__main__":
    app()
