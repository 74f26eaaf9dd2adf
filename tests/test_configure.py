"""Configuring: repos.env is checked before any network call, every problem at once."""

import pytest

import send_exec_reports as ser
from conftest import BCC, FROM_NAME, GOOD_SETTINGS, RECIPIENT, SENDER, display_name


@pytest.mark.parametrize("name", ser.REQUIRED_SETTINGS)
def test_a_missing_setting_is_named_and_nothing_is_sent(run_script, ses, name):
    run_script.settings(**{name: None})
    result = run_script()
    assert result.returncode == 78
    assert f"config error: {name} is missing" in result.stderr
    assert "Traceback" not in result.stderr
    assert ses.messages() == []
    assert run_script.audit_records() == []


@pytest.mark.parametrize("name", ser.REQUIRED_SETTINGS)
def test_an_empty_setting_is_named(run_script, ses, name):
    run_script.settings(**{name: "  "})
    result = run_script()
    assert result.returncode == 78
    assert f"config error: {name} is empty" in result.stderr
    assert ses.messages() == []


def test_every_problem_is_reported_at_once(run_script, ses):
    run_script.settings(AWS_SES_REGION="mars-north", AWS_SES_FROM_ADDRESS="nobody",
                        AWS_SES_FROM_NAME="Ops\nBcc: victim@example.net",
                        AWS_RECIPIENT_EMAIL=None, AWS_BCC_EMAIL="")
    result = run_script()
    assert result.returncode == 78
    problems = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert len(problems) == 5
    for name in ser.REQUIRED_SETTINGS:
        assert sum(name in line for line in problems) == 1, name
    assert ses.messages() == []


BAD_ADDRESSES = ["not-an-address", "owner@", "@example.com", "owner@localhost",
                 "Owner <owner@example.com>", "a@@example.com", "owner@-example.com",
                 "ówner@example.com"]


# Single-address settings refuse a list; list settings check every entry.
ADDRESS_CASES = [
    *((name, bad) for name in ("AWS_SES_FROM_ADDRESS", "AWS_BCC_EMAIL")
      for bad in [*BAD_ADDRESSES, "a@example.com, b@example.com"]),
    *((name, bad) for name in ("AWS_RECIPIENT_EMAIL", "AWS_RECIPIENT_EMAIL_B",
                               "REPORT_TO_CEO", "REPORT_TO_RENTAL_3028_B")
      for bad in [*BAD_ADDRESSES, "a@example.com,,b@example.com",
                  "a@example.com, not-an-address"]),
]


@pytest.mark.parametrize("name, bad", ADDRESS_CASES)
def test_an_address_setting_refuses_anything_but_valid_addresses(run_script, ses, name, bad):
    run_script.settings(**{name: bad})
    result = run_script()
    assert result.returncode == 78
    assert f"config error: {name}" in result.stderr
    assert ses.messages() == []


@pytest.mark.parametrize("name", ser.REQUIRED_SETTINGS)
@pytest.mark.parametrize("line_break", ["\n", "\r", "\r\n", "\u2028"])
def test_a_line_break_in_any_setting_is_header_injection(run_script, ses, name, line_break):
    value = GOOD_SETTINGS[name] + line_break + "Bcc: victim@example.net"
    result = run_script(env={name: value})  # the environment can carry any character
    assert result.returncode == 78
    assert f"config error: {name} contains a line break" in result.stderr
    assert ses.messages() == []


def test_a_line_break_written_in_the_env_file_is_refused_too(run_script, ses):
    run_script.settings(AWS_SES_FROM_NAME="Reports\nBcc: victim@example.net")
    result = run_script()
    assert result.returncode == 78
    assert "AWS_SES_FROM_NAME contains a line break" in result.stderr


@pytest.mark.parametrize("region", ["us-east", "US-EAST-1", "useast1", "mars-1", "us east 1"])
def test_the_region_must_be_an_aws_region_name(run_script, ses, region):
    run_script.settings(AWS_SES_REGION=region)
    result = run_script()
    assert result.returncode == 78
    assert "config error: AWS_SES_REGION" in result.stderr


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-2", "ap-southeast-5", "us-gov-west-1"])
def test_real_region_names_are_accepted(region):
    assert ser.required_setting_problem("AWS_SES_REGION", region) is None


