"""Prompts made by the real espeak-ng and sox: the format Asterisk plays, the cache, failures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from asterisk_sendsms.config import SpeechConfig
from asterisk_sendsms.edge.speech import Speaker, SpeechError


def soxi(path: str, flag: str) -> str:
    return subprocess.run(["soxi", flag, path], capture_output=True, text=True, check=True).stdout.strip()


async def test_prompt_is_8khz_mono_16bit_and_cached(tmp_path: Path) -> None:
    speaker = Speaker(SpeechConfig(tmp_path / "tts"))
    sound = await speaker.prompt("Your text message has been sent.")
    wav = sound + ".wav"
    assert not sound.endswith(".wav") and Path(wav).parent == tmp_path / "tts"
    assert (soxi(wav, "-r"), soxi(wav, "-c"), soxi(wav, "-b")) == ("8000", "1", "16")
    assert float(soxi(wav, "-D")) > 0.5
    mtime = Path(wav).stat().st_mtime_ns
    assert await speaker.prompt("Your  text message has been sent. ") == sound  # same words, same file
    assert Path(wav).stat().st_mtime_ns == mtime
    assert await speaker.prompt("Something else.") != sound


async def test_text_is_never_an_option_and_recorded_sounds_pass_through(tmp_path: Path) -> None:
    speaker = Speaker(SpeechConfig(tmp_path / "tts"))
    sound = await speaker.prompt("--help -w /etc/passwd")
    assert float(soxi(sound + ".wav", "-D")) > 0.5
    assert await speaker.prompt("sound:custom/welcome") == "custom/welcome"


async def test_a_broken_engine_is_a_clear_error(tmp_path: Path) -> None:
    missing = Speaker(SpeechConfig(tmp_path, command=("no-such-tts-engine", "{output}")))
    with pytest.raises(SpeechError, match="cannot run no-such-tts-engine"):
        await missing.prompt("hello")
    failing = Speaker(SpeechConfig(tmp_path, command=("false", "{output}")))
    with pytest.raises(SpeechError, match="false failed with exit code 1"):
        await failing.prompt("hello")
    silent = Speaker(SpeechConfig(tmp_path, command=("true", "{output}")))
    with pytest.raises(SpeechError, match="wrote no sound"):
        await silent.prompt("hello")
    assert list(tmp_path.glob("*.wav")) == []
