"""Compare the editions: --ab reads what the audit log says of variants a and b (their
sends, and the deliveries, opens and clicks SES reported of them) and names a leader
only where the difference is beyond chance.  The logs here are written as the script
writes them; tests/test_events.py puts the same events through the queue."""

import json
import re
from datetime import date, timedelta

import pytest

import send_exec_reports as ser
from conftest import BCC, RECIPIENT, SENDER

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


def write_log(path, cycles, opened, clicked=None, *, delivered=True, twice=False,
              tracking=None):
    """cycles of both variants, every report each; opened[v] (and clicked[v]) of each
    variant's messages, in order, get an open (a click) event, and with twice one more;
    tracking(variant, step), where given, is what each send record says was tracked."""
    records, numbers = [], {"a": 0, "b": 0}
    for step in range(cycles):
        cycle = (date(2026, 1, 1) + timedelta(days=7 * step)).isoformat()
        for variant in "ab":
            for report in ser.REPORT_IDS:
                send = sent_record(cycle, variant, report, numbers[variant])
                if tracking and tracking(variant, step) is not None:
                    send["tracking"] = tracking(variant, step)
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
    assert "opens: a variant sent nothing tracked in these cycles" in words(ab(run_script))


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


# --- Review of issue 30: what --ab must not claim ------------------------------------------


def test_deliveries_are_not_shown_as_zero_where_none_were_recorded(run_script):
    write_log(run_script.audit_log, 2, {"a": 3, "b": 5}, delivered=False)
    said = ab(run_script)
    rows = said.splitlines()[3:5]
    assert all(row.split()[4] == "-" and row.split()[-2:] == ["-", "-"] for row in rows)
    assert "deliveries, bounces and complaints: none recorded in these cycles" in words(said)


def test_the_event_test_is_no_cycle_of_the_comparison(run_script):
    write_log(run_script.audit_log, 6, {"a": 0, "b": 0})
    with run_script.audit_log.open("a") as log:
        log.write(json.dumps({"ts": "2026-03-01T07:00:00.000+00:00", "cycle": "event-test",
                              "variant": "a", "report": ser.EVENT_TEST_REPORT,
                              "status": "sent", "message_id": "test-0",
                              "to": list(ser.SIMULATOR), "bcc": []}) + "\n")
    rows = ab(run_script).splitlines()[3:5]
    assert [row.split()[1] for row in rows] == ["6", "6"]  # cycles of each variant


def test_events_past_the_lookback_are_warned_of_not_counted_silently(run_script):
    old, new = "2026-01-01", "2026-01-08"
    sends = {(cycle, variant): sent_record(cycle, variant, "ceo", number)
             for number, (cycle, variant) in enumerate(
                 [(old, "a"), (old, "b"), (new, "a"), (new, "b")])}
    records = [*sends.values(), *(event_record(sends[old, v], "open") for v in "ab")]
    records += [dict(event_record(sends[new, "a"], "open"), event_id=f"open-{n}")
                for n in range(ser.EVENTS_LOOKBACK_RECORDS)]
    run_script.audit_log.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run_script("--ab", "2")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "2 event record(s) of these cycles lie beyond the newest" in words(result.stderr)
    quiet = run_script("--ab", "1")  # the newest cycle's events were all read
    assert quiet.returncode == 0 and "lie beyond" not in quiet.stderr


def test_a_leader_is_named_exactly_where_p_is_under_five_percent():
    import random

    rng = random.Random(30)
    for _ in range(400):
        sent = [rng.randint(1, 120), rng.randint(1, 120)]
        hits = [rng.randint(0, sent[0]), rng.randint(0, sent[1])]
        variants = {}
        for variant, count, opened in zip("ab", sent, hits):
            tally = variants[variant] = ser.Tally()
            tally.messages = {f"{variant}{n}": set() for n in range(count)}
            tally.opened = {f"{variant}{n}" for n in range(opened)}
            tally.cycles = {"2026-01-01"}
        said = ser.ab_verdict("opens", "open", variants)
        p_value, _ = ser.two_proportion_p(hits, sent)
        assert ("leads" in said) == (p_value < 0.05), said
        if p_value < 0.05:  # the leader is the higher rate
            higher = "a" if hits[0] / sent[0] > hits[1] / sent[1] else "b"
            assert f"variant {higher} leads" in said
            assert "p = 0.000" not in said
        more = re.search(r"about (\S+) more cycle", said)
        assert more is None or int(more.group(1)) >= 1, said  # never none or fewer


def test_opens_do_not_push_a_permanent_bounce_out_of_the_alarms_lookback(tmp_path):
    from datetime import datetime, timezone

    send = sent_record("2026-01-01", "a", "ceo", 0)
    bounce = dict(event_record(send, "bounce", RECIPIENT),
                  bounce={"type": "Permanent", "subtype": "General", "diagnostic": ""})
    opens = [dict(event_record(send, "open"), event_id=f"open-{n}")
             for n in range(ser.EVENTS_LOOKBACK_RECORDS)]
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in [send, bounce, *opens]))
    problems = ser.delivery_problems(log, [RECIPIENT], datetime(2026, 2, 1, tzinfo=timezone.utc))
    assert len(problems) == 1 and "bounced permanently" in problems[0]


def test_messages_sent_with_tracking_off_are_not_counted_against_a_variant(run_script):
    """Tracking turned on between a's first and second cycle: a's first messages could
    never be opened, and counting them would halve a's rate and crown b."""
    write_log(run_script.audit_log, 2, {"a": 2 * REPORTS, "b": 2 * REPORTS},
              tracking=lambda variant, step: [] if (variant, step) == ("a", 0) else ["open"])
    said = words(ab(run_script))
    assert f"a {REPORTS} of {REPORTS} (100%), b {2 * REPORTS} of {2 * REPORTS}" in said
    assert "leads" not in said


def test_a_send_records_what_was_tracked_only_where_the_setting_says(run_script, ses):
    ses.verify(SENDER)
    assert run_script("--only", "ceo", env={"REPORT_TRACKING": "opens"}).returncode == 0
    assert run_script.audit_records()[-1]["tracking"] == ["open"]
    assert run_script("--only", "cto").returncode == 0
    assert "tracking" not in run_script.audit_records()[-1]  # not set: not known


def test_a_hand_edited_name_reaches_the_terminal_without_its_escape(run_script):
    send = sent_record("2026-12-01", "a\x1b[2J", "ceo\x07", 0)
    records = [send, event_record(send, "open")]
    run_script.audit_log.write_text("".join(json.dumps(r) + "\n" for r in records))
    said = ab(run_script)
    assert "\x1b" not in said and "\x07" not in said and "a?[2J" in said


def test_rates_round_half_up_as_every_share_in_the_reports_does():
    assert ser.count_of(1, 8) == "1 of 8 (13%)"  # 12.5 %, not rounded to even
    assert ser.count_and_rate(5, 8) == "5 (63%)" and ser.count_and_rate(0, 0) == "0"
