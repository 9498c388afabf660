"""Drives agentq through the Python client generated from its OpenAPI document (by
scripts/check-clients), as an SDK user would: a webhook endpoint (a receiver in this script),
an agent whose tool call needs approval, a signal, the approval, the run's success, its
messages, and the signed `run.succeeded` delivery. Every answer is a typed model: statuses are
the generated enums, always-sent fields are never `Unset`.

Usage: client_flow.py API_URL API_KEY (the generated package `agentq_client` on PYTHONPATH).
"""

import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from agentq_client import AuthenticatedClient
from agentq_client.api.agents import create_agent
from agentq_client.api.approvals import approve, list_approvals
from agentq_client.api.runs import get_run, list_run_messages
from agentq_client.api.triggers import send_signal
from agentq_client.api.webhooks import create_webhook
from agentq_client.models import (
    ApprovalPolicy,
    ApprovalStatus,
    CreateAgent,
    CreateWebhook,
    CreateWebhookEventTypesItem,
    DecisionBody,
    ReplyStep,
    Role,
    Run,
    RunStatus,
    RunUsage,
    Runtime,
    ScriptedConfig,
    SignalBody,
    StepKind,
    ToolStep,
    TriggerType,
)
from agentq_client.types import Unset

received = []


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        received.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def main(api_url, key):
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = AuthenticatedClient(base_url=api_url, token=key, raise_on_unexpected_status=True)

    endpoint = create_webhook.sync(client=client, body=CreateWebhook(
        url=f"http://127.0.0.1:{server.server_port}/events",
        event_types=[CreateWebhookEventTypesItem.RUN_SUCCEEDED]))
    secret = endpoint.secret
    agent = create_agent.sync(client=client, body=CreateAgent(
        name="client flow", runtime=Runtime.SCRIPTED,
        config=ScriptedConfig(steps=[ToolStep(tool="deploy", result="ok"), ReplyStep(reply="done {{signal.payload.n}}")]),
        approval=ApprovalPolicy(tools=["deploy"])))
    assert agent.runtime is Runtime.SCRIPTED, agent.runtime
    assert agent.approval is not None and agent.description is None

    run = send_signal.sync(client=client, id=agent.id, body=SignalBody(type_="order.created", payload={"n": 7}))
    assert isinstance(run, Run) and run.status is RunStatus.QUEUED, run
    assert run.trigger.type_ is TriggerType.SIGNAL, run.trigger

    def wait_for(status):
        deadline = time.time() + 30
        while time.time() < deadline:
            r = get_run.sync(client=client, id=run.id)
            if r.status is status:
                return r
            time.sleep(0.2)
        raise AssertionError(f"run never reached {status}: {r.status}")

    wait_for(RunStatus.WAITING_APPROVAL)
    page = list_approvals.sync(client=client, run_id=run.id)
    [pending] = page.data
    assert pending.status is ApprovalStatus.PENDING and pending.tool == "deploy", pending
    assert page.next_cursor is None
    decided = approve.sync(client=client, id=pending.id, body=DecisionBody(comment="fine"))
    assert decided.status is ApprovalStatus.APPROVED, decided

    done = wait_for(RunStatus.SUCCEEDED)
    assert done.output == "done 7", done.output
    assert isinstance(done.usage, RunUsage) and done.usage.steps >= 4, done.usage
    assert done.finished_at is not None and done.error is None

    steps = list_run_messages.sync(client=client, id=run.id).data
    kinds = [s.kind for s in steps]
    assert kinds[0] is StepKind.INPUT and StepKind.TOOL_CALL in kinds and kinds[-1] is StepKind.MESSAGE, kinds
    assert steps[-1].role is Role.ASSISTANT and steps[-1].content == "done 7"
    for name, value in [("finished_at", done.finished_at), ("usage", done.usage), ("tool_name", steps[-1].tool_name)]:
        assert not isinstance(value, Unset), name

    deadline = time.time() + 30
    while not received and time.time() < deadline:
        time.sleep(0.2)
    assert received, "no run.succeeded delivery"
    headers, body = received[0]
    headers = {k.lower(): v for k, v in headers.items()}
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    want = base64.b64encode(hmac.new(base64.b64decode(secret.removeprefix("whsec_")), signed, hashlib.sha256).digest()).decode()
    assert f"v1,{want}" in headers["webhook-signature"].split(), headers
    event = json.loads(body)
    assert event["type"] == "run.succeeded" and event["data"]["id"] == str(run.id), event
    print("client flow: agent, signal, approval, run succeeded, messages, signed webhook: ok")


if __name__ == "__main__":
    main(*sys.argv[1:3])
