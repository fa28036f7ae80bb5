"""Three speed fixes to fhir-core (the base of `fhir.resources`), applied before its models load.

Every FHIR element (a 50,400-Observation first sync builds about 700,000 of them) runs two
validators of `FHIRAbstractModel` that recompute, on every call, facts fixed when the class is
defined, and is built through a path that validates it one and a half times:

- `reject_null_complex_elements` ("before") walks every field of the class to find its lists of
  complex elements. It was 30 % of validation's time.
- `validate_after_model_construction` ("after") asks for the class's required primitive
  elements and its choice ([x]) elements, builds both lists, and looks each field up again.
- A nested element (a dict under a field) goes through `FhirBase.fhir_model_validator`, which
  calls `model_validate`; because the model has its own `__init__`, pydantic calls that
  `__init__`, which calls pydantic's, which validates the dict, and the "after" validator then
  runs a second time on the finished instance. For a dict without a resource type (every
  element but a contained resource), that `__init__` does nothing but pydantic's, so the
  element is validated straight into a new instance (exactly what pydantic's `__init__` does)
  and the library's own checks of the result follow.

Here the first two facts are computed once per class and the checks are otherwise the same:
the same errors, of the same types, at the same places, in the same order
(`tests/fhirlink/test_fhir_core_speedup.py` validates every Cerner example, every sandbox
resource and crafted faults both ways and compares the errors). A class whose facts cannot be
computed ahead (a method reading its instance) keeps the library's own check.
Measured on the sandbox's large patient: 173 to 134 µs per resource for the first fix, to
about 105 µs with the second; the third takes about a fifth off what remains
(`python manage.py sync_benchmark` shows the effect on a whole sync).

The first two replace a validator on the base class by name, which pydantic reads when each
model class is built: models built before `apply()` keep the originals (slower, equally
correct). The third replaces a class method that is looked up on every call. Applied
only to the fhir-core release they were written against (another release keeps its own code
until this is checked against it), and not when `FHIRLINK_FHIR_CORE_SPEEDUP=0` is in the
environment.
"""

from __future__ import annotations

import os
import typing
from importlib.metadata import version
from typing import Any

FOR_VERSION = "1.1.12"
_BEFORE = "reject_null_complex_elements"
_AFTER = "validate_after_model_construction"
_applied = False

# Per class: the required primitive elements (attribute, extension attribute, alias) and the
# choice groups (fields, required, the list as the library names it); None: the library's check.
_AfterPlan = tuple[
    tuple[tuple[str, str | None, str | None], ...],
    tuple[tuple[tuple[str, ...], bool, list[str]], ...],
]


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


def _after_plan(cls: Any) -> _AfterPlan | None:
    """What `validate_after_model_construction` checks for `cls`, or None when that depends on
    the instance (the generated methods return constants and never read `self`)."""
    try:
        required = cls.get_required_fields(None)
        choices = cls.get_one_of_many_fields(None)
        aliases = cls.get_alias_mapping()
        fields = cls.model_fields
        checks = []
        for name, ext in required:
            key = aliases[name]
            checks.append((key, ext, fields[key].alias))
        groups = []
        for prefix, names in choices.items():
            extra = fields[names[0]].json_schema_extra
            if extra["one_of_many"] != prefix:
                return None  # the library's assertion fails; let it
            groups.append((tuple(names), extra["one_of_many_required"] is True, names))
    except Exception:  # any surprise: keep the library's own check
        return None
    return tuple(checks), tuple(groups)


def _install(model: Any, name: str, func: Any) -> None:
    decorators = model.__pydantic_decorators__.model_validators
    setattr(model, name, func)  # what each model class build reads
    decorators[name] = decorators[name].build(
        model, cls_var_name=name, shim=None, info=decorators[name].info
    )


def apply() -> bool:
    """Install the faster validators (once); True when they are in place."""
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
    if any(
        name not in decorators or decorators[name].info.mode != mode
        for name, mode in ((_BEFORE, "before"), (_AFTER, "after"))
    ):
        return False
    lists: dict[type, tuple[tuple[str, str | None], ...]] = {}

    def reject_null_complex_elements(cls: Any, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        errors: list[InitErrorDetails] = []
        for name, alias in _complex_lists(cls, lists):
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

    library_after: Any = FHIRAbstractModel.validate_after_model_construction
    plans: dict[type, _AfterPlan | None] = {}
    missing = object()

    def validate_after_model_construction(self: Any) -> Any:
        cls = type(self)
        plan = plans.get(cls, missing)
        if plan is missing:
            plan = plans[cls] = _after_plan(cls)
        if plan is None:
            return library_after(self)
        checks, groups = typing.cast(_AfterPlan, plan)
        errors: list[InitErrorDetails] = []
        for key, ext, alias in checks:
            value = getattr(self, key, missing)
            if value not in (missing, None):
                continue
            ext_value: Any = getattr(self, ext, missing) if ext is not None else None
            if ext_value not in (missing, None):
                if isinstance(ext_value, dict):
                    if len(ext_value.get("extension", [])) != 0:
                        continue
                elif ext_value.extension and len(ext_value.extension) > 0:
                    continue
            errors.append(
                {
                    "type": PydanticCustomError(
                        "model_field_validation.missing",
                        "Value for the field '{field_name}' is required.",
                        {"field_name": alias},
                    ),
                    "loc": (alias,),  # type: ignore[typeddict-item]
                    "input": value,
                }
            )
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        for names, required, shown in groups:
            found = False
            for name in names:
                if getattr(self, name, None) is not None:
                    if found:
                        raise ValueError(
                            f"Any of one field value is expected from this list {shown}, "
                            "but got multiple!"
                        )
                    found = True
            if required and not found:
                raise ValueError(f"Expect any of field value from this list {shown}.")
        return self

    from fhir_core.types import FhirBase

    library_nested: Any = FhirBase.__dict__["fhir_model_validator"].__func__
    library_init: Any = FHIRAbstractModel.__init__

    def fhir_model_validator(cls: Any, value: Any, model_klass: Any) -> Any:
        if (
            type(value) is dict
            and "resourceType" not in value
            and "resource_type" not in value
            and model_klass.__init__ is library_init
            and model_klass.__resource_type__ is not Ellipsis
        ):
            instance = model_klass.__new__(model_klass)
            model_klass.__pydantic_validator__.validate_python(value, self_instance=instance)
            value = instance
        return library_nested(cls, value, model_klass)

    FhirBase.fhir_model_validator = classmethod(fhir_model_validator)  # type: ignore[method-assign,assignment]
    _install(FHIRAbstractModel, _BEFORE, classmethod(reject_null_complex_elements))
    _install(FHIRAbstractModel, _AFTER, validate_after_model_construction)
    _applied = True
    return True


def applied_to(model: type) -> bool:
    """Whether `model` (a built FHIR model class) runs this module's validators."""
    found = getattr(model, "__pydantic_decorators__", None)
    if found is None:
        return False
    for name in (_BEFORE, _AFTER):
        func = getattr(found.model_validators.get(name), "func", None)
        if not getattr(func, "__qualname__", "").startswith("apply."):
            return False
    from fhir_core.types import FhirBase

    nested = FhirBase.__dict__["fhir_model_validator"].__func__
    return bool(nested.__qualname__.startswith("apply."))
