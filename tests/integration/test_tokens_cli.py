"""`optmsg tokens list` and `tokens revoke`, run in-process through main() with --json."""

from __future__ import annotations

import pytest

from tests.integration.test_cli import cli_env, create_user, run

__all__ = ["cli_env"]  # the fixture, imported for its use below
pytestmark = pytest.mark.usefixtures("cli_env")


def test_tokens_list_shows_each_device(capsys: pytest.CaptureFixture[str]) -> None:
    user_id = create_user(capsys)
    _, first, _ = run(capsys, "tokens", "create", user_id, "--name", "Pixel", "--json")
    _, second, _ = run(capsys, "tokens", "create", user_id, "--name", "Laptop", "--json")
    code, listing, _ = run(capsys, "tokens", "list", user_id, "--json")
    assert code == 0
    assert [(t["id"], t["device"]) for t in listing["items"]] == [
        (second["id"], "Laptop"),
        (first["id"], "Pixel"),
    ]
    assert all("token" not in t for t in listing["items"])


def test_tokens_revoke_removes_the_token(capsys: pytest.CaptureFixture[str]) -> None:
    user_id = create_user(capsys)
    _, created, _ = run(capsys, "tokens", "create", user_id, "--json")
    code, revoked, _ = run(capsys, "tokens", "revoke", created["id"], "--json")
    assert code == 0 and revoked == {"id": created["id"], "user_id": user_id, "revoked": True}
    assert run(capsys, "tokens", "list", user_id, "--json")[1]["items"] == []


def test_tokens_revoke_of_an_unknown_token_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "tokens", "revoke", "tok_" + "0" * 32, "--json")
    assert code == 1 and "not found" in err


def test_tokens_list_of_an_unknown_user_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "tokens", "list", "usr_nope", "--json")
    assert code == 1 and "not found" in err
