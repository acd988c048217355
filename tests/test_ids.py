"""SmsIds: version 7 UUIDs in the canonical form, ordered by the time they were made."""

from __future__ import annotations

import time
import uuid

from asterisk_sendsms.ids import new_sms_id


def test_a_canonical_version_7_uuid_carrying_the_time() -> None:
    before = time.time_ns() // 1_000_000
    sms_id = new_sms_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(sms_id)
    assert str(parsed) == sms_id
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_later_ids_sort_after_earlier_ones_and_none_repeats() -> None:
    first = [new_sms_id() for _ in range(1000)]
    time.sleep(0.002)
    second = [new_sms_id() for _ in range(1000)]
    assert max(first) < min(second)
    assert len(set(first + second)) == 2000
