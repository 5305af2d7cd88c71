"""What the uploader declares beside the file (the ``metadata`` part of ``POST /v1/models``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from glorot_core.uploads.architecture import Architecture
from glorot_core.uploads.errors import UploadRefused

#: The accepted model formats (docs/uploads.md says why ONNX is not one of them).
MODEL_FORMATS: tuple[str, ...] = ("safetensors", "state_dict", "exported")
#: Formats that are weights only and need an ``architecture``.
WEIGHT_FORMATS = frozenset({"safetensors", "state_dict"})


class InputSpec(BaseModel):
    """One example's input: ``shape`` without the batch axis, and its dtype (``int64`` for token ids)."""

    model_config = ConfigDict(extra="forbid")

    shape: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(min_length=1, max_length=4)
    dtype: Literal["float32", "int64"] = "float32"


class UploadMetadata(BaseModel):
    """The ``metadata`` JSON: ``format``, optional ``name``, ``architecture`` for weights-only formats,
    ``input`` where the model's input cannot be read from the file (a CNN's image shape)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["safetensors", "state_dict", "exported"]
    name: str | None = Field(None, max_length=200)
    architecture: Architecture | None = None
    input: InputSpec | None = None


def parse_metadata(doc: Any) -> UploadMetadata:
    """The metadata document, checked: an unknown ``format`` is 415 (the file is of a kind we do not
    take), any other mistake a 422 naming the fields."""
    if not isinstance(doc, dict):
        raise UploadRefused(422, "invalid-metadata", "metadata must be a JSON object")
    fmt = doc.get("format")
    if fmt not in MODEL_FORMATS:
        raise UploadRefused(415, "unsupported-format",
                            f"unknown model format {str(fmt)[:40]!r}; accepted: {', '.join(MODEL_FORMATS)}",
                            accepted=list(MODEL_FORMATS))
    try:
        meta = UploadMetadata.model_validate(doc)
    except ValidationError as e:
        errors = [{"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in e.errors()]
        raise UploadRefused(422, "invalid-metadata", f"invalid metadata: {errors[0]['field']}: "
                            f"{errors[0]['message']}", errors=errors) from None
    if meta.format in WEIGHT_FORMATS and meta.architecture is None:
        raise UploadRefused(422, "invalid-metadata", f"format {meta.format!r} holds weights only: "
                            "metadata.architecture must describe the network (kind mlp or cnn)")
    if meta.format == "exported" and meta.architecture is not None:
        raise UploadRefused(422, "invalid-metadata", "an exported program carries its own architecture; "
                            "omit metadata.architecture")
    if meta.architecture is not None and meta.architecture.kind == "cnn" and meta.input is None:
        raise UploadRefused(422, "invalid-metadata", "a cnn needs metadata.input.shape (e.g. [1, 28, 28])")
    return meta
