"""The reports themselves: every template renders, with the seed document's figures."""

import io
import string

import pytest

import send_exec_reports as ser

CONTEXT = {"cycle": "2026-11-29", "prepared_by": "Reports Desk",
           "generated_at": "2026-11-29 03:00 UTC"}

# The figures and findings each report must carry, from shared/seed.
SEED_FACTS = {
    "ceo": ["ASSET INVENTORY", "CRITICAL SHORTFALLS (8)", "Empty sales pipeline",
            "Revenue tracking gaps", "Sergio equity risk", "Zero OTA listings",
            "DC billing model absent", "QDN funnel breakage", "Carole transition risk",
            "MISSING KPIS (9)", "30-DAY EXECUTION AGENDA, FROM 2026-11-29"],
    "cto": ["Hardcoded Stripe keys", "Plaintext repos.env", "Google Apps Script",
            "Web Application Firewall", "SECURITY GAPS (6)", "~$50-84/month", "~$25/month",
            "availability calendar", "No CI/CD pipeline", "No staging environment",
            "automated rollback", "TEN ENGINEERING ACTIONS", "10. "],
    "accounting": ["No accounting system is currently deployed", "REVENUE RECOGNITION",
                   "CHART OF ACCOUNTS AUDIT", "EXPENSE CATEGORISATION BY FUNCTION",
                   "FOUR-MILESTONE ROADMAP", "Q1 2027", "M4"],
    "cmo": ["VISIBILITY MATRIX", "3,676", "$10K-50K", "Sailo first", "GetMyBoat second",
            "certificate of insurance", "QDN LOCAL SEO ROADMAP", "30/60/90-DAY MILESTONES",
            "ATTRIBUTION TRACKING"],
    "cfo": ["$7-9K", "6 charters/month", "Zero-cost initiatives", "Low-cost infrastructure",
            "Revenue-producing features", "No-deploy guardrails", "Q4 2026",
            "No hardcoded keys", "Audit trail on all expenses",
            "COI verification before charter acceptance"],
    "rental-3028": ["PROPERTY ASSET VALUATION", "RENTAL REVENUE VISIBILITY",
                    "MAINTENANCE CATEGORY", "SEASONAL DEMAND", "OCCUPANCY RATE TARGETS"],
    "yacht-delivery": ["SERVICE DELIVERY MODEL", "CAPACITY CONSTRAINTS",
                       "COST-PER-DELIVERY", "JADA CHARTER WORKFLOW"],
    "dc-portfolio": ["BILLING GAP", "REVENUE RECOGNITION BY CLIENT TIER",
                     "CONTRACT RENEWAL CALENDAR", "CHURN RISK"],
}


def test_there_are_eight_reports_in_the_agreed_order():
    assert [spec.report_id for spec in ser.REPORTS] == [
        "ceo", "cto", "accounting", "cmo", "cfo", "rental-3028", "yacht-delivery",
        "dc-portfolio"]


@pytest.mark.parametrize("spec", ser.REPORTS, ids=lambda spec: spec.report_id)
def test_every_report_renders_with_its_seed_figures(spec):
    report = ser.render_report(spec, **CONTEXT)  # an unknown placeholder raises here
    assert spec.title in report.subject and "2026-11-29" in report.subject
    assert "prepared by Reports Desk" in report.body
    assert "${" not in report.body + report.html
    text = " ".join(report.body.split())  # facts may be wrapped across lines
    for fact in SEED_FACTS[spec.report_id]:
        assert fact in text, fact


@pytest.mark.parametrize("template", [ser.HEADER_TEMPLATE, ser.FOOTER_TEMPLATE,
                                      *(spec.template for spec in ser.REPORTS)])
def test_templates_name_only_placeholders_that_exist(template):
    names = {m.group("braced") for m in template.pattern.finditer(template.template)
             if m.group("braced")}
    assert names <= {"title", "cycle", "prepared_by", "generated_at", "version", "variant"}
    assert not [m for m in template.pattern.finditer(template.template) if m.group("invalid")]


def test_a_misspelled_placeholder_fails_at_render_time_not_silently():
    broken = ser.ReportSpec("broken", "Broken", ser.ReportTemplate("Cycle ${cycel}"))
    with pytest.raises(KeyError, match="cycel"):
        ser.render_report(broken, **CONTEXT)


def test_dollar_amounts_are_text_not_placeholders():
    template = ser.ReportTemplate("Burn $7-9K, $cycle stays, ${cycle} is filled")
    assert template.substitute(cycle="C1") == "Burn $7-9K, $cycle stays, C1 is filled"
    assert isinstance(template, string.Template)


def test_list_prints_ids_and_titles_without_reading_settings(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    code = ser.main(["--list", "--env-file", str(tmp_path / "absent.env")],
                    stdout=out, stderr=err)
    assert code == 0 and err.getvalue() == ""
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == [s.report_id for s in ser.REPORTS]
    assert "3028 51st St Rental Audit" in lines[5]


@pytest.mark.parametrize("only", ["ceo,nope", "nope", ",", "CEO"])
def test_an_unknown_report_id_is_a_usage_error_naming_it(only):
    out, err = io.StringIO(), io.StringIO()
    assert ser.main(["--only", only], stdout=out, stderr=err) == 64
    assert "valid ids: ceo, cto, accounting" in err.getvalue()
    assert out.getvalue() == ""


@pytest.mark.parametrize("argv", [["--bogus"], ["--cycle", "2026 11 29"],
                                  ["--cycle", "x\nSubject: y"], ["--only"]])
def test_usage_errors_exit_64_with_one_line(argv):
    out, err = io.StringIO(), io.StringIO()
    assert ser.main(argv, stdout=out, stderr=err) == 64
    assert len(err.getvalue().strip().splitlines()) == 1


def test_select_reports_keeps_the_standard_order():
    chosen = ser.select_reports("cfo, ceo,cfo")
    assert [spec.report_id for spec in chosen] == ["ceo", "cfo"]
