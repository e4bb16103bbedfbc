"""scripts/gpu_check.py, its CPU-side logic: the projection, the report, the refusal without CUDA, and
main() with the device work (timing, notebooks) replaced by fakes. The real thing runs on a GPU
(``make gpu-check``); ``HGB_ALLOW_CPU=1`` runs it on the CPU, marked as such."""
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402


def _run(key, steps, sps, ch=32):
    return dict(key=key, n=64, model_channels=ch, steps=steps, seconds_per_step=sps, seconds=steps * sps)


RUNS = [_run("a", 6000, 0.04), _run("b", 6000, 0.04), _run("c", 1500, 0.04), _run("w4", 6000, 0.01, ch=4)]


def test_project_sums_each_chapters_runs_and_counts_shared_runs_once_in_order():
    keys = {"01_x": [], "02_x": ["a", "b", "w4", "a"], "03_x": ["a", "b"], "04_x": ["a", "c", "cached"]}
    out = gpu_check.project(keys, RUNS)
    assert out["01_x"] == dict(runs=0, steps=0, train_s=0.0, train_after_earlier_s=0.0)
    assert out["02_x"]["runs"] == 3 and out["02_x"]["steps"] == 18000                # "a" twice: one run
    assert out["02_x"]["train_s"] == pytest.approx(240 + 240 + 60)
    assert out["02_x"]["train_after_earlier_s"] == out["02_x"]["train_s"]
    assert out["03_x"]["train_s"] == pytest.approx(480) and out["03_x"]["train_after_earlier_s"] == 0.0
    assert out["04_x"]["runs"] == 2 and out["04_x"]["train_s"] == pytest.approx(240 + 60)   # "cached": free
    assert out["04_x"]["train_after_earlier_s"] == pytest.approx(60)


def test_kinds_group_runs_by_width_and_measured_step():
    kinds = gpu_check.kinds_of(RUNS)
    assert [(k["model_channels"], k["runs"], k["steps"]) for k in kinds] == [(4, 1, 6000), (32, 3, 13500)]
    assert kinds[1]["ms_per_step"] == pytest.approx(40.0)


def _report(device="cuda", **kw):
    rep = gpu_check.Report(device=device, device_name="Fake GPU", timing_steps=100, kinds=gpu_check.kinds_of(RUNS),
                           host={"torch": "x"}, seconds=301.0)
    rep.chapters = [gpu_check.ChapterTiming("02_x", runs=3, steps=18000, train_s=540.0, train_after_earlier_s=540.0,
                                            notebook_s=30.0, status="ok", device_seen="cuda (Fake GPU)"),
                    gpu_check.ChapterTiming("03_x", runs=2, steps=12000, train_s=480.0, train_after_earlier_s=0.0,
                                            notebook_s=20.0, status="ok", device_seen="cuda (Fake GPU)")]
    for k, v in kw.items():
        setattr(rep, k, v)
    return rep


def test_report_on_a_gpu():
    text = gpu_check.format_report(_report())
    assert "CPU RUN" not in text and "on cuda (Fake GPU)" in text
    assert "U-Net     32 ch (edm):      40.0 ms/step" in text and "U-Net      4 ch (edm):      10.0 ms/step" in text
    row = next(line for line in text.splitlines() if line.startswith("02_x"))
    assert "9.0 min" in row and "30 s" in row and "9.5 min" in row and row.endswith("ok")
    assert "17.8 min" in next(line for line in text.splitlines() if line.startswith("chapters run, each from scratch"))
    assert "9.8 min" in next(line for line in text.splitlines() if line.startswith("in order, models kept"))
    assert "lower bounds" in text and "estimate" in text and "The check took 5.0 min" in text
    assert "WARNING" not in text


def test_report_marks_a_cpu_run_and_problems():
    rep = _report(device="cpu")
    rep.chapters[1].status, rep.chapters[1].notebook_s, rep.chapters[1].error = "failed", 3.0, "KeyError: 'x'"
    text = gpu_check.format_report(rep)
    assert text.startswith("*** CPU RUN") and "not a GPU's" in text
    assert "03_x (failed)" in text and "KeyError: 'x'" in text
    assert "WARNING: a notebook ran on another device" in text and "02_x (cuda (Fake GPU))" in text


