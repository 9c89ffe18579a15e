"""`optmsg users add-address`: routing an OptMsg number or address to an account that
signed up by itself (sign-up gives a mobile number, not an OptMsg number)."""

from __future__ import annotations

import pytest

from tests.integration.test_cli import cli_env, create_user, run  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("cli_env")


def test_a_number_in_any_spelling_is_added_canonical(capsys: pytest.CaptureFixture[str]) -> None:
    user_id = create_user(capsys)
    code, user, _ = run(
        capsys, "users", "add-address", user_id, "--sms-number", "(415) 555-0177", "--json"
    )
    assert code == 0
    assert "+14155550177" in user["addresses"]


def test_an_email_address_is_added(capsys: pytest.CaptureFixture[str]) -> None:
    user_id = create_user(capsys)
    code, user, _ = run(
        capsys, "users", "add-address", user_id, "--email-address", "Ada@OptMsg.test", "--json"
    )
    assert code == 0
    assert any(a.lower() == "ada@optmsg.test" for a in user["addresses"])


def test_adding_the_same_address_again_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    user_id = create_user(capsys)
    run(capsys, "users", "add-address", user_id, "--sms-number", "+14155550177")
    code, user, _ = run(
        capsys, "users", "add-address", user_id, "--sms-number", "+14155550177", "--json"
    )
    assert code == 0
    assert user["addresses"].count("+14155550177") == 1


def test_an_address_of_another_user_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    first = create_user(capsys)
    second = create_user(capsys, phone="+14155550150", sms="+14155550151")
    code, _, err = run(capsys, "users", "add-address", second, "--sms-number", "(415) 555-0199")
    assert code == 1 and "another user" in err
    _, listed, _ = run(capsys, "users", "list", "--json")
    owners = {u["id"]: u["addresses"] for u in listed["items"]}
    assert "+14155550199" in owners[first] and "+14155550199" not in owners[second]


def test_an_unknown_user_is_not_found(capsys: pytest.CaptureFixture[str]) -> None:
    create_user(capsys)
    code, _, err = run(capsys, "users", "add-address", "usr_nobody", "--sms-number", "+14155550177")
    assert code == 1 and "not found" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--sms-number", "+14155550177", "--email-address", "a@b.test"],
        ["--sms-number", "not a number"],
        ["--email-address", "a@@b"],
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    user_id = create_user(capsys)
    code, _, err = run(capsys, "users", "add-address", user_id, *argv)
    assert code == 2 and err.startswith("optmsg: ")
