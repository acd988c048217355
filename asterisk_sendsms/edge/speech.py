"""Prompts for callers: text to speech through a configurable command (espeak-ng by default), converted by
sox to the 8 kHz mono 16-bit WAV Asterisk plays, cached by content hash; or a recorded sound file."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from asterisk_sendsms.app.callflow import SpeechError
from asterisk_sendsms.config import SpeechConfig

__all__ = ["Speaker", "SpeechError"]

log = logging.getLogger(__name__)

SOUND_PREFIX = "sound:"
MAX_TEXT = 1000


class Speaker:
    def __init__(self, config: SpeechConfig) -> None:
        self._config = config
        self._locks: dict[str, asyncio.Lock] = {}

    async def prompt(self, text: str, voice: str | None = None) -> str:
        """The sound to play for `text`: a path without extension, as AGI `STREAM FILE` and ARI `sound:` take.
        `sound:NAME` is a recorded file and is returned as NAME."""
        if text.startswith(SOUND_PREFIX):
            return text[len(SOUND_PREFIX):]
        text = " ".join(text.split())[:MAX_TEXT]
        voice = voice or self._config.voice
        key = hashlib.sha256(json.dumps([self._config.command, voice, text]).encode()).hexdigest()[:32]
        base = self._config.cache_dir / key
        if (base.with_suffix(".wav")).exists():
            return str(base)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if not base.with_suffix(".wav").exists():
                await self._synthesize(text, voice, base.with_suffix(".wav"))
        self._locks.pop(key, None)
        return str(base)

    async def _synthesize(self, text: str, voice: str, target: Path) -> None:
        try:
            if not target.parent.is_dir():
                # Asterisk, often another user, plays the prompts: the cache is the one place the gateway
                # writes that others may read (prompts are what callers hear anyway).
                target.parent.mkdir(parents=True)
                target.parent.chmod(0o755)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SpeechError(f"cannot create the prompt cache {target.parent}: {exc.strerror}") from None
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            raw = Path(work) / "raw.wav"
            converted = Path(work) / "8k.wav"
            values = {"text": text, "voice": voice, "output": str(raw)}
            argv = [part.format_map(values) for part in self._config.command]
            stdin = None if any("{text}" in part for part in self._config.command) else text.encode("utf-8")
            await self._run(argv, stdin)
            if not raw.exists() or raw.stat().st_size == 0:
                raise SpeechError(f"{argv[0]} wrote no sound to {{output}}")
            await self._run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
                             str(converted)], None)
            # Rename into place: Asterisk never sees a half-written file.
            os.chmod(converted, 0o644)
            os.replace(converted, target)

    async def _run(self, argv: list[str], stdin: bytes | None) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise SpeechError(f"cannot run {argv[0]}: {exc.strerror} (install espeak-ng and sox)") from None
        try:
            _, stderr = await asyncio.wait_for(process.communicate(stdin), self._config.timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise SpeechError(f"{argv[0]} took longer than {self._config.timeout:g}s") from None
        if process.returncode != 0:
            detail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise SpeechError(f"{argv[0]} failed with exit code {process.returncode}: {detail[0]}")
