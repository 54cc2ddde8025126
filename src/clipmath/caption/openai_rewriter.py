"""The ``openai:URL[#MODEL]`` rewriter: any OpenAI-compatible chat-completions endpoint (standard library only).

``URL`` is the API base (``http://127.0.0.1:8080/v1``) or the full ``.../chat/completions`` address; ``MODEL``
defaults to ``$CLIPMATH_OPENAI_MODEL`` or ``default``. The key, if any, comes from ``$CLIPMATH_OPENAI_KEY`` or
``$OPENAI_API_KEY`` (never from the name, so it is never printed). Each request has a timeout; 429 and 5xx answers
and timeouts are retried with exponential back-off (a 429's ``Retry-After`` is honoured, capped).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from clipmath.caption.rewriters import FewShotPrompt, first_line
from clipmath.errors import CaptionError

KEY_VARIABLES = ("CLIPMATH_OPENAI_KEY", "OPENAI_API_KEY")


@dataclass(frozen=True)
class ChatSettings:
    """How the client talks to the endpoint."""

    timeout: float = 30.0  # seconds per request
    retries: int = 3  # further tries after a 429, a 5xx or a timeout
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    max_retry_after: float = 30.0
    max_tokens: int = 60
    temperature: float = 0.0


def parse_target(arg: str) -> tuple[str, str]:
    """``URL[#MODEL]`` -> (chat-completions URL, model)."""
    url, _, model = arg.partition("#")
    if not url.startswith(("http://", "https://")):
        raise CaptionError(f"the openai rewriter needs an http(s) URL, not {url!r}")
    url = url.rstrip("/")
    if not url.endswith("/chat/completions"):
        url += "/chat/completions"
    return url, model or os.environ.get("CLIPMATH_OPENAI_MODEL", "default")


class OpenAIRewriter:
    """Rewrites through a remote chat model; one request per rewrite."""

    def __init__(self, arg: str, prompt: FewShotPrompt, settings: ChatSettings | None = None) -> None:
        self.url, self.model = parse_target(arg)
        self.prompt = prompt
        self.settings = settings or ChatSettings()
        self.label = f"openai:{self.url}#{self.model} ({prompt.name} prompt)"
        self.requests = 0

    def rewrite(self, caption: str, instruction: str) -> str:
        body = {"model": self.model, "messages": self.prompt.messages(caption, instruction),
                "max_tokens": self.settings.max_tokens, "temperature": self.settings.temperature}  # fmt: skip
        answer = self._post(body)
        try:
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise CaptionError(f"{self.url} answered without choices[0].message.content") from None
        if not isinstance(text, str) or not first_line(text):
            raise CaptionError(f"{self.url} answered an empty rewrite")
        return first_line(text)

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        key = next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode("utf-8")
        delay, last = self.settings.backoff, ""
        for attempt in range(self.settings.retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            self.requests += 1
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:  # noqa: S310
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code == 429 or exc.code >= 500:
                    retry_after = _seconds(exc.headers.get("Retry-After"))
                    delay = max(delay, min(retry_after, self.settings.max_retry_after))
                    continue
                raise CaptionError(f"{self.url} refused the rewrite: HTTP {exc.code}") from None
            except TimeoutError:
                last = f"no answer within {self.settings.timeout:g} s"
                continue
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, TimeoutError):
                    last = f"no answer within {self.settings.timeout:g} s"
                    continue
                raise CaptionError(f"cannot reach {self.url}: {exc.reason}") from None
            try:
                return json.loads(raw)
            except ValueError:
                raise CaptionError(f"{self.url} answered something that is not JSON") from None
        raise CaptionError(f"{self.url} gave no rewrite after {self.settings.retries + 1} tries ({last})")


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
