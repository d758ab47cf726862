"""Errors raised by the catalogs: an unknown name (with the valid ones) or a bad media query."""

from __future__ import annotations


class UnknownNameError(KeyError, ValueError):
    """A catalog lookup by a name that is not in the catalog; the message lists valid names."""

    def __init__(self, what: str, name: str, valid: list[str]) -> None:
        self.what = what
        self.name = name
        self.valid = list(valid)
        super().__init__(f"unknown {what} {name!r}; valid: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class MediaNotSupportedError(ValueError):
    """A media-token query for a modality the model cannot take (e.g. audio for a text model)."""
