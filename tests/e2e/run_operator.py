"""
Run one of the provider's operators in this process, as a worker would, and print its result as JSON.

Used by the crash tests, which need a task process they can kill with SIGKILL at a precise moment:

    python tests/e2e/run_operator.py plan '<defaults json>'
    python tests/e2e/run_operator.py push '<push spec json>' [max_batch_profiles]
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
        operator = KlaviyoSegmentPushOperator(
            task_id="push_segment",
            push=payload,
            deferrable=False,
            poll_interval=0.2,
            max_batch_profiles=int(argv[3]) if len(argv) > 3 else 10_000,
        )
        result = operator.execute(context)
    print("RESULT-JSON" + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
