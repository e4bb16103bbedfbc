"""utils.book: setup() and the claims ledger (record_claims)."""
import json

import numpy as np
import pytest
import torch

import utils.book as book
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


def test_claim_validation():
    assert Claim("c", "p", "o", np.float64(0.1) < 0.2).passed is True
    assert Claim("c", "p", "o", torch.tensor(0.3) < 0.2).passed is False
    with pytest.raises(TypeError, match="passed must be a bool"):
        Claim("c", "p", "o", "yes")
    with pytest.raises(TypeError, match="passed must be a bool"):
        Claim("c", "p", "o", 1.0)
    with pytest.raises(TypeError, match="ours must be a str"):
        Claim("c", "p", 0.97, True)
    with pytest.raises(ValueError, match="claim must not be empty"):
        Claim(" ", "p", "o", True)


def test_record_claims_writes_the_ledger(results):
    claims = [Claim("linearity rises with N", "> 0.96", "0.97", True),
              Claim("D_L matches D_G", "< 0.05", "0.09", False, reproduced=False)]
    record_claims("03_linearity", claims, book.setup("cpu"))
    rows = json.loads((results / "03_linearity.json").read_text())
    assert [set(r) for r in rows] == [set(book.LEDGER_KEYS)] * 2
    assert rows[0] == {"claim": "linearity rises with N", "paper": "> 0.96", "ours": "0.97",
                       "profile": "cpu", "passed": True, "reproduced": True}
    assert rows[1]["reproduced"] is False and rows[1]["passed"] is False


def test_record_claims_asserts_at_cpu_and_gpu_only(results):
    claims = [Claim("a", "1", "1", True), Claim("b broke", "< 0.05", "0.30", False)]
    for name in ("cpu", "gpu"):
        with pytest.raises(AssertionError, match=r"(?s)1 of 2 claims of ch failed.*b broke: paper < 0.05, ours 0.30"):
            record_claims("ch", claims, name)
        assert (results / "ch.json").is_file()            # the ledger is written before asserting
    record_claims("ch", claims, "smoke")                  # smoke checks code paths, not science
    assert json.loads((results / "ch.json").read_text())[1]["profile"] == "smoke"


def test_not_reproduced_claims_are_not_asserted(results, capsys):
    claims = [Claim("a", "1", "1", True), Claim("too small a scale", "0.9", "0.5", False, reproduced=False)]
    record_claims("ch", claims, "cpu")
    out = capsys.readouterr().out
    assert "1 / 2 claims reproduced at profile cpu" in out and "[not reproduced] too small a scale" in out


def test_record_claims_validates_inputs(results):
    ok = [Claim("a", "1", "1", True)]
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
    html = book.ClaimsTable([Claim("x < y & z", "p", "o", False)], "gpu")._repr_html_()
    assert "x &lt; y &amp; z" in html and "FAIL" in html and "0 / 1 claims reproduced at profile gpu" in html


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
    held = Claim("c", "< 0.05", "0.01", True, expected_to_fail="too few training steps")
    assert held.status == "pass" and "expected not to hold" in held.ours and "it held nonetheless" in held.ours
    failed = Claim("c", "< 0.05", "0.3", False, expected_to_fail="too few training steps")
    assert failed.status == "not reproduced" and "it did not" in failed.ours
    assert Claim("c", "p", "o", False).status == "FAIL"
    with pytest.raises(ValueError, match="not both"):
        Claim("c", "p", "o", False, reproduced=False, expected_to_fail="why")
    with pytest.raises(TypeError):
        Claim("c", "p", "o", True, expected_to_fail=True)
