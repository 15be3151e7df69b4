"""Errors raised by the pure layers, carrying what a person needs to act."""

from __future__ import annotations


class DtabParseError(ValueError):
    """A path, dentry, dtab or name tree that does not parse.

    The message names the input, the line and column, and what was expected,
    e.g. ``invalid dtab '/a=>' at line 1, column 5: expected a path, '!', '~', '$' or '('``.
    """

    def __init__(self, message: str, *, text: str, line: int, column: int, expected: str) -> None:
        super().__init__(message)
        self.text = text
        self.line = line
        self.column = column
        self.expected = expected


class ParamError(ValueError):
    """A plugin (namer, transformer, identifier ...) config parameter is wrong.

    `key` is the parameter's name inside the plugin's mapping, so the config
    loader can point at the right line of the file.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.detail = message
