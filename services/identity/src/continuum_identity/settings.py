"""Configuration of the identity service (environment variables ``CONTINUUM_*``)."""

from pydantic import SecretStr

from continuum_runtime.config import ServiceSettings

DEVELOPMENT_IDENTIFIER_KEY = "continuum-development-identifier-key"


class IdentitySettings(ServiceSettings):
    service_name: str = "identity"
    port: int = 50051
    # HMAC key under which identifier values are hashed (CONTINUUM_IDENTIFIER_KEY). Required
    # outside development; changing it orphans every stored identifier.
    identifier_key: SecretStr = SecretStr("")
    # Region assumed for phone numbers written without a country code.
    default_phone_region: str = "US"

    def hashing_key(self) -> bytes:
        key = self.identifier_key.get_secret_value()
        if key:
            return key.encode()
        if self.environment == "development":
            return DEVELOPMENT_IDENTIFIER_KEY.encode()
        raise SystemExit("CONTINUUM_IDENTIFIER_KEY is required outside development")
