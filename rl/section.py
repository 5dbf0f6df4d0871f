"""Base class of every component's config model (STYLE.md rule 6).

Each component declares its settings next to its code as a `Section`; the attribute docstring under a
field is its description, shown in error messages and in the README's generated configuration reference.
"""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # extra="forbid": a misspelt key is an error at start, not a silently ignored setting.
    # validate_assignment: overrides applied after construction are checked too.
    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, validate_assignment=True, frozen=False
    )
