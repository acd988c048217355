"""SmsIds: version 7 UUIDs in the canonical form, ordered by the time they were made."""

from __future__ import annotations

import os
import time
import uuid

from asterisk_sendsms.core.ids import new_sms_id


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
    millisecond = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 == millisecond:  # the next ids are of a later millisecond
        pass
    second = [new_sms_id() for _ in range(1000)]
    assert max(first) < min(second)
    assert len(set(first + second)) == 2000


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_sms_id()  # the parent holds random bits it has not used yet
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(write, new_sms_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    from_child = os.read(read, 64).decode()
    os.close(read)
    assert from_child[15:] != new_sms_id()[15:]  # past the time: the random part differs
