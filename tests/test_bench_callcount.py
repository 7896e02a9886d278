"""`python -m bench.callcount`: calls per request are the loaded profile less the idle one."""

from __future__ import annotations

import pytest

from bench.callcount import per_request

START = ("gateway/app.py", 10, "install_policy")
STAGE = ("gateway/pipeline/auth.py", 46, "__call__")
GET = ("~", 0, "<method 'get' of 'dict' objects>")


def test_start_up_work_is_subtracted_and_the_rest_divided_by_requests() -> None:
    idle = {START: (1, 0.5), GET: (4_000, 0.002)}
    loaded = {START: (1, 0.5), GET: (4_000 + 56_000, 0.002 + 0.010), STAGE: (3_000, 0.006)}
    per = per_request(idle, loaded, 1_000)
    assert per.keys() == {GET, STAGE}  # start-up ran as often in both: not the load's
    assert per[GET] == pytest.approx((56.0, 10.0))
    assert per[STAGE] == pytest.approx((3.0, 6.0))


def test_a_function_the_idle_run_called_more_often_is_left_out() -> None:
    assert per_request({GET: (10, 0.1)}, {GET: (9, 0.1)}, 5) == {}


def test_no_completed_request_is_an_error_not_a_division_by_zero() -> None:
    with pytest.raises(ValueError, match="no requests completed"):
        per_request({}, {GET: (1, 0.0)}, 0)