def test_a_missing_env_file_says_how_to_create_it(run_script, ses):
    run_script.env_file.unlink()
    result = run_script()
    assert result.returncode == 78
    assert "repos.env.example" in result.stderr
    assert ses.messages() == []


def test_half_set_access_keys_are_a_config_error_without_showing_the_key(run_script, ses):
    result = run_script(env={"AWS_ACCESS_KEY_ID": "AKIAVISIBLEKEYID0001",
                             "AWS_SECRET_ACCESS_KEY": ""})
    assert result.returncode == 78
    assert "AWS_SECRET_ACCESS_KEY is missing" in result.stderr
    assert "AKIAVISIBLEKEYID0001" not in result.stderr + result.stdout
    assert ses.messages() == []


def test_the_environment_wins_over_the_env_file(run_script, ses):
    ses.verify(GOOD_SETTINGS["AWS_SES_FROM_ADDRESS"])
    result = run_script("--only", "ceo", env={"AWS_RECIPIENT_EMAIL": "override@example.org"})
    assert result.returncode == 0, result.stderr
    [message] = ses.messages()
    assert message["destinations"]["ToAddresses"] == ["override@example.org"]


def test_the_ses_endpoint_can_be_set_in_the_env_file(run_script, ses):
    ses.verify(GOOD_SETTINGS["AWS_SES_FROM_ADDRESS"])
    run_script.settings(AWS_ENDPOINT_URL_SES=ses.url)
    result = run_script("--only", "ceo", env={"AWS_ENDPOINT_URL_SES": None})
    assert result.returncode == 0, result.stderr
    assert len(ses.messages()) == 1


def test_a_malformed_endpoint_is_a_config_error(run_script, ses):
    result = run_script(env={"AWS_ENDPOINT_URL_SES": "localhost:4566"})
    assert result.returncode == 78
    assert "config error: AWS_ENDPOINT_URL_SES" in result.stderr


@pytest.mark.parametrize("from_name", [
    FROM_NAME, "Plain Name", "Accounts, Payable", 'The "Desk"', "Crème Brûlée Ops", "報告",
])
def test_the_from_name_reaches_ses_correctly_encoded(run_script, ses, from_name):
    ses.verify(GOOD_SETTINGS["AWS_SES_FROM_ADDRESS"])
    run_script.settings(AWS_SES_FROM_NAME=from_name)
    result = run_script("--only", "cfo")
    assert result.returncode == 0, result.stderr
    [message] = ses.messages()
    assert message["source"].isascii()
    assert display_name(message["source"]) == from_name
    assert message["destinations"] == {"ToAddresses": [RECIPIENT], "BccAddresses": [BCC]}


@pytest.mark.parametrize("value", ["owner@example.com", "first.last+reports@mail.example.co.uk"])
def test_plain_addresses_are_accepted(value):
    assert ser.address_problem(value) is None


def test_config_objects_never_show_secrets():
    settings = {**GOOD_SETTINGS, "AWS_ACCESS_KEY_ID": "AKIASHOWME",
                "AWS_SECRET_ACCESS_KEY": "do-not-show-this"}
    config = ser.parse_config(settings, audit_log_path=None)
    assert "do-not-show-this" not in repr(config)
    assert "AKIASHOWME" not in repr(config)


# (address, valid, taken by the fast dot-atom path): every case asserts all three.
ADDRESS_FORMS = [
    ("owner@example.com", True, True),
    ("first.last+reports@mail.example.co.uk", True, True),
    ("o'brien@example.com", True, True),
    ("a!#$%&'*+/=?^_`{|}~-z@example.com", True, True),
    ('"quoted local"@example.com', True, False),
    ("a..b@example.com", False, False),
    (".a@example.com", False, False),
    ("a.@example.com", False, False),
    ("a b@example.com", False, False),
    ("a@b@example.com", False, False),
    ("a@example..com", False, False),
]


@pytest.mark.parametrize("value, valid, fast", ADDRESS_FORMS)
def test_the_fast_address_check_agrees_with_the_email_package(value, valid, fast):
    matched = ser.DOT_ATOM_ADDRESS.fullmatch(value)
    assert bool(matched) == fast
    assert (ser.address_problem(value) is None) == valid
    if matched:  # the fast path reads the domain as the email package does
        assert ser.parsed_domain(value) == matched.group(2)


