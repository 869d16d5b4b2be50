"""Comparing `gprocket ping` with the real iputils ping and fping: only measured times differ."""

from __future__ import annotations

import re

_DECIMAL = re.compile(r"(?<![\d.])\d+\.\d+(?![\d.%])")  # not addresses, not loss %
_MASKS = [
    (re.compile(r"time=[\d.]+ ms"), "time=N ms"),      # iputils: a reply's RTT
    (re.compile(r"time \d+ms"), "time Nms"),           # iputils: start to last request
    (re.compile(r" +[\d.]+ sec \(elapsed"), " N sec (elapsed"),  # fping -s
    (_DECIMAL, "N"),                                   # every other RTT figure
]


def mask(text: str) -> str:
    """The output with only the measured times replaced by N."""
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text
