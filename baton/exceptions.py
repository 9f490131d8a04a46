"""baton's errors: one root, and subclasses that carry what a caller needs."""

from __future__ import annotations

from collections.abc import Iterable


class BatonError(Exception):
    """A baton error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class InvalidWorkflow(BatonError):
    """The workflow is not valid; nothing was inserted."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: list[str] = list(errors)
        lines = "\n".join(f"  - {error}" for error in self.errors)
        super().__init__(f"Invalid workflow ({len(self.errors)} problem(s)):\n{lines}")


class WorkflowExists(BatonError):
    """A workflow with this unique key is already executing."""

    def __init__(self, unique_key: str, workflow_id: object) -> None:
        self.unique_key = unique_key
        #: The id of the executing workflow that holds the key.
        self.workflow_id = workflow_id
        super().__init__(
            f"a workflow with unique_key {unique_key!r} is already executing ({workflow_id})"
        )


class ResultUnavailable(BatonError):
    """The result of a dependency is not available."""

    NOT_A_DEP = "not_a_dep"
    NO_RESULT = "no_result"

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        explanation = {
            self.NOT_A_DEP: (
                "it is not a direct dependency of this step; add it to the step's deps "
                "to read its result (a step reads only the results of its own deps, "
                "even when the step is an ancestor further up)"
            ),
            self.NO_RESULT: "it stored no result (returned None, or failed and was ignored)",
        }.get(reason, reason)
        super().__init__(f"No result for {name!r}: {explanation}")


class ResultTooLarge(BatonError):
    """A step's result is larger than BATON['RESULT_MAX_BYTES']."""

    def __init__(self, step_name: str, size: int, limit: int) -> None:
        self.step_name = step_name
        self.size = size
        self.limit = limit
        super().__init__(
            f"Result of step {step_name!r} is {size} bytes of JSON, over "
            f"BATON['RESULT_MAX_BYTES'] = {limit}"
        )


class ResultNotSerializable(BatonError):
    """A step returned a value that is not JSON-serialisable."""

    def __init__(self, step_name: str, cause: str) -> None:
        self.step_name = step_name
        super().__init__(f"Result of step {step_name!r} is not JSON-serialisable: {cause}")