def test_refuses_without_cuda_unless_opted_in(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("HGB_ALLOW_CPU", raising=False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU.*HGB_ALLOW_CPU=1"):
        gpu_check.main(["--no-notebooks"])


def test_bad_arguments(monkeypatch):
    monkeypatch.setenv("HGB_ALLOW_CPU", "1")
    with pytest.raises(SystemExit, match="not a notebook of _toc.yml"):
        gpu_check.main(["--only", "99_nothing"])
    with pytest.raises(SystemExit, match="timing-steps"):
        gpu_check.main(["--timing-steps", "0", "--no-notebooks"])


def test_main_with_fake_device_work(monkeypatch, tmp_path, capsys):
    """main() end to end on the CPU: the training estimate and the notebooks are fakes, the rest real."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("HGB_ALLOW_CPU", "1")
    stems = [p.stem for p in gpu_check.book_pages.toc_notebooks(REPO)][:2]
    seen = {}

    def fake_measure(got_stems, steps):
        seen["measure"] = (list(got_stems), steps)
        return {stems[0]: [], stems[1]: ["a", "w4"]}, dict(runs=RUNS, text="training 4 of 4 runs on cpu", device="cpu")

    def fake_run(path, out, cell_timeout):
        assert cell_timeout == 60
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"cells": [{"outputs": [{"text": "profile  colab\ndevice   cpu (2 threads)\n"}]}]}))
        ok = path.stem == stems[0]
        return dict(status="ok" if ok else "failed", seconds=2.5,
                    error=None if ok else dict(ename="ValueError", evalue="boom"))

    monkeypatch.setattr(gpu_check, "prepare_environment", lambda workdir, real: seen.setdefault("prepared", workdir))
    monkeypatch.setattr(gpu_check, "measure_training", fake_measure)
    monkeypatch.setattr(gpu_check, "run_chapter", fake_run)
    rc = gpu_check.main(["--only", stems[0], "--only", stems[1], "--cell-timeout", "60", "--deadline", "0",
                         "--workdir", str(tmp_path / "w"), "--json", str(tmp_path / "r.json")])
    assert rc == 1                                          # the second chapter failed
    assert seen["measure"] == (stems, gpu_check.TIMING_STEPS["cpu"])
    out = capsys.readouterr().out
    assert "*** CPU RUN" in out and "training 4 of 4 runs on cpu" in out and "ValueError: boom" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["cpu_run"] and rep["device"] == "cpu" and rep["timing_steps"] == 2
    assert [c["status"] for c in rep["chapters"]] == ["ok", "failed"]
    assert rep["chapters"][1]["train_s"] == pytest.approx(300.0) and rep["chapters"][1]["total_s"] == pytest.approx(302.5)
    assert rep["chapters"][0]["device_seen"] == "cpu (2 threads)"


def test_deadline_skips_the_remaining_notebooks(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("HGB_ALLOW_CPU", "1")
    stem = gpu_check.book_pages.toc_notebooks(REPO)[0].stem
    monkeypatch.setattr(gpu_check, "prepare_environment", lambda workdir, real: None)
    monkeypatch.setattr(gpu_check, "measure_training", lambda s, n: ({stem: []}, dict(runs=[], text="", device="cpu")))
    monkeypatch.setattr(gpu_check, "run_chapter", lambda *a: pytest.fail("ran after the deadline"))
    assert gpu_check.main(["--only", stem, "--deadline", "1e-9", "--workdir", str(tmp_path)]) == 1
    assert f"{stem} (skipped (deadline))" in capsys.readouterr().out


def test_device_line_reads_the_setup_header(tmp_path):
    nb = tmp_path / "n.ipynb"
    nb.write_text(json.dumps({"cells": [{"outputs": []}, {"outputs": [
        {"name": "stdout", "text": ["profile  colab at the smoke budget\n", "device   cuda (NVIDIA H100)\n"]}]}]}))
    assert gpu_check.device_line(nb) == "cuda (NVIDIA H100)"
    assert gpu_check.device_line(tmp_path / "missing.ipynb") == ""


def test_only_timing_without_notebooks(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("HGB_ALLOW_CPU", "1")
    stem = gpu_check.book_pages.toc_notebooks(REPO)[1].stem
    monkeypatch.setattr(gpu_check, "prepare_environment", lambda workdir, real: None)
    monkeypatch.setattr(gpu_check, "measure_training", lambda s, n: ({stem: ["a"]}, dict(runs=RUNS, text="", device="cpu")))
    monkeypatch.setattr(gpu_check, "run_chapter", lambda *a: pytest.fail("--no-notebooks ran a notebook"))
    assert gpu_check.main(["--only", stem, "--no-notebooks", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "did not run" not in out and gpu_check.NOT_RUN in out
    assert "4.0 min" in next(line for line in out.splitlines() if line.startswith(stem))
    assert next(line for line in out.splitlines() if line.startswith("chapters run")).endswith("--")
