"""Time intervals (Alertmanager's vocabulary) as pure logic with an injected clock, then through the real sink.

The daylight-saving cases use Europe/Berlin in 2026: clocks jump from 02:00 CET
to 03:00 CEST on 29 March (01:00 UTC) and fall back from 03:00 CEST to 02:00
CET on 25 October (01:00 UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import alert_event, produce_alerts, query, record, running_sink, wait_until
from tocsin.sinks.notify.config import NotifyConfig
from tocsin.sinks.notify.routing import Router, Transition
from tocsin.sinks.notify.timeintervals import NamedTimeIntervalConfig, TimeIntervals

notify_env = notify_support.notify_env  # the fixture


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def intervals(**named: list[dict]) -> TimeIntervals:
    return TimeIntervals([NamedTimeIntervalConfig.model_validate({"name": n, "time_intervals": v})
                          for n, v in named.items()])


def covered_minutes(ti: TimeIntervals, name: str, start: float, hours: int) -> int:
    return sum(ti.active(name, start + 60 * m) for m in range(hours * 60))


def test_fields_weekdays_days_of_month_months_years_and_half_open_times():
    ti = intervals(
        office=[{"times": [{"start_time": "09:00", "end_time": "17:00"}], "weekdays": ["monday:friday"]}],
        last_day=[{"days_of_month": ["-1"]}],
        month_start=[{"days_of_month": ["1:3", "-2:-1"], "months": ["january:march", "12"], "years": ["2026"]}],
        whole_day=[{"times": [{"start_time": "00:00", "end_time": "24:00"}], "weekdays": ["sunday"]}],
    )
    assert ti.active("office", utc(2026, 3, 4, 9, 0))  # a Wednesday, 09:00 inclusive
    assert not ti.active("office", utc(2026, 3, 4, 17, 0))  # 17:00 exclusive
    assert ti.active("office", utc(2026, 3, 4, 16, 59))
    assert not ti.active("office", utc(2026, 3, 7, 10, 0))  # a Saturday
    assert ti.active("last_day", utc(2028, 2, 29, 12))  # leap year: -1 is the 29th
    assert not ti.active("last_day", utc(2028, 2, 28, 12))
    assert ti.active("last_day", utc(2026, 2, 28, 12))
    assert ti.active("last_day", utc(2026, 4, 30, 12)) and not ti.active("last_day", utc(2026, 4, 29, 12))
    assert ti.active("month_start", utc(2026, 2, 2)) and ti.active("month_start", utc(2026, 12, 31))
    assert ti.active("month_start", utc(2026, 2, 27))  # -2 of a 28-day February
    assert not ti.active("month_start", utc(2026, 4, 2))  # April is not listed
    assert not ti.active("month_start", utc(2027, 1, 2))  # nor 2027
    assert ti.active("whole_day", utc(2026, 3, 8, 23, 59)) and not ti.active("whole_day", utc(2026, 3, 9, 0, 0))


def test_day_31_range_has_no_day_in_a_30_day_month():
    ti = intervals(end=[{"days_of_month": ["31"]}], clamp=[{"days_of_month": ["25:31"]}])
    assert not any(ti.active("end", utc(2026, 4, d, 12)) for d in range(1, 31))
    assert ti.active("clamp", utc(2026, 4, 30, 12)) and not ti.active("clamp", utc(2026, 5, 1, 12))


def test_location_follows_the_local_clock_across_daylight_saving_changes():
    ti = intervals(night=[{"times": [{"start_time": "01:00", "end_time": "03:00"}], "location": "Europe/Berlin"}])
    # An ordinary night: 01:00-03:00 CET is 00:00-02:00 UTC, two hours.
    assert covered_minutes(ti, "night", utc(2026, 3, 27, 22), 6) == 120
    # Spring forward: 02:00-03:00 does not exist, so the night is one hour long (00:00-01:00 UTC).
    assert covered_minutes(ti, "night", utc(2026, 3, 28, 22), 6) == 60
    assert ti.active("night", utc(2026, 3, 29, 0, 59)) and not ti.active("night", utc(2026, 3, 29, 1, 0))
    # Fall back: 02:00-03:00 happens twice, so 01:00 CEST to 03:00 CET is three hours (23:00-02:00 UTC).
    assert covered_minutes(ti, "night", utc(2026, 10, 24, 20), 8) == 180
    assert ti.active("night", utc(2026, 10, 24, 23, 0)) and ti.active("night", utc(2026, 10, 25, 1, 59))
    assert not ti.active("night", utc(2026, 10, 25, 2, 0))
    # The same instants in UTC without a location: the plain 01:00-03:00 UTC.
    plain = intervals(night=[{"times": [{"start_time": "01:00", "end_time": "03:00"}]}])
    assert covered_minutes(plain, "night", utc(2026, 3, 28, 22), 6) == 120


@pytest.mark.parametrize("spec, message", [
    ({"times": [{"start_time": "10:00", "end_time": "09:00"}]}, "must be before"),
    ({"times": [{"start_time": "25:00", "end_time": "26:00"}]}, "HH:MM"),
    ({"weekdays": ["friday:monday"]}, "start is after the end"),
    ({"weekdays": ["funday"]}, "not an integer or one of"),
    ({"days_of_month": ["0"]}, "out of range"),
    ({"days_of_month": ["-3:5"]}, "end must be negative"),
    ({"days_of_month": ["-1:-3"]}, "start is after the end"),
    ({"months": ["13"]}, "out of range"),
    ({"location": "Mars/Olympus"}, "not an IANA time zone"),
])
def test_invalid_intervals_are_config_errors(spec, message):
    with pytest.raises(ValidationError, match=message):
        NamedTimeIntervalConfig.model_validate({"name": "x", "time_intervals": [spec]})


def test_a_route_naming_an_unknown_interval_is_a_config_error():
    with pytest.raises(ValidationError, match=r"route.routes\[0\].mute_time_intervals: unknown time interval 'nite'"):
        NotifyConfig.model_validate({"receivers": [{"name": "hook", "type": "webhook", "url": "http://h/"}],
                                     "route": {"receiver": "hook", "routes": [{"mute_time_intervals": ["nite"]}]}})


def _router() -> Router:
    cfg = NotifyConfig.model_validate({
        "receivers": [{"name": "hook", "type": "webhook", "url": "http://h/hook"},
                      {"name": "pager", "type": "pagerduty", "routing_key": "k"}],
        "time_intervals": [
            {"name": "maintenance", "time_intervals": [
                {"times": [{"start_time": "02:00", "end_time": "04:00"}], "location": "Europe/Berlin"}]},
            {"name": "office", "time_intervals": [
                {"times": [{"start_time": "09:00", "end_time": "17:00"}], "weekdays": ["monday:friday"],
                 "location": "Europe/Berlin"}]}],
        "route": {"receiver": "hook", "group_wait_s": 0, "group_interval_s": 60, "repeat_interval_s": 86400,
                  "routes": [{"matchers": ["service=batch"], "receiver": "hook", "continue": True,
                              "mute_time_intervals": ["maintenance"]},
                             {"matchers": ["service=batch"], "receiver": "pager",
                              "active_time_intervals": ["office"]}]},
        "inhibit_rules": [],
    })
    return Router(cfg)


def _flush(router: Router, now: float):
    out, settled = router.flush(now)
    for o in out:
        router.delivered(o, True, now)
    return out, settled


def test_route_mutes_in_its_interval_records_the_name_and_notifies_when_it_ends_across_spring_forward():
    router = _router()
    # 01:30 UTC on 29 March 2026 is 03:30 CEST: inside the maintenance window (whose first hour never existed).
    now = utc(2026, 3, 29, 1, 30)
    ev = alert_event("error_rate", "batch", severity="critical", ts=int(now * 1e6))
    router.add(Transition(ev, partition="p", offset=0), now)
    out, settled = _flush(router, now)
    assert out == []
    by_receiver = {s.receiver: (s.status, s.reason) for s in settled}
    assert by_receiver == {"hook": ("muted", "mute_time_interval maintenance"),
                           "pager": ("muted", "outside active_time_intervals office")}
    # 01:59 UTC = 03:59 CEST: still muted; 02:00 UTC = 04:00 CEST: the window ended, the hook is told once.
    assert _flush(router, utc(2026, 3, 29, 1, 59))[0] == []
    out, _ = _flush(router, utc(2026, 3, 29, 2, 0, 1))
    assert [(o.group.receiver, [a.alert_id for a in o.alerts]) for o in out] == [("hook", [ev["alert_id"]])]
    assert _flush(router, utc(2026, 3, 29, 2, 10))[0] == []  # told once, not again until a repeat


def test_same_utc_hour_is_muted_in_winter_and_not_after_spring_forward():
    # 02:30 UTC is 03:30 CET on 28 March (muted) and 04:30 CEST on 29 March (not muted).
    for day, muted in ((28, True), (29, False)):
        router = _router()
        now = utc(2026, 3, day, 2, 30)
        router.add(Transition(alert_event("error_rate", "batch", ts=int(now * 1e6)), partition="p", offset=0), now)
        out, settled = _flush(router, now)
        hook_muted = any(s.receiver == "hook" and s.status == "muted" for s in settled)
        assert hook_muted is muted, day
        assert bool([o for o in out if o.group.receiver == "hook"]) is not muted


def test_the_sink_records_a_muted_notification_with_the_interval_name(notify_env, httpserver):
    hook = record(httpserver, "/hook")
    pager = record(httpserver, "/pager")
    this_year = str(datetime.now(UTC).year)
    cfg = notify_env({
        "receivers": [{"name": "hook", "type": "webhook", "url": httpserver.url_for("/hook")},
                      {"name": "pager", "type": "webhook", "url": httpserver.url_for("/pager")}],
        "time_intervals": [{"name": "all-year", "time_intervals": [{"years": [this_year, str(int(this_year) + 1)]}]}],
        "route": {"receiver": "hook", "group_wait_s": 0, "group_interval_s": 1,
                  "routes": [{"receiver": "hook", "continue": True, "mute_time_intervals": ["all-year"]},
                             {"receiver": "pager"}]},
        "inhibit_rules": [],
    })
    ev = alert_event("error_rate", "shop", severity="critical")
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [ev])
        wait_until(lambda: pager.count() >= 1, what="the unmuted route's notification")
        wait_until(lambda: sink.stats().get("muted", 0) >= 1, what="the muted one recorded")
        wait_until(sink.idle, what="settled")
    assert hook.count() == 0
    rows = query(cfg, f"SELECT receiver, status, error FROM {{log}} WHERE alert_id = '{ev['alert_id']}'")
    assert ("hook", "muted", "mute_time_interval all-year") in rows
    assert ("pager", "sent", "") in rows
