"""Errors that tell a user which dataset, which file and what is wrong."""

from __future__ import annotations

from os import PathLike


class TexflowError(Exception):
    """A problem with a dataset's input or parameters, explained for the user.

    Parameters
    ----------
    problem
        What is wrong, in words a user can act on.
    dataset
        The dataset id, when known.
    path
        The file the problem is in, when there is one.
    """

    def __init__(
        self, problem: str, *, dataset: str | None = None, path: str | PathLike | None = None
    ):
        self.problem, self.dataset, self.path = problem, dataset, path
        where = []
        if dataset is not None:
            where.append(f"dataset {dataset}")
        if path is not None:
            where.append(f"file {path}")
        super().__init__(f"[{', '.join(where)}] {problem}" if where else problem)


class InputDataError(TexflowError):
    """Input data that cannot be used: corrupt, truncated, empty, mislabelled or inconsistent."""


class DownloadError(TexflowError):
    """A download that failed or did not pass its checks."""
