"""The privacy-utility join pairs the attack's DP sweep with the defence cost by noise level."""

import math

import pytest

from reporting import privacy_utility as pu


def _attack_row(sweep, z, rank1, clip=None):
  return {"sweep": sweep, "variant": f"{sweep}-{z}", "dp_noise_multiplier": z,
          "dp_clip_norm": clip, "units": 12, "chance_rank1": 0.01,
          "metrics": {"rank1": {"mean": rank1, "ci_low": rank1 - 0.1, "ci_high": rank1 + 0.1}}}


def _defence_row(z, tar, clip=0.5, eps=3.0):
  no_dp = z == 0 and math.isinf(clip)
  return {"noise_multiplier": z, "clip_norm": clip, "epsilon": math.inf if no_dp else eps,
          "delta": None if no_dp else 1e-4, "rounds": 10,
          "report": {"tar_at_far": {"0.001": tar / 100, "0.01": 0.9}}}


ATTACK = {"rows": [
    _attack_row("dp", None, 0.6),            # DP off
    _attack_row("dp", 0.0, 0.5, clip=0.03),  # clipping only
    _attack_row("dp", 0.1, 0.2, clip=0.03),
    _attack_row("dp", 1.0, 0.0, clip=0.03),
    _attack_row("victims", None, 0.9),       # another sweep: never joined
]}
COST = {"rows": [_defence_row(0.0, 40.0, clip=math.inf), _defence_row(1.0, 20.0, eps=2.0),
                 _defence_row(0.1, 35.0, eps=90.0), _defence_row(0.01, 39.0)]}


def test_join_pairs_by_noise_level_and_never_calls_clipping_no_dp():
  points = pu.join(ATTACK, COST)
  got = [(p["noise_multiplier"], p["fedface_tar"], p["attack_rank1"]) for p in points]
  # z=0.01 has no attack row; the clip-only attack row (rank-1 0.5) must not pair with "no DP".
  assert got == [(0.0, pytest.approx(40.0), 0.6), (0.1, pytest.approx(35.0), 0.2),
                 (1.0, pytest.approx(20.0), 0.0)]
  assert points[2]["fedface_epsilon"] == 2.0
  assert points[1]["attack_rank1_ci"] == [pytest.approx(0.1), pytest.approx(0.3)]


def test_join_without_overlap_is_an_error():
  with pytest.raises(ValueError, match="no noise multiplier"):
    pu.join({"rows": [_attack_row("dp", 5.0, 0.1, clip=1.0)]}, COST)


def test_png_table_and_rows(tmp_path):
  points = pu.join(ATTACK, COST)
  png = pu.save_png(points, str(tmp_path / "sub" / "pu.png"), "t")
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  table = pu.markdown_table(points)
  assert "| no DP | 40.00 | ε=∞ | 0.60 [0.50, 0.70] |" in table
  assert "| z=1 | 20.00 | ε=2 |" in table
  rows = pu.results_rows(points)
  assert [r["variant"] for r in rows] == ["no DP", "z=0.1", "z=1"]
  assert rows[1]["metrics"]["tar@0.001"]["mean"] == pytest.approx(35.0)
