"""utils.book: setup() and the claims ledger (record_claims)."""
import json

import numpy as np
import pytest
import torch

import utils.book as book
import utils.claims as claims_mod
from utils.book import Claim, record_claims


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"


def test_setup_resolves_profile_seeds_and_prints_header(capsys):
    prof = book.setup("smoke", seed=3)
    a = (torch.rand(3), np.random.rand(), __import__("random").random())
    out = capsys.readouterr().out
    for word in ("profile", "smoke", "seed", "device", "python", "torch", "numpy", "commit"):
        assert word in out
    assert prof.name == "smoke"
    book.setup("smoke", seed=3)
    b = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_setup_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown profile"):
        book.setup("fast")
    with pytest.raises(TypeError, match="seed"):
        book.setup("smoke", seed="0")


def C(passed, id="ch3.c", kind="check", claim="c", paper="p", ours="o", **kw):
    return Claim(id=id, kind=kind, claim=claim, paper=paper, ours=ours, passed=passed, **kw)


def test_claim_validation():
    assert C(np.float64(0.1) < 0.2).passed is True
    assert C(torch.tensor(0.3) < 0.2).passed is False
    with pytest.raises(TypeError, match="passed must be a bool"):
        C("yes")
    with pytest.raises(TypeError, match="passed must be a bool"):
        C(1.0)
    with pytest.raises(TypeError, match="ours must be a str"):
        C(True, ours=0.97)
    with pytest.raises(ValueError, match="claim must not be empty"):
        C(True, claim=" ")
    with pytest.raises(ValueError, match="ch<N>"):
        C(True, id="linearity")
    with pytest.raises(ValueError, match="kind must be one of"):
        C(True, kind="theorem")
    with pytest.raises(ValueError, match="figure"):
        C(True, kind="paper")                             # a paper claim names its figure or section
    with pytest.raises(ValueError, match="figure numbers"):
        C(True, kind="paper", figures=(31,))
    with pytest.raises(ValueError, match="names where"):
        C(True, kind="paper", source="kamb2024analytic")
    assert C(True, kind="paper", figures=[1, 13]).figures == (1, 13)
    assert C(True, kind="paper", where="App. D").where == "App. D"
    with pytest.raises(TypeError):
        Claim("c", "p", "o", True)                        # keywords only


def test_compare_and_margins():
    t = claims_mod.compare(0.04, "<", 0.05)
    assert t.passed and t.margin == pytest.approx(0.2)
    t = claims_mod.compare(0.049, "<", 0.05)
    assert t.passed and t.margin == pytest.approx(0.02)
    assert C(t.passed, margin=t.margin).status == "pass (marginal)"
    assert C(True, margin=0.2).status == "pass" and C(True).status == "pass"
    t = claims_mod.compare(0.97, ">=", 0.96)
    assert t.passed and t.margin == pytest.approx(0.01 / 0.96)
    assert not claims_mod.compare(float("nan"), "<", 1).passed
    assert claims_mod.compare(0.1, ">", 0).margin == pytest.approx(0.1)
    both = claims_mod.all_of(claims_mod.compare(1, "<", 2), claims_mod.compare(0.99, ">", 0.98))
    assert both.passed and both.margin == pytest.approx(0.01 / 0.98)
    assert not claims_mod.all_of(claims_mod.compare(3, "<", 2), claims_mod.compare(1, "<", 2)).passed
    with pytest.raises(ValueError, match="op"):
        claims_mod.compare(1, "==", 1)


def test_record_claims_writes_the_ledger(results):
    claims = [C(True, id="ch3.rises", kind="paper", figures=(1,), claim="linearity rises with N", paper="> 0.96",
                ours="0.97", margin=0.01),
              C(False, id="ch3.match", claim="D_L matches D_G", paper="< 0.05", ours="0.09",
                expected_to_fail="under-trained")]
    record_claims("03_linearity", claims, book.setup("cpu"))
    rows = json.loads((results / "03_linearity.json").read_text())
    assert [set(r) for r in rows] == [set(claims_mod.LEDGER_KEYS)] * 2
    assert rows[0]["id"] == "ch3.rises" and rows[0]["kind"] == "paper" and rows[0]["figures"] == [1]
    assert rows[0]["status"] == "pass (marginal)" and rows[0]["profile"] == "cpu" and rows[0]["passed"] is True
    assert rows[1]["status"] == "not reproduced" and rows[1]["passed"] is False
    assert "expected not to hold at this scale: under-trained; it did not" in rows[1]["ours"]


