"""The game day's scenarios and what each one promises: THE table, written once.

Every scenario runs on one stack (stacks run side by side, each in its own namespaces, see
README.md); a stack runs its scenarios in the order listed here, after a steady-state warm-up.
For each expected alert the table gives its severity (which decides the receiver), how long after
the fault its *firing* notification must have reached the receiver, and how long after the fix
its *resolved* notification must have (None: not waited for, the note says why). Any other alert
delivered during a scenario fails it, unless it is listed in `allowed`.

Alert names are built from the service's name (scripts/monitoring/common.py), never written out.
Promises are computed from the configuration (scrape/evaluation 15s, scrape timeout 10s, DNS
refresh 15s, group_wait 10s and group_interval 1m for pages) plus a margin; README.md derives each.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "monitoring"))
from common import ALERT_PREFIX, SERVICE  # noqa: E402

# --- alert names (the rules in monitoring/prometheus/rules/ and their runbooks) -------------------
DOWN = f"{ALERT_PREFIX}Down"                # a replica still in DNS does not answer its scrape
REPLICA_LOST = f"{ALERT_PREFIX}ReplicaLost"  # a replica gone from DNS; also all of them (one incident)
AVAILABILITY_FAST = "AvailabilityBudgetBurnFast"
AVAILABILITY_SLOW = "AvailabilityBudgetBurnSlow"
LATENCY_FAST = "LatencyBudgetBurnFast"
LATENCY_SLOW = "LatencyBudgetBurnSlow"
HIGH_ERROR_RATIO = "HighErrorRatio"
HIGH_LATENCY_P99 = "HighLatencyP99"
RULE_FAILURES = "PrometheusRuleEvaluationFailures"
RELOAD_FAILED = "PrometheusConfigReloadFailed"
NOTIFICATIONS_FAILING = "AlertmanagerNotificationsFailing"
ALERTMANAGER_DOWN = "AlertmanagerDown"

# How long each stack runs clean traffic before its first fault; the steady-state check covers it.
# The SLO stacks need clean history first (the burn rates compare against it); the others only a
# quiet start, and the longest of them (a ticket: for 5m, then group_wait 5m) cannot wait more.
WARMUP_SECONDS = 120
STACK_WARMUP_SECONDS = {"meta": 60, "rules": 60, "reload": 30}
# Traffic through the load balancer, per stack: requests per second (a modest, steady rate).
TRAFFIC_RPS = 8
# How long an alert that must stay firing ("one incident") is watched after it was delivered:
# longer than the old failure (the page resolved ~25s after the targets vanished and a second
# one came ~112s later).
HOLD_SECONDS = 150
# Margin added to every promise before a wait gives up (a late notification is still reported).
WAIT_MARGIN_SECONDS = 30


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str                 # page | ticket: the Alertmanager route and receiver
    fire_within: int              # s from the fault to the firing notification at the receiver
    resolve_within: int | None    # s from the fix to the resolved notification; None: not waited
    hold: bool = False            # must stay firing, no resolved notification, until the fix
    # Where it must show: "receiver" (a notification was delivered), or, when nothing can deliver
    # it, "alertmanager" (active there) or "prometheus" (firing there).
    seen_in: str = "receiver"
    note: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    stack: str                    # the stack that runs it; stacks run side by side
    action: str                   # the fault, a function of stack.py's ACTIONS
    fault: str                    # what is done, for the table
    expect: tuple[Alert, ...] = ()
    allowed: tuple[str, ...] = ()  # may be delivered during the scenario without failing it
    not_waited: tuple[tuple[str, str], ...] = ()  # (alert, why): expected later than the suite waits
    params: dict = field(default_factory=dict)


SCENARIOS: tuple[Scenario, ...] = (
    # ---------------------------------------------------------------- stack "replicas"
    Scenario(
        "one replica hangs", "replicas", "hang",
        "SIGSTOP one of 3 replicas; it stays in DNS",
        expect=(Alert(DOWN, "page", fire_within=130, resolve_within=120,
                      note="scrape 15s + timeout 10s + eval 15s + for 1m + group_wait 10s, + margin; "
                           "resolved: scrape + eval + group_interval 1m"),),
        # nginx waits proxy_read_timeout (15s) on the hung replica before it retries another one,
        # and the probes through the load balancer time out after 5s: users are affected, and the
        # availability SLI measured at the edge may page (during or just after the hang).
        allowed=(AVAILABILITY_FAST,),
    ),
    Scenario(
        "one replica crashes", "replicas", "crash",
        "SIGKILL one of 3 replicas and remove its A record (as Docker does); restart it after",
        expect=(Alert(REPLICA_LOST, "page", fire_within=150, resolve_within=150,
                      note="DNS refresh 15s + discovery update 5s + recording rule 15s + alert rule 15s "
                           "+ for 1m + group_wait 10s = 120s at worst, + margin; resolved: the same "
                           "path back + first scrape 15s + group_interval 1m = 125s at worst"),),
        allowed=(AVAILABILITY_FAST,),  # left over from the hang: its windows still hold it
    ),
    # ---------------------------------------------------------------- stack "outage"
    Scenario(
        "every replica down", "outage", "all_down",
        f"SIGKILL all 3 replicas, remove every A record (`{SERVICE}` is NXDOMAIN); nginx answers 502",
        expect=(
            Alert(REPLICA_LOST, "page", fire_within=150, resolve_within=150, hold=True,
                  note="one incident: stays firing, no resolve and second page"),
            Alert(AVAILABILITY_FAST, "page", fire_within=240, resolve_within=None,
                  note="the probes through the load balancer fail: 15s scrape + 15s eval + for 2m "
                       "+ group_wait 10s, + margin. Resolution not waited: on a fresh Prometheus "
                       "the 30m and 6h windows hold the whole run"),
        ),
    ),
    # ---------------------------------------------------------------- stack "errors"
    Scenario(
        "5% errors injected", "errors", "errors",
        "PUT /faults error_ratio 0.05 (500) on every replica",
        expect=(Alert(AVAILABILITY_FAST, "page", fire_within=300, resolve_within=None,
                      note="fresh Prometheus: the 1h window holds only the run's minutes; with 1h of "
                           "clean history 5% needs 17.3 min to pass 14.4x over 1h"),),
        # 5% is the HighErrorRatio threshold itself: the per-route ratio hovers around it.
        allowed=(HIGH_ERROR_RATIO,),
        not_waited=((AVAILABILITY_SLOW, "ticket: for 15m, then group_wait 5m"),),
        params={"error_ratio": 0.05, "error_statuses": [500]},
    ),
    # ---------------------------------------------------------------- stack "latency"
    Scenario(
        "latency injected", "latency", "latency",
        "PUT /faults latency_ratio 0.5, 300-500ms on every replica",
        expect=(Alert(LATENCY_FAST, "page", fire_within=300, resolve_within=None,
                      note="50% slower than 0.15s burns 50x the 1% budget; resolution: as for errors"),),
        not_waited=(
            (HIGH_LATENCY_P99, "ticket: for 10m over a 5m window, then group_wait 5m (>= 15 min); "
                               "inhibited by LatencyBudgetBurnFast meanwhile"),
            (LATENCY_SLOW, "ticket: for 15m, then group_wait 5m"),
        ),
        params={"latency_ratio": 0.5, "latency_min": "300ms", "latency_max": "500ms"},
    ),
    # ---------------------------------------------------------------- stack "sparse"
    Scenario(
        "sparse errors counted", "sparse", "sparse_errors",
        "restart a replica, then one 500 a minute on it (3 in all); no alert, the SLI must count them",
        params={"errors": 3, "every_seconds": 60, "counted_within": 60},
    ),
    Scenario(
        "alertmanager down", "sparse", "alertmanager_down",
        "stop Alertmanager (its A record goes); start it again after",
        expect=(Alert(ALERTMANAGER_DOWN, "page", fire_within=130, resolve_within=None, seen_in="prometheus",
                      note="nothing can deliver it: firing in Prometheus (and Grafana's alert list). "
                           "scrape 15s + eval 15s + for 1m + eval 15s, + margin"),),
    ),
    # ---------------------------------------------------------------- stack "meta"
    Scenario(
        "notifications failing", "meta", "receiver_down",
        "stop the webhook receiver (its A record goes), hang a replica so that a page is due; "
        "start the receiver again once the meta alert shows",
        expect=(
            Alert(NOTIFICATIONS_FAILING, "page", fire_within=270, resolve_within=None, seen_in="alertmanager",
                  note="BackendDown fires (~90s), Alertmanager retries for group_interval (1m), gives "
                       "up, the counter is scraped and evaluated: active in Alertmanager, its UI and "
                       "API. Keeps firing 15 min after the last failure"),
            Alert(DOWN, "page", fire_within=360, resolve_within=120,
                  note="delivered late: at the first flush after the receiver is back"),
        ),
        allowed=(AVAILABILITY_FAST,),  # the probes through lb time out on the hung replica
    ),
    # ---------------------------------------------------------------- stack "rules"
    Scenario(
        "a broken rule", "rules", "broken_rule",
        "add a rule file whose rule fails at every evaluation, POST /-/reload",
        expect=(Alert(RULE_FAILURES, "page", fire_within=390, resolve_within=None,
                      note="scrape 15s + eval 15s + for 5m + eval 15s + group_wait 10s, + margin. "
                           "Resolution not waited: increase over 5m, so ~6 min after the fix"),),
        params={"file": "gameday-broken.yml"},
    ),
    # ---------------------------------------------------------------- stack "reload"
    Scenario(
        "a failed config reload", "reload", "bad_reload",
        "write a rule file Prometheus cannot parse, POST /-/reload (it answers 500)",
        expect=(Alert(RELOAD_FAILED, "ticket", fire_within=690, resolve_within=None,
                      note="a ticket: scrape 15s + eval 15s + for 5m, then the ticket route's "
                           "group_wait 5m = 630s at worst, + margin. Resolved "
                           "notification: at the ticket group_interval (30m), not waited"),),
        params={"file": "gameday-unparsable.yml"},
    ),
)

# Stacks in the order they are started; each runs its scenarios in table order.
STACKS: tuple[str, ...] = tuple(dict.fromkeys(s.stack for s in SCENARIOS))


def warmup_seconds(stack: str) -> int:
    return STACK_WARMUP_SECONDS.get(stack, WARMUP_SECONDS)


def scenarios_of(stack: str) -> list[Scenario]:
    return [s for s in SCENARIOS if s.stack == stack]


def expected_alert_names() -> set[str]:
    names = {a.name for s in SCENARIOS for a in s.expect}
    return names | {name for s in SCENARIOS for name in s.allowed}
