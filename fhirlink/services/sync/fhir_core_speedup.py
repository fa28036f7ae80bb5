"""One speed fix to fhir-core (the base of `fhir.resources`), applied before its models load.

`FHIRAbstractModel.reject_null_complex_elements`, a "before" validator every FHIR element runs
(a 50,400-Observation first sync builds about 700,000 of them), walks every field of the
element's class on every call to find its lists of complex elements, although that set is fixed
when the class is defined. It was 30 % of validation's time; here the set is computed once per
class and the check is otherwise the same: the same errors, in the same order
(`tests/fhirlink/test_store.py` validates every Cerner example and sandbox resource both ways).
Measured on the sandbox's large patient: 173 to 134 µs per resource.

It replaces the validator on the base class by name, which pydantic reads when each model class
is built: models built before `apply()` keep the original (slower, equally correct). Applied
only to the fhir-core release it was written against (another release keeps its own code until
this is checked against it), and not when `FHIRLINK_FHIR_CORE_SPEEDUP=0` is in the environment.
"""

from __future__ import annotations

import os
import typing
from importlib.metadata import version
from typing import Any

FOR_VERSION = "1.1.12"
_NAME = "reject_null_complex_elements"
_applied = False


def _complex_lists(cls: Any, cache: dict[type, tuple[tuple[str, str | None], ...]]) -> Any:
    fields = cache.get(cls)
    if fields is None:
        from fhir_core.utils import is_list_type, is_primitive_type

        fields = cache[cls] = tuple(
            (name, field.alias)
            for name, field in cls.model_fields.items()
            if is_list_type(field) and not is_primitive_type(field) and not name.endswith("__ext")
        )
    return fields


def apply() -> bool:
    """Install the faster validator (once); True when it is in place."""
    global _applied
    if _applied:
        return True
    if os.environ.get("FHIRLINK_FHIR_CORE_SPEEDUP", "1") == "0":
        return False
    try:
        if version("fhir-core") != FOR_VERSION:
            return False
        from fhir_core.fhirabstractmodel import FHIRAbstractModel
        from pydantic import ValidationError
        from pydantic_core import InitErrorDetails, PydanticCustomError
    except ImportError:
        return False
    decorators = FHIRAbstractModel.__pydantic_decorators__.model_validators
    if _NAME not in decorators or decorators[_NAME].info.mode != "before":
        return False
    cache: dict[type, tuple[tuple[str, str | None], ...]] = {}

    def reject_null_complex_elements(cls: Any, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        errors: list[InitErrorDetails] = []
        for name, alias in _complex_lists(cls, cache):
            key = alias if alias and alias in data else name
            value = data.get(key)
            if isinstance(value, list) and any(item is None for item in value):
                errors.append(
                    {
                        "type": PydanticCustomError(
                            "list_type",
                            "None is not allowed as an element of {field}",
                            {"field": key},
                        ),
                        "loc": (key,),
                        "input": value,
                    }
                )
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data

    replacement = classmethod(reject_null_complex_elements)
    setattr(FHIRAbstractModel, _NAME, replacement)  # what each model class build reads
    decorators[_NAME] = decorators[_NAME].build(
        FHIRAbstractModel, cls_var_name=_NAME, shim=None, info=decorators[_NAME].info
    )
    _applied = True
    return True


def applied_to(model: type) -> bool:
    """Whether `model` (a built FHIR model class) runs this module's validator."""
    found = getattr(model, "__pydantic_decorators__", None)
    entry = found.model_validators.get(_NAME) if found is not None else None
    func = getattr(entry, "func", None)
    return typing.cast(bool, getattr(func, "__qualname__", "").startswith("apply."))
