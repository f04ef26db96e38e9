"""Push tasks side by side, paced to Klaviyo's documented limits, meet few or no 429s and report them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.faults.conftest import FaultWorld

#: The example DAG's pool.
POOL_SLOTS = 4
#: Small bulk jobs, so the pushes send enough of them at once to overrun the burst window if unpaced.
BATCH = 15


def test_four_pushes_at_once_with_the_documented_limits_get_few_429s_and_report_them(
    world: FaultWorld,
) -> None:
    world.config["klaviyo_pool_slots"] = POOL_SLOTS
    specs = [spec for spec in world.plan() if spec["contacts_to_write"]]
    assert len(specs) >= 3, "the test needs several pushes running together"

    with ThreadPoolExecutor(max_workers=POOL_SLOTS) as pool:
        summaries = list(pool.map(lambda spec: world.push(spec, batch=BATCH), specs))

    posts = [
        e
        for e in world.klaviyo_calls()
        if e["method"] == "POST" and e["path"] == "/api/profile-bulk-import-jobs"
    ]
    assert len(posts) >= 15, "enough bulk jobs at once that 10 a second would be exceeded unpaced"
    answered_429 = len(world.klaviyo_calls(status=429))
    reported = sum(summary["throttled"] for summary in summaries)
    assert reported == answered_429, "every 429 is reported in the push summaries"
    assert answered_429 <= 2, f"{answered_429} requests were throttled despite pacing"
    world.assert_converged()
