"""The modem's initialisation without I/O, against the variants real modems show (issue 18): no extended error
codes, no character set command, a quoted +CPIN answer, no status report routing; and the AT+CMGS prompt with
or without its space."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest

from asterisk_sendsms.wire.modem.at import (
    CNMI_NO_REPORTS,
    CNMI_REPORTS,
    AtParser,
    Initialisation,
    InitRefused,
    Prompt,
    Response,
)


def converse(setup: Initialisation, refuses: Mapping[str, str] | None = None, sim: str = "READY",
             after_pin: str = "READY") -> list[str]:
    """Run the initialisation against a scripted modem: OK to all but `refuses` (command: its error),
    `+CPIN: <sim>` until a PIN is given. Returns the commands sent."""
    refuses = refuses or {}
    sent: list[str] = []
    line = setup.start()
    while line is not None:
        sent.append(line)
        assert len(sent) < 50, sent
        if line in refuses:
            response = Response(line, False, refuses[line])
        elif line == "AT+CPIN?":
            response = Response(line, True, "OK", (f"+CPIN: {sim}",))
        else:
            if line.startswith("AT+CPIN="):
                sim = after_pin
            response = Response(line, True, "OK")
        line = setup.answer(response)
    return sent


SECOND = {"AT+CMEE=1": "ERROR", 'AT+CSCS="GSM"': "ERROR"}  # the second AT implementation of issue 18


def test_a_standard_modem() -> None:
    setup = Initialisation()
    assert converse(setup) == ["ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CMGF=0", CNMI_REPORTS]
    assert setup.receipts and not setup.reportless and not setup.text_mode and setup.notes == []


@pytest.mark.parametrize("sim", ["READY", '"READY"'])
def test_no_extended_errors_and_a_quoted_ready_sim(sim: str) -> None:
    setup = Initialisation()
    assert converse(setup, SECOND, sim) == ["ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CMGF=0", CNMI_REPORTS]
    assert setup.receipts and setup.notes == ["AT+CMEE=1 refused (ERROR): its refusals will not say why"]


@pytest.mark.parametrize("sim", ["SIM PIN", '"SIM PIN"'])
def test_a_pin_asked_for_quoted_or_not(sim: str) -> None:
    assert 'AT+CPIN="1234"' in converse(Initialisation(pin="1234"), SECOND, sim)
    with pytest.raises(InitRefused, match="the SIM asks for a PIN: set pin= in the modem URL"):
        converse(Initialisation(), SECOND, sim)


@pytest.mark.parametrize("sim", ["SIM PUK", '"SIM PUK"'])
def test_a_sim_that_is_not_ready(sim: str) -> None:
    with pytest.raises(InitRefused, match=r"the SIM is not ready: \+CPIN: SIM PUK$"):
        converse(Initialisation(pin="1234"), SECOND, sim)


def test_a_wrong_pin() -> None:
    with pytest.raises(InitRefused, match=r'AT\+CPIN="1234" refused: \+CME ERROR: 16 \(incorrect password\)'):
        converse(Initialisation(pin="1234"), {'AT+CPIN="1234"': "+CME ERROR: 16"}, "SIM PIN")


def test_receipts_not_wanted() -> None:
    setup = Initialisation(receipts=False)
    assert converse(setup) == ["ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CMGF=0", CNMI_NO_REPORTS]
    assert not setup.receipts and not setup.reportless  # as configured: nothing to warn about


def test_a_modem_that_routes_no_status_reports() -> None:
    setup = Initialisation()
    assert converse(setup, SECOND | {CNMI_REPORTS: "+CME ERROR: 303"})[-2:] == [CNMI_REPORTS, CNMI_NO_REPORTS]
    assert not setup.receipts and setup.reportless


def test_a_modem_that_announces_nothing_is_refused() -> None:
    with pytest.raises(InitRefused, match=re.escape(f"{CNMI_NO_REPORTS} refused: ERROR")):
        converse(Initialisation(), {CNMI_REPORTS: "ERROR", CNMI_NO_REPORTS: "ERROR"})


@pytest.mark.parametrize(("receipts", "first_octet"), [(True, 49), (False, 17)])
def test_text_mode_without_a_character_set_command(receipts: bool, first_octet: int) -> None:
    setup = Initialisation(smsc="+36209400000", receipts=receipts)
    assert converse(setup, SECOND | {"AT+CMGF=0": "ERROR"}) == [
        "ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CMGF=0", "AT+CMGF=1", 'AT+CSCS="GSM"', 'AT+CSCA="+36209400000"',
        CNMI_REPORTS if receipts else CNMI_NO_REPORTS, f"AT+CSMP={first_octet},167,0,0"]
    assert setup.text_mode and setup.notes == ["AT+CMEE=1 refused (ERROR): its refusals will not say why",
                                               'AT+CSCS="GSM" refused (ERROR): text mode keeps its own character set']


@pytest.mark.parametrize("refused", ["ATE0", "AT+CMGF=1", 'AT+CSCA="+36209400000"'])
def test_what_a_modem_must_accept(refused: str) -> None:
    with pytest.raises(InitRefused, match=re.escape(f"{refused} refused: ERROR")):
        converse(Initialisation(smsc="+36209400000"), {refused: "ERROR", "AT+CMGF=0": "ERROR"})


@pytest.mark.parametrize("prompt", [b"\r\n> ", b"\r\n>"])
def test_the_prompt_with_or_without_its_space(prompt: bytes) -> None:
    parser = AtParser()
    parser.command("AT+CMGS=23")
    assert parser.feed(prompt) == [Prompt()]
    assert parser.feed(b"\r\n+CMGS: 7\r\n\r\nOK\r\n") == [Response("AT+CMGS=23", True, "OK", ("+CMGS: 7",))]


def test_the_space_after_the_prompt_arriving_late() -> None:
    parser = AtParser()
    parser.command("AT+CMGS=23")
    assert parser.feed(b"\r\n>") == [Prompt()]
    assert parser.feed(b" ") == [] and not parser._buffer
    assert parser.feed(b"\r\n+CMGS: 7\r\n\r\nOK\r\n") == [Response("AT+CMGS=23", True, "OK", ("+CMGS: 7",))]
