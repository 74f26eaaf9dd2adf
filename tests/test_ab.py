"""Compare the editions: --ab reads what the audit log says of variants a and b (their
sends, and the deliveries, opens and clicks SES reported of them) and names a leader
only where the difference is beyond chance.  The logs here are written as the script
writes them; tests/test_events.py puts the same events through the queue."""

import json
from datetime import date, timedelta

import pytest

import send_exec_reports as ser
from conftest import BCC, RECIPIENT

REPORTS = len(ser.REPORTS)


def sent_record(cycle, variant, report, number):
    return {"ts": f"{cycle}T07:00:00.000+00:00", "cycle": cycle, "variant": variant,
            "report": report, "status": "sent", "message_id": f"{variant}-{number}",
            "to": [RECIPIENT], "bcc": [BCC]}


def event_record(send, kind, recipient=""):
    return {"ts": f"{send['cycle']}T09:00:00.000+00:00", "cycle": send["cycle"],
            "variant": send["variant"], "report": send["report"], "status": "event",
            "event": kind, "message_id": send["message_id"], "recipient": recipient,
            "event_time": f"{send['cycle']}T08:00:00.000Z", "matched": True,
            "event_id": f"{send['message_id']}:{kind}:{recipient}"}


def write_log(path, cycles, opened, clicked=None, *, delivered=True, twice=False):
    """cycles of both variants, every report each; opened[v] (and clicked[v]) of each
    variant's messages, in order, get an open (a click) event, and with twice one more."""
    records, numbers = [], {"a": 0, "b": 0}
    for step in range(cycles):
        cycle = (date(2026, 1, 1) + timedelta(days=7 * step)).isoformat()
        for variant in "ab":
            for report in ser.REPORT_IDS:
                send = sent_record(cycle, variant, report, numbers[variant])
                records.append(send)
                if delivered:
                    records += [event_record(send, "delivery", RECIPIENT),
                                event_record(send, "delivery", BCC)]
                if numbers[variant] < opened[variant]:
                    records += [event_record(send, "open")] * (2 if twice else 1)
                if clicked and numbers[variant] < clicked[variant]:
                    records.append(event_record(send, "click"))
                numbers[variant] += 1
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def ab(run_script, *args):
    result = run_script("--ab", *args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def words(text):
    return " ".join(text.split())


def test_few_cycles_name_no_leader_and_say_how_many_more_would(run_script):
    write_log(run_script.audit_log, 2, {"a": 4, "b": 9}, twice=True)
    said = words(ab(run_script))
    messages = 2 * REPORTS
    # Unique opens: the second open of a message counts once.
    assert f"opens: too few to tell, a 4 of {messages}" in said
    assert f"b 9 of {messages}" in said and "leads" not in said
    assert "more cycle(s) of each variant would tell" in said
    assert "Fisher's exact test" in said or "z-test" in said
    # Deliveries count the To recipient, never the audit inbox's copy.
    assert f"{messages} (100%)" in said


def test_many_cycles_name_the_leader_and_swapping_the_counts_swaps_it(run_script):
    cycles = 12
    write_log(run_script.audit_log, cycles, {"a": 20, "b": 70})
    assert "opens: variant b leads" in words(ab(run_script, str(cycles)))
    write_log(run_script.audit_log, cycles, {"a": 70, "b": 20})
    assert "opens: variant a leads" in words(ab(run_script, str(cycles)))


def test_the_same_rates_say_more_cycles_would_not_part_them(run_script):
    write_log(run_script.audit_log, 3, {"a": 10, "b": 10}, {"a": 2, "b": 2})
    said = words(ab(run_script))
    assert "opens: too few to tell" in said and "would not part them" in said
    assert "clicks: too few to tell" in said


def test_without_open_events_the_opens_are_not_shown_as_zero(run_script):
    write_log(run_script.audit_log, 2, {"a": 0, "b": 0})
    said = ab(run_script)
    assert "opens: none recorded in these cycles, so none are shown as 0" in words(said)
    assert "clicks: none recorded" in said
    rows = said.splitlines()[3:5]  # under the heading and its rule
    assert [row.split()[0] for row in rows] == ["a", "b"]
    assert all(row.split()[6:8] == ["-", "-"] for row in rows)  # opened, clicked


def test_a_variant_that_sent_nothing_is_said_and_no_log_is_no_traceback(run_script):
    assert "no reports sent in these cycles" in ab(run_script)
    records = [sent_record("2026-12-01", "a", "ceo", 0)]
    records.append(event_record(records[0], "open"))
    run_script.audit_log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert "opens: a variant sent nothing in these cycles" in words(ab(run_script))


@pytest.mark.parametrize("hits, sent, expected", [
    ((3, 1), (4, 4), 0.4857),  # the textbook tea-tasting table
    ((0, 5), (5, 5), 0.0079),
    ((5, 5), (10, 10), 1.0)])
def test_fishers_test_gives_the_textbook_p_values(hits, sent, expected):
    assert ser.fisher_p(hits, sent) == pytest.approx(expected, abs=5e-4)


def test_small_counts_take_fishers_test_not_the_normal_one():
    p_value, test = ser.two_proportion_p((0, 5), (5, 5))  # expected counts of 2.5
    assert (test, round(p_value, 4)) == ("Fisher's exact test", 0.0079)


def test_the_z_test_is_used_where_the_counts_allow_it():
    p_value, test = ser.two_proportion_p((40, 60), (100, 100))
    assert test == "two-proportion z-test"
    assert p_value == pytest.approx(0.00468, abs=5e-5)  # z = 2.828


def test_ab_takes_a_positive_number_of_cycles(run_script):
    result = run_script("--ab", "0")
    assert result.returncode == 64 and "--ab takes a number of cycles" in result.stderr
