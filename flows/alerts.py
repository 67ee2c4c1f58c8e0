"""The `run-failed-alert` flow: the privacy office hears of a dsr flow run that failed or crashed.

A run that fails leaves the request open (the ledger says where it stopped, and the deadline sweep
will warn as the due date nears), but a crashed worker or a run that keeps failing should reach a
person now, not at the next sweep. An automation (a deployment trigger on Prefect's own
`prefect.flow-run.Failed` / `prefect.flow-run.Crashed` events for the dsr flows, in
deployments/prefect.yaml and in `dsr serve`) runs this flow, which sends a notice through the
policy's escalation channels (e-mail, webhook). The notice names the run and its state, never a
subject: run names carry the request's type, regime and the start of its id only.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import runtime

#: The flows whose failure alerts (never this one: a failing alert must not alert about itself).
WATCHED_FLOWS = ("process-request", "process-verified", "deadline-sweep", "retention-purge")
FAILURE_EVENTS = ("prefect.flow-run.Failed", "prefect.flow-run.Crashed")


def failure_trigger() -> Any:
    """The automation: a failed or crashed run of a dsr flow runs `run-failed-alert`."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="alert on a failed or crashed dsr run",
        expect=set(FAILURE_EVENTS),
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.role": "flow", "prefect.resource.name": list(WATCHED_FLOWS)},
        parameters={"flow_run_id": "{{ event.resource.id }}", "run_name": "{{ event.resource.name }}",
                    "event": "{{ event.event }}"},
    )


def failure_notice(flow_run_id: str, run_name: str, event: str) -> Any:
    from dsr.adapters.mail import Notice

    state = event.rsplit(".", 1)[-1].lower()
    run_id = flow_run_id.removeprefix("prefect.flow-run.")
    return Notice(
        subject=f"dsr: flow run {run_name} {state}",
        body=(f"The Prefect flow run {run_name} ({run_id}) is {state}. Requests it was running stay open and "
              "resume on the next run; see `dsr status ID` for where each one stopped, and the run's logs in "
              "Prefect for why it ended."),
        fields={"kind": "flow-run-failed", "flow_run_id": run_id, "run_name": run_name, "state": state},
    )


@flow(name="run-failed-alert")
def run_failed_alert(flow_run_id: str, run_name: str = "", event: str = "prefect.flow-run.Failed") -> dict[str, str]:
    """Tell the privacy office through the escalation channels; returns each channel's result."""
    logger = get_run_logger()
    notice = failure_notice(flow_run_id, run_name, event)
    results = runtime.service().alert_office(notice)
    if not results:
        logger.warning("%s (no escalation channel configured: escalation.channels in the policy)", notice.subject)
        return {}
    logger.warning("%s; notified: %s", notice.subject, ", ".join(f"{k} {v}" for k, v in sorted(results.items())))
    return results
