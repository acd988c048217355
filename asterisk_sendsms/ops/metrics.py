"""Prometheus metrics in the text exposition format, without a client library: counters fed by the event
hub, gauges read when scraped (queue depth, callback backlog, transports, window in use)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from asterisk_sendsms.app.transport import TransportHealth
from asterisk_sendsms.core.lifecycle import FAILURE_STATES, State, is_final
from asterisk_sendsms.core.traffic import Priority

__all__ = ["Metrics"]

# Receipt latency buckets, seconds: SMSCs answer in seconds, phones that are off in hours.
BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 3600.0, 6 * 3600.0, 24 * 3600.0)
FINAL = tuple(state.value for state in State if is_final(state))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


class Metrics:
    def __init__(self) -> None:
        self._events: Counter[str] = Counter()
        self._failures: Counter[tuple[str, str]] = Counter()
        self._latency_buckets = [0] * len(BUCKETS)
        self._latency_count = 0
        self._latency_sum = 0.0

    def observe(self, event: dict[str, Any]) -> None:
        kind = str(event["event"])
        self._events[kind] += 1
        if kind in FAILURE_STATES:
            reason = str(event.get("error") or "").split(" ")[0] or "none"
            self._failures[(kind, reason[:40])] += 1
        latency = event.get("receipt_latency")
        if isinstance(latency, int | float):
            self._latency_count += 1
            self._latency_sum += latency
            for index, bound in enumerate(BUCKETS):
                if latency <= bound:
                    self._latency_buckets[index] += 1

    def render(self, stats: dict[str, Any], health: Sequence[TransportHealth]) -> str:
        lines = ["# HELP sendsms_messages_total Messages by what happened to them.",
                 "# TYPE sendsms_messages_total counter"]
        for kind in ("accepted", "submitted", "retry", *FINAL):
            lines.append(f'sendsms_messages_total{{event="{kind}"}} {self._events[kind]}')
        lines += ["# HELP sendsms_failures_total Messages that ended in failure, by state and reason.",
                  "# TYPE sendsms_failures_total counter"]
        lines += [f'sendsms_failures_total{{state="{state}",reason="{_label(reason)}"}} {count}'
                  for (state, reason), count in sorted(self._failures.items())]
        lines += ["# HELP sendsms_queue_depth Messages waiting to be sent.", "# TYPE sendsms_queue_depth gauge",
                  f"sendsms_queue_depth {stats['queue']}",
                  "# HELP sendsms_class_queue_depth Messages waiting to be sent, by traffic class.",
                  "# TYPE sendsms_class_queue_depth gauge"]
        now = time.time()
        waiting = {priority.value: stats["classes"].get(priority.value, (0, now)) for priority in Priority}
        lines += [f'sendsms_class_queue_depth{{priority="{name}"}} {count}' for name, (count, _) in waiting.items()]
        lines += ["# HELP sendsms_class_queue_oldest_seconds Age of the oldest message waiting, by traffic class.",
                  "# TYPE sendsms_class_queue_oldest_seconds gauge"]
        lines += [f'sendsms_class_queue_oldest_seconds{{priority="{name}"}} {max(0.0, now - oldest):.1f}'
                  for name, (_, oldest) in waiting.items()]
        scheduled, _ = stats["scheduled"]
        lines += ["# HELP sendsms_scheduled_messages Messages waiting for their SendAt or their user's max_rate.",
                  "# TYPE sendsms_scheduled_messages gauge", f"sendsms_scheduled_messages {scheduled}",
                  "# HELP sendsms_user_max_rate Messages per second a user's messages leave at, at most.",
                  "# TYPE sendsms_user_max_rate gauge"]
        lines += [f'sendsms_user_max_rate{{user="{_label(name)}"}} {rate:g}'
                  for name, rate, _ in stats["limits"] if rate]
        lines += ["# HELP sendsms_quota_used_parts Message parts counted against a user's quota this period.",
                  "# TYPE sendsms_quota_used_parts gauge"]
        lines += [f'sendsms_quota_used_parts{{user="{_label(name)}",period="{period}"}} {used}'
                  for name, _, quotas in stats["limits"] for period, used, _, _ in quotas]
        lines += ["# HELP sendsms_quota_parts A user's quota of message parts per period.",
                  "# TYPE sendsms_quota_parts gauge"]
        lines += [f'sendsms_quota_parts{{user="{_label(name)}",period="{period}"}} {quota}'
                  for name, _, quotas in stats["limits"] for period, _, quota, _ in quotas]
        lines += [
                  "# HELP sendsms_callback_backlog Delivery notifications not yet acknowledged.",
                  "# TYPE sendsms_callback_backlog gauge", f"sendsms_callback_backlog {stats['pending_callbacks']}",
                  "# HELP sendsms_optouts Entries of the opt-out list (a number, from one sender or all).",
                  "# TYPE sendsms_optouts gauge", f"sendsms_optouts {stats['optouts']}",
                  "# HELP sendsms_transport_ready 1 when the transport can send.",
                  "# TYPE sendsms_transport_ready gauge"]
        lines += [f'sendsms_transport_ready{{transport="{_label(t.name)}",kind="{t.kind}"}} {int(t.ready)}'
                  for t in health]
        lines += ["# HELP sendsms_transport_waiting Messages handed to a transport without an answer yet (waiting for"
                  " a window slot or the throughput, or in flight), by traffic class.",
                  "# TYPE sendsms_transport_waiting gauge"]
        lines += [f'sendsms_transport_waiting{{transport="{_label(t.name)}",priority="{priority}"}} {count}'
                  for t in health for priority, count, _ in t.waiting]
        lines += ["# HELP sendsms_transport_waiting_oldest_seconds How long the longest-waiting of them has waited.",
                  "# TYPE sendsms_transport_waiting_oldest_seconds gauge"]
        lines += [f'sendsms_transport_waiting_oldest_seconds{{transport="{_label(t.name)}",priority="{priority}"}}'
                  f" {max(0.0, now - since):.1f}" for t in health for priority, _, since in t.waiting]
        lines += ["# HELP sendsms_window_in_use Submits awaiting their answer.", "# TYPE sendsms_window_in_use gauge"]
        lines += [f'sendsms_window_in_use{{transport="{_label(t.name)}"}} {t.in_flight}' for t in health]
        lines += ["# HELP sendsms_receipt_latency_seconds From submission to the final receipt.",
                  "# TYPE sendsms_receipt_latency_seconds histogram"]
        lines += [f'sendsms_receipt_latency_seconds_bucket{{le="{bound:g}"}} {count}'
                  for bound, count in zip(BUCKETS, self._latency_buckets, strict=True)]
        lines += [f'sendsms_receipt_latency_seconds_bucket{{le="+Inf"}} {self._latency_count}',
                  f"sendsms_receipt_latency_seconds_sum {self._latency_sum:.3f}",
                  f"sendsms_receipt_latency_seconds_count {self._latency_count}"]
        return "\n".join(lines) + "\n"
