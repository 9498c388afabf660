#!/usr/bin/env python3
"""Checks webhook signatures with a third-party Standard Webhooks implementation.

The end-to-end tests (tests/e2e/webhooks) record what agentq sent to a receiver and pipe it
here, so our signatures are checked by code we did not write: the `standardwebhooks` package
from PyPI (installed by scripts/ensure-tools).

Input on stdin: a JSON list of {"secret": "whsec_...", "headers": {...}, "body": "<raw body>"}.
Exit 0 only if `standardwebhooks.Webhook(secret).verify(body, headers)` accepts every one;
otherwise print each one refused and exit 1. Exit 2 when the package is missing or the input
is not such a list.

Before that, the package itself is checked against the spec's published test vectors, so a
broken or impostor package cannot vouch for us.
"""

import json
import sys
from datetime import datetime, timezone

try:
    from standardwebhooks import Webhook, WebhookVerificationError
except ImportError:
    print(
        "verify-standard-webhooks: the Python package 'standardwebhooks' is missing; "
        "run scripts/ensure-tools",
        file=sys.stderr,
    )
    sys.exit(2)

# From the Standard Webhooks specification's test vectors.
VECTORS = [
    (
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        1649367553,
        '{"email":"test@example.com","username":"test_user"}',
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
    ),
    (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        '{"test": 2432232314}',
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    ),
]


def check_vectors() -> None:
    for secret, msg_id, ts, body, want in VECTORS:
        at = datetime.fromtimestamp(ts, tz=timezone.utc)
        got = Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=body)
        if got != want:
            print(
                f"verify-standard-webhooks: the standardwebhooks package signs the published "
                f"vector {msg_id} as {got}, not {want}",
                file=sys.stderr,
            )
            sys.exit(2)


def main() -> int:
    check_vectors()
    try:
        messages = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        print(f"verify-standard-webhooks: stdin is not JSON: {e}", file=sys.stderr)
        return 2
    if not isinstance(messages, list) or not messages:
        print("verify-standard-webhooks: expected a non-empty JSON list", file=sys.stderr)
        return 2
    refused = 0
    for i, m in enumerate(messages):
        try:
            Webhook(m["secret"]).verify(m["body"], m["headers"], json_parse=False)
        except (WebhookVerificationError, KeyError, ValueError) as e:
            refused += 1
            msg_id = m.get("headers", {}).get("webhook-id", "?")
            print(f"message {i} ({msg_id}) refused: {type(e).__name__}: {e}")
    if refused:
        print(f"{refused} of {len(messages)} refused")
        return 1
    print(f"{len(messages)} of {len(messages)} verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