def test_record_claims_checks_ids_against_the_chapter(results):
    with pytest.raises(ValueError, match="unique"):
        record_claims("03_linearity", [C(True), C(True)], "cpu")
    with pytest.raises(ValueError, match="'ch3.'"):
        record_claims("03_linearity", [C(True, id="ch2.x")], "cpu")


def test_record_claims_asserts_at_cpu_and_gpu_only(results, monkeypatch):
    monkeypatch.delenv("HGB_STRICT_CLAIMS", raising=False)
    claims = [C(True, id="ch9.a"), C(False, id="ch9.b", claim="b broke", paper="< 0.05", ours="0.30")]
    for name in ("cpu", "gpu"):
        with pytest.raises(AssertionError, match=r"(?s)1 of 2 claims of ch failed.*ch9.b: b broke: paper < 0.05, ours 0.30"):
            record_claims("ch", claims, name)
        assert (results / "ch.json").is_file()            # the ledger is written before asserting
    record_claims("ch", claims, "smoke")                  # smoke checks code paths, not science
    assert json.loads((results / "ch.json").read_text())[1]["profile"] == "smoke"


def test_on_colab_a_failing_claim_is_one_message_not_a_traceback(results, monkeypatch, capsys):
    monkeypatch.delenv("HGB_STRICT_CLAIMS", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "google.colab", object())
    claims = [C(True, id="ch9.a"), C(False, id="ch9.b", claim="b broke")]
    record_claims("ch", claims, "gpu")
    out = capsys.readouterr().out
    assert "1 of 2 claims of ch failed" in out and "[FAIL] ch9.b" in out
    monkeypatch.setenv("HGB_STRICT_CLAIMS", "1")              # make book PROFILE=colab stays strict
    with pytest.raises(AssertionError):
        record_claims("ch", claims, "gpu")


def test_not_reproduced_claims_are_not_asserted(results, capsys):
    claims = [C(True, id="ch9.a", kind="paper", figures=(2,)),
              C(False, id="ch9.b", kind="paper", figures=(2,), claim="too small a scale", expected_to_fail="why")]
    record_claims("ch", claims, "cpu")
    out = capsys.readouterr().out
    assert "paper claims reproduced: 1 of 2" in out and "[not reproduced] ch9.b (paper) too small a scale" in out


def test_record_claims_validates_inputs(results):
    ok = [C(True)]
    for stem in ("", "  ", None, "book/03_linearity", "03_linearity.ipynb"):
        with pytest.raises(ValueError, match="stem"):
            record_claims(stem, ok, "cpu")
    with pytest.raises(ValueError, match="non-empty list"):
        record_claims("ch", [], "cpu")
    with pytest.raises(TypeError, match=r"claims\[1\] is a dict"):
        record_claims("ch", ok + [{"claim": "a"}], "cpu")
    with pytest.raises(ValueError, match="profile"):
        record_claims("ch", ok, "fast")


def test_claims_table_html_escapes_and_colours():
    html = book.ClaimsTable([C(False, claim="x < y & z")], "gpu")._repr_html_()
    assert "x &lt; y &amp; z" in html and "FAIL" in html and "checks and controls holding: 0 of 1" in html
    assert "ch3.c" in html


def test_glue_converts_numbers_and_checks_arguments():
    assert book.glue("a_number", np.float64(0.25)) is None
    book.glue("a_tensor", torch.tensor(3))
    book.glue("a_text", "0.1 / 0.2")
    with pytest.raises(ValueError, match="identifier"):
        book.glue("not a name", 1.0)
    with pytest.raises(ValueError, match="one value"):
        book.glue("two", torch.zeros(2))
    with pytest.raises(TypeError, match="number or a string"):
        book.glue("a_list", [1, 2])


def test_claim_expected_to_fail_lets_the_run_decide():
    held = C(True, expected_to_fail="too few training steps")
    assert held.status == "pass" and "expected not to hold" in held.ours_text and "it held nonetheless" in held.ours_text
    failed = C(False, expected_to_fail="too few training steps")
    assert failed.status == "not reproduced" and "it did not" in failed.ours_text
    assert C(False).status == "FAIL"
    with pytest.raises(TypeError):
        C(True, expected_to_fail=True)


def test_expected_reads_the_settings_by_id():
    class S:
        expected_to_fail = {"clearly_smaller": "why", "ch3.full_id": "because"}
    assert claims_mod.expected(S, "ch3.clearly_smaller") == "why"
    assert claims_mod.expected(S, "ch3.full_id") == "because"
    assert claims_mod.expected(S, "ch3.other") == ""
