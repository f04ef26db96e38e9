"""
Run the provider's operators in this process, as a worker would, and print their results as JSON.

Used by the crash tests, which need a task process they can kill with SIGKILL at a precise moment:

    python tests/e2e/run_operator.py plan '<defaults json>'
    python tests/e2e/run_operator.py push '<list of push specs json>' [max_batch_profiles]

Several push specs run one after the other in the same process, which saves Airflow's start-up time.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from airflow_provider_klaviyo_nosto.operators.push import KlaviyoSegmentPushOperator
from airflow_provider_klaviyo_nosto.operators.sync import NostoSegmentSyncOperator


def main(argv: list[str]) -> int:
    kind, payload = argv[1], json.loads(argv[2])
    context: Any = {}
    if kind == "plan":
        result: Any = NostoSegmentSyncOperator(task_id="plan_sync", defaults=payload).execute(context)
    else:
        result = [
            KlaviyoSegmentPushOperator(
                task_id="push_segment",
                push=spec,
                deferrable=False,
                poll_interval=0.2,
                max_batch_profiles=int(argv[3]) if len(argv) > 3 else 10_000,
            ).execute(context)
            for spec in payload
        ]
    print("RESULT-JSON" + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
