"""The `endpoint` block shared by contestants, teachers and judges: any OpenAI-compatible model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class EndpointSpec(BaseModel):
    """Where and how to call an OpenAI-compatible model, and what its tokens cost."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="base URL including the API prefix, e.g. http://127.0.0.1:8080/v1")
    model: str
    api_key_env: str | None = Field(None, description="name of the environment variable holding the key")
    price_input_per_m: float = Field(0.0, ge=0, description="USD per million input tokens")
    price_output_per_m: float = Field(0.0, ge=0, description="USD per million output tokens")
    max_retries: int = Field(4, ge=0, description="retries after the first try")
    timeout_s: float = Field(120.0, gt=0)
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(512, ge=1)
    stop: list[str] | None = None
    backoff_base_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry")
    backoff_max_s: float = Field(60.0, ge=0, description="cap on any one delay, Retry-After included")
    note: str | None = Field(None, description="what this endpoint is (e.g. a local stand-in), printed in reports")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https:// (got {v!r}), e.g. http://127.0.0.1:8080/v1")
        return v.rstrip("/")