@pytest.mark.parametrize("name, value", [
    ("AWS_SES_FROM_NAME", "Caf\udce9"),  # $'Caf\xe9' in a Latin-1 shell
    ("AWS_SESSION_TOKEN", "IQoJb3JpZ2luX2VjEFoaCXVzLWVhc3QtMSJH\nMEUCIQD-second-line-of-it"),
    ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE\nKEY0001"),
])
@pytest.mark.parametrize("previews", [False, True])
def test_a_value_no_header_can_carry_is_refused_unseen(run_script, ses, name, value,
                                                       previews):
    env = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY0001",
           "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", name: value}
    mode = ["--preview-dir", str(run_script.tmp_path / "p")] if previews else []
    result = run_script(*mode, "--cycle", "2026-12-01", env=env)
    assert result.returncode == 78, result.stderr
    assert f"config error: {name} " in result.stderr and "Traceback" not in result.stderr
    assert "second-line" not in result.stderr and "KEY0001" not in result.stderr
    assert ses.messages() == []


def test_a_report_route_in_another_spelling_is_read_not_ignored(run_script, ses):
    ses.verify(SENDER)
    run_script.settings(report_to_cfo="cfo@example.com", Report_To_Cto="cto@example.com",
                        **{"REPORT_TO_RENTAL-3028": "rental@example.com"})
    result = run_script("--cycle", "2026-12-01")
    assert result.returncode == 0, result.stderr
    to = {r["report"]: r["to"] for r in run_script.audit_records()}
    assert to["cfo"] == ["cfo@example.com"] and to["cto"] == ["cto@example.com"]
    assert to["rental-3028"] == ["rental@example.com"] and to["ceo"] == [RECIPIENT]


def test_one_route_named_twice_in_two_spellings_is_refused(run_script):
    run_script.settings(REPORT_TO_CFO="a@example.com", report_to_cfo="b@example.com")
    result = run_script("--dry-run")
    assert result.returncode == 78 and "both name REPORT_TO_CFO" in result.stderr


# --- Settings messages that say the truth (issue 21, item 18) -----------------


def test_an_empty_setting_from_the_environment_says_so(run_script):
    result = run_script("--dry-run", env={"AWS_SES_FROM_NAME": ""})
    assert result.returncode == 78
    assert ("AWS_SES_FROM_NAME is empty in the environment, which wins over repos.env: "
            "unset it (unset AWS_SES_FROM_NAME)") in result.stderr


def test_a_profile_that_is_not_there_is_named_not_called_unreachable(run_script, ses):
    ses.verify(SENDER)
    result = run_script("--cycle", "2026-11-29", env={"AWS_PROFILE": "nosuch"})
    assert result.returncode == 78
    assert "AWS_PROFILE 'nosuch' is not a profile in the AWS config" in result.stderr
    assert "cannot be reached" not in result.stderr and not ses.messages()


@pytest.mark.parametrize("address, part", [
    ("a" * 65 + "@example.com", "its local part has 65 characters, at most 64"),
    ("owner@" + ".".join(["d" * 60] * 5) + ".com", "its domain has 308 characters, at "
                                                    "most 253"),
    ("a" * 64 + "@" + ".".join(["d" * 60] * 3) + ".example.com",
     "its address has 259 characters, at most 254"),
])
def test_an_address_past_rfc_5321s_lengths_is_refused(run_script, address, part):
    result = run_script("--dry-run", env={"AWS_RECIPIENT_EMAIL": address})
    assert result.returncode == 78
    assert f"AWS_RECIPIENT_EMAIL {address[:40]!r}... is too long: {part}" in result.stderr


def test_botocores_own_default_profile_missing_is_one_line(run_script, ses, monkeypatch):
    """botocore reads AWS_DEFAULT_PROFILE from the process itself."""
    ses.verify(SENDER)
    monkeypatch.setenv("AWS_DEFAULT_PROFILE", "nosuch")
    result = run_script("--check", env={"AWS_ACCESS_KEY_ID": None,
                                        "AWS_SECRET_ACCESS_KEY": None})
    assert result.returncode == 78, result.stderr
    assert "AWS_DEFAULT_PROFILE is not a profile" in result.stderr
    assert "Traceback" not in result.stderr
