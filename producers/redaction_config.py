"""Configuration of redaction (``redact:`` of every input: log files, OTLP, syslog, scrape label values).

Its own module so that both the log inputs' config (``tocsin.producers.config``) and the network inputs'
(``tocsin.producers.inputs.config``) use it without importing each other; ``tocsin.producers.redact`` runs it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tocsin.core.config import StrictModel

MIB = 1 << 20

RedactBuiltin = Literal["card", "email", "authorization", "bearer", "secret", "ipv4", "ipv6"]


class RedactPatternConfig(StrictModel):
    """A pattern of the site's own to redact (an RE2 regex: linear time, no backreferences or lookaround)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$", description="Counter name (`redacted_<name>`).")
    regex: str = Field(min_length=1, description="RE2 syntax, e.g. `\\bCUST-\\d{8}\\b`.")

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str) -> str:
        import re2

        try:
            compiled = re2.compile(v)
        except re2.error as exc:
            raise ValueError(f"not an RE2 regex ({exc}); RE2 has no backreferences or lookaround") from None
        if compiled.search(""):
            raise ValueError("matches the empty string: it would redact between every character")
        return v


class RedactConfig(StrictModel):
    """Redaction of an input's messages and attribute values before anything leaves the host."""

    builtin: list[RedactBuiltin] = Field(
        default_factory=lambda: ["card", "email", "authorization", "bearer", "secret"],
        description="Built-in patterns (tocsin.producers.redact); ipv4 and ipv6 only when listed; [] for none.",
    )
    patterns: list[RedactPatternConfig] = Field(default_factory=list, description="The site's own patterns.")
    attributes: bool = Field(True, description="Redact attribute (and metric label) values too, not only "
                                     "the message.")
    replacement: str = Field("[REDACTED:{name}]", description="What a match becomes; `{name}` is the pattern's.")
    max_regex_mem_bytes: int = Field(
        8 * MIB, ge=MIB, description="RE2's memory budget for the compiled patterns (its default is 8 MiB)."
    )

    @field_validator("replacement")
    @classmethod
    def _replacement(cls, v: str) -> str:
        try:
            v.format(name="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"may only use {{name}}: {exc}") from None
        return v


__all__ = ["RedactBuiltin", "RedactConfig", "RedactPatternConfig"]
