"""An optional proposer: ask any OpenAI-compatible chat endpoint for new heuristics.

The model gets the feature documentation, the grammar, and the best expressions so far with
their scores, and answers with candidate expressions. Its answer is *text*: every line that
looks like a candidate goes through the same whitelisted parser as a policy file, so a
wrong, garbled or hostile answer is only a rejected candidate (counted and reported). The
HTTP call is bounded (timeout, response size, number of candidates) and errors never stop
the search. Off unless `--proposer-url` is given.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from selfserve.policy.expression_simplify import simplify
from selfserve.policy.expression_syntax import (
    FEATURES,
    FUNCTIONS,
    ExpressionError,
    Num,
    parse_expression,
)
from selfserve.tune.search_space import Candidate

MAX_RESPONSE_BYTES = 64 * 1024
MAX_CANDIDATES = 8
_CANDIDATE_LINE = re.compile(r"^\s*(?:[-*\d.)\s]*)?(?:score\s*[:=]\s*)(.+?)\s*$", re.IGNORECASE)
_FENCE = re.compile(r"```[a-zA-Z]*\n(.*?)```", re.DOTALL)


@dataclass(slots=True)
class Proposal:
    accepted: list[Candidate] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (text, why)
    error: str | None = None


def build_prompt(best: Sequence[tuple[str, float]], objective: str, count: int) -> str:
    features = "\n".join(
        f"- {name}: {doc}" for name, doc in FEATURES.items() if not name.startswith("cluster_")
    )
    return (
        "You design load-balancing heuristics for a cluster of LLM inference replicas.\n"
        "A heuristic is an expression scored for every replica; the LOWEST score gets the "
        "request.\n"
        "Language: numbers, the feature names below, + - * /, parentheses, "
        f"functions {', '.join(FUNCTIONS)}, comparisons < <= > >= == != (1 or 0), and/or/not, "
        "and 'if A then B else C'. Cluster aggregates are available as "
        "cluster_min_<f>, cluster_max_<f>, cluster_mean_<f> for the per-replica counters, "
        "and num_replicas. Division by zero gives 0.\n"
        f"Features:\n{features}\n\n"
        f"Best so far (objective: {objective}, higher is better):\n"
        + "\n".join(f"- {score:.4g}: {text}" for text, score in best)
        + f"\n\nPropose {count} new, different expressions that should score higher. "
        "Answer with one per line, each line starting with 'score: ' and nothing else on it."
    )


def extract_candidates(answer: str) -> list[str]:
    """Lines that claim to be candidates (`score: …`), from fenced blocks or plain text."""
    blocks = _FENCE.findall(answer) or [answer]
    found: list[str] = []
    for block in blocks:
        for line in block.splitlines():
            match = _CANDIDATE_LINE.match(line)
            if match:
                found.append(match.group(1).strip().strip("`").strip())
    return found[:MAX_CANDIDATES]


def parse_answer(answer: str) -> Proposal:
    proposal = Proposal()
    texts = extract_candidates(answer)
    if not texts:
        proposal.error = "the answer held no 'score: …' line"
    for text in texts:
        try:
            tree = simplify(parse_expression(text))
        except ExpressionError as exc:
            proposal.rejected.append((text[:200], str(exc)))
            continue
        if isinstance(tree, Num):
            proposal.rejected.append((text[:200], "a constant scores every replica alike"))
            continue
        proposal.accepted.append(Candidate(tree=tree, origin="llm"))
    return proposal


@dataclass(slots=True)
class LLMProposer:
    """Asks `url` (an OpenAI-compatible base URL or a full /chat/completions URL)."""

    url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    temperature: float = 0.8

    @property
    def endpoint(self) -> str:
        url = self.url.rstrip("/")
        return url if url.endswith("/chat/completions") else f"{url}/chat/completions"

    def propose(
        self, best: Sequence[tuple[str, float]], objective: str, count: int = 4
    ) -> Proposal:
        try:
            answer = asyncio.run(self._ask(build_prompt(best, objective, count)))
        except Exception as exc:  # the proposer is optional: its failures are reported, not fatal
            return Proposal(error=f"{type(exc).__name__}: {exc}")
        return parse_answer(answer)

    async def _ask(self, prompt: str) -> str:
        key = self.api_key or os.environ.get("OPENAI_API_KEY", "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
        }
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(self.endpoint, json=body, headers=headers) as response:
                raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
                if len(raw) > MAX_RESPONSE_BYTES:
                    raise ValueError(f"response larger than {MAX_RESPONSE_BYTES} bytes")
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}: {raw[:200]!r}")
        import orjson

        payload = orjson.loads(raw)
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError("response is not an OpenAI chat completion") from None
        if not isinstance(content, str):
            raise ValueError("message content is not text")
        return content
