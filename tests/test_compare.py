"""``chainrule compare``: tables, JSON, sweeps, plots and refusals."""

from __future__ import annotations

import builtins
import json

import pytest
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import preset, preset_names

from chainrule.cli import main
from chainrule.cmd_compare import parse_sweep
from chainrule.comparison import compare_spec, render_comparison


def _json(capsys, *args):
    assert main(["compare", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_3b1b_chain_json_has_the_documented_fields_and_values(capsys):
    data = _json(capsys, "--preset", "3b1b-chain", "--engine", "sympy")
    # Regression pins: naive 288 and CSE 27 are the code's own output; forward 11 and
    # backprop 25 are derived by hand in test_opcount_by_hand.py.
    assert data["parameters"] == 6
    assert data["forward_ops"] == 11
    assert data["naive_ops"] == 288
    assert data["cse_ops"] == 27
    assert data["backprop_ops"] == 25
    assert data["finite_difference_ops"] == (2 * 6 + 1) * 11
    assert data["finite_difference_one_sided_ops"] == (6 + 1) * 11
    assert data["naive_ops"] > data["cse_ops"] >= data["backprop_ops"]
    assert data["ratios"]["backprop_over_forward"] == pytest.approx(25 / 11)
    per = data["per_parameter"]
    assert [p["name"] for p in per] == ["w1_0_0", "b1_0", "w2_0_0", "b2_0", "w3_0_0", "b3_0"]
    assert sum(p["naive"] for p in per) == data["naive_ops"]
    # The deepest parameter's naive gradient is the longest; its backprop cone is all
    # of the backprop program except the other layers' gradient products.
    assert per[0]["naive"] == max(p["naive"] for p in per)
    assert per[0]["backprop"] <= data["backprop_ops"]
    layers = data["layers"]
    assert [row["layer"] for row in layers] == [1, 2, 3, 0]
    assert sum(row["backprop"] for row in layers[:3]) == data["backprop_ops"]
    assert sum(row["naive"] for row in layers[:3]) == data["naive_ops"]
    assert sum(row["forward"] for row in layers[:3]) == data["forward_ops"]
    assert data["temporaries"]["delta"] == 3


def test_cheatsheet_relu_table(capsys):
    assert main(["compare", "--preset", "cheatsheet-relu"]) == 0
    out = capsys.readouterr().out
    assert "network 1-1-1 (relu, relu; quadratic cost), 2 parameters" in out
    # The ReLU comparison z > 0 is cached once as a mask and reused by sigma', so
    # the memoized program is no longer than what CSE finds. The row is a regression pin
    # (the code's own output), as are the other table rows and sweep values below.
    assert "| total |      2 |    50 |  15 |       14 |          45 |       9 |" in out
    assert "backprop / forward = 1.56" in out


def test_nielsen_is_counted_at_layer_level_and_naive_refused(capsys):
    data = _json(capsys, "--preset", "nielsen")
    assert data["parameters"] == 23860
    assert data["naive_ops"] is None and data["cse_ops"] is None
    assert "too many for a scalar-level expansion" in data["refused"]
    assert data["naive_estimate"] > 10**9
    # z = W a + b: per unit n_(l-1) products, n_(l-1) - 1 + 1 sums, one sigmoid; the cost
    # is 10 subtractions, 10 squares, 10 halvings and 9 additions.
    assert data["forward_ops"] == 30 * (784 * 2 + 1) + 10 * (30 * 2 + 1) + 39
    assert data["backprop_ops"] / data["forward_ops"] <= 4
    assert data["per_parameter"] is None


@pytest.mark.slow
@pytest.mark.parametrize("name", preset_names())
def test_every_preset_obeys_the_cheap_gradient_principle(name):
    c = compare_spec(preset(name), with_temporaries=False)
    assert c.ratios["backprop_over_forward"] <= 4
    if c.naive_ops is not None:
        assert c.naive_ops > c.backprop_ops
    text = render_comparison(c)
    assert "| total |" in text and "backprop / forward" in text


@pytest.mark.slow
def test_oversized_network_prints_memoized_numbers_and_the_refusal(capsys):
    args = ["--sizes", "20,20,20,20,20,20,20", "--activations", ",".join(["tanh"] * 6)]
    assert main(["compare", *args, "--cost", "quadratic"]) == 0
    out = capsys.readouterr().out
    assert "naive: refused (strategy: the naive (fully expanded) gradient of the 20-20-" in out
    assert "use the backprop strategy" in out
    # Forward 4,999 = 6 layers x 20 units x (2 x 20 + 1) + the cost's 3 x 20 + 19, by
    # hand; the other columns are regression pins (the code's own output).
    assert "| total |  2,520 |     - |   - |   11,620 |  25,199,959 |   4,999 |" in out


def test_depth_sweep_growth(capsys):
    data = _json(capsys, "--sweep", "depth=1:4", "--width", "2")
    rows = data["rows"]
    assert [r["depth"] for r in rows] == [1, 2, 3, 4]
    naive = [r["naive_ops"] for r in rows]
    bp = [r["backprop_ops"] for r in rows]
    assert all(b / a > 2 for a, b in zip(naive, naive[1:], strict=False))  # exponential
    assert len({b - a for a, b in zip(bp, bp[1:], strict=False)}) == 1  # linear
    assert all(r["naive_ops"] > r["cse_ops"] >= r["backprop_ops"] for r in rows)


@pytest.mark.slow
def test_width_sweep_table(capsys):
    assert main(["compare", "--sweep", "width=1:3", "--depth", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ops per example against width (depth 2, sigmoid, quadratic cost)")
    assert "| 3     | 3-3-3   |     24 | 5,007 |" in out  # regression pin


def test_sweep_past_the_budget_shows_the_estimate(capsys):
    data = _json(capsys, "--sweep", "depth=1:3", "--width", "3", "--budget", "10000")
    assert data["rows"][1]["naive_ops"] == 5007  # regression pin
    last = data["rows"][2]
    assert last["naive_ops"] is None and last["naive_estimate"] > 10000
    # 3-3-3-3 sigmoid, quadratic: forward 63 + BP1 12 + BP2 48 + BP4 27 (by hand in
    # test_opcount_by_hand.py).
    assert last["backprop_ops"] == 150


@pytest.mark.slow
def test_plot_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "growth.png"
    assert main(["compare", "--sweep", "depth=1:3", "--width", "1", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {path}" in capsys.readouterr().out


def test_plot_without_matplotlib_says_how_to_install(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    path = tmp_path / "g.svg"
    assert main(["compare", "--sweep", "depth=1:2", "--width", "1", "--plot", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "matplotlib is not installed" in err and "chainrule[plot]" in err
    assert not path.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "height=1:3"], "write --sweep depth=1:8"),
        (["--sweep", "depth=3:1"], "1 <= start <= end <= 16"),
        (["--sweep", "depth=a:b"], "not whole numbers"),
        (["--preset", "3b1b-chain", "--plot", "x.png"], "--plot draws a sweep"),
        (["--sweep", "depth=1:2", "--plot", "x.pdf"], "neither .png nor .svg"),
        (["--preset", "3b1b-chain", "--engine", "maple"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, message, capsys):
    assert main(["compare", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_parse_sweep():
    assert parse_sweep("depth=1:8") == ("depth", list(range(1, 9)))
    assert parse_sweep("width=2:3") == ("width", [2, 3])
    with pytest.raises(SpecError):
        parse_sweep("depth=0:3")


@pytest.mark.slow
def test_time_reports_every_strategy(capsys):
    assert main(["compare", "--preset", "cheatsheet-relu", "--time", "--json"]) == 0
    times = json.loads(capsys.readouterr().out)["times"]
    assert set(times) == {"naive", "cse", "backprop", "vectorized"}
    assert all(t > 0 for t in times.values())


@pytest.mark.parametrize(
    "sizes, activations, cost",
    [
        ("1,1,1", "relu,relu", "quadratic"),
        ("3,3,2", "relu,sigmoid", "binary-cross-entropy"),
        ("2,3,2", "leaky-relu,linear", "quadratic"),
        ("2,2,2,2", "sigmoid,sigmoid,sigmoid", "quadratic"),
        ("2,3,2", "x*sigmoid(x),softmax", "quadratic"),
    ],
)
@pytest.mark.slow
def test_naive_exceeds_cse_which_is_no_shorter_than_backprop(capsys, sizes, activations, cost):
    data = _json(capsys, "--sizes", sizes, "--activations", activations, "--cost", cost)
    assert data["naive_ops"] > data["cse_ops"] >= data["backprop_ops"]
