"""One typed settings object (pydantic-settings): a TOML file, then EVIDENCE_* environment overrides.

    EVIDENCE_CONFIG=/etc/evidence.toml      the file (or --config PATH)
    EVIDENCE_HOME=/srv/evidence             where the embedded default keeps its data
    EVIDENCE_QUEUE__MAX_ATTEMPTS=3          [queue] max_attempts = 3

Every key is checked at start; an unknown or bad key is an error that names it and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from pipelines.pipeline import Tools
from worker.errors import ConfigError
from worker.labels import check_label

ENV_PREFIX = "EVIDENCE_"
ENV_CONFIG = "EVIDENCE_CONFIG"
# Not settings: how a storage passphrase reaches a service (never on the command line, where any account sees it).
ENV_PASSPHRASE, ENV_PASSPHRASE_FD = "EVIDENCE_PASSPHRASE", "EVIDENCE_PASSPHRASE_FD"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSettings(_Section):
    backend: Literal["local", "s3"] = "local"
    root: Path | None = Field(None, description="default: <home>/store")
    min_free_bytes: int = Field(256 * 2**20, ge=0, description="refuse an upload that would leave less free")
    # backend = "s3": credentials come from the standard AWS chain, never from this file
    bucket: str | None = Field(None, description="the bucket (with versioning and Object Lock)")
    prefix: str = Field("", description="key prefix inside the bucket")
    region: str | None = None
    endpoint_url: str | None = Field(None, description="MinIO, Ceph RGW or another S3-compatible endpoint")
    retention_mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE"
    retention_days: int = Field(3650, ge=1, description="originals are locked this long")
    legal_hold: bool = Field(False, description="also put a legal hold on every original")
    allow_unlocked_bucket: bool = Field(False, description="development only: store in a bucket without Object Lock")
    sse_kms_key_id: str | None = Field(None, description="server-side encryption of every object under this KMS key")


class ReplicaSettings(StoreSettings):
    """One [[replicas]] entry: a second store (another bucket, a NAS, a removable disk) kept level."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$", description="how custody and commands name it")
    root: Path | None = Field(None, description="backend = local: the replica's folder (required)")


class QueueSettings(_Section):
    backend: Literal["sqlite", "sqs"] = "sqlite"
    path: Path | None = Field(None, description="default: <home>/queue.sqlite3")
    # backend = "sqs": credentials come from the standard AWS chain, never from this file
    queue_name: str | None = Field(None, description="the SQS queue (its dead-letter queue from its redrive policy)")
    queue_url: str | None = Field(None, description="instead of queue_name")
    region: str | None = None
    endpoint_url: str | None = Field(None, description="an SQS-compatible endpoint instead of AWS's")
    upload_prefix: str = Field("incoming/", description="S3 uploads under this prefix become evidence")
    wait_time_s: int = Field(20, ge=0, le=20, description="long polling: how long one receive waits")
    visibility_timeout_s: float = Field(300.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    backoff_base_s: float = Field(30.0, ge=0)
    backoff_max_s: float = Field(3600.0, ge=0)


class WorkerSettings(_Section):
    poll_interval_s: float = Field(2.0, gt=0)
    heartbeat_interval_s: float | None = Field(None, gt=0, description="default: a third of the visibility timeout")
    work_dir: Path | None = Field(None, description="default: <home>/work")
    inbox_stable_s: float = Field(5.0, ge=0, description="an inbox file must keep its size this long")
    inbox_quiet_s: float = Field(120.0, ge=0, description="as long, when no check can tell whether it is still "
                                 "open for writing (another account's upload)")
    inbox_recheck_s: float = Field(3600.0, ge=0, description="how long a moved upload is watched in case it grows")
    disk_full_pause_s: float = Field(60.0, gt=0, description="how long a worker waits after a full disk, or a "
                                                             "time-stamp authority that did not answer")


class MediaSettings(_Section):
    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    timeout_s: float = Field(600.0, gt=0, description="longest one ffmpeg/ffprobe call may run")
    threads: int = Field(2, ge=1, le=64, description="decoder/encoder threads of every call")
    memory_limit_bytes: int = Field(3 * 2**30, ge=512 * 2**20, description="address-space ceiling of every call")
    max_pixels: int = Field(8192 * 4320, ge=16 * 16, description="largest frame, in pixels, any call may decode")


class LocalModel(_Section):
    kind: str = Field(description="whisper-ct2 or ctc-onnx")
    path: Path = Field(description="the folder that holds the model's files")
    files: dict[str, str] = Field(default_factory=dict, description="file name -> SHA-256 (checked on every load)")
    licence: str = ""
    description: str = ""


class ModelsSettings(_Section):
    dir: Path | None = Field(None, description="the model cache; default $XDG_CACHE_HOME/evidence-worker/models")
    local: dict[str, LocalModel] = Field(default_factory=dict, description="the operator's own models")


class TranscribeSettings(BaseModel):
    """Defaults of the transcribe step's parameters (checked against the step), plus its models by language."""

    model_config = ConfigDict(extra="allow", frozen=True)
    models: dict[str, LocalModel] | str = Field(default_factory=dict,
                                                description="[transcribe.models.ce]: a model for that language")
    threads: int = Field(0, ge=0, le=256, description="threads of model inference on the CPU (0: every core)")


class ReleaseSettings(_Section):
    """The floor a run's masking must meet before export cuts a clip from it (worker.operations.release)."""

    policies: tuple[str, ...] = Field(("all", "staff"), description="masking policies whose videos may leave")
    max_min_score: float = Field(0.15, description="the highest detection threshold a released run may have used")
    min_detect_scale: float = Field(0.5, description="the smallest share of the width its detector may have seen")
    min_mask_scale: float = Field(2.0, description="the tightest masks (of the detected box) it may have drawn")
    min_pad_frames: int = Field(8, description="the fewest frames masked before and after each face track")


class SigningSettings(_Section):
    certificate_chain: Path | None = Field(None, description="PEM chain, signing certificate first")
    private_key: Path | None = Field(None, description="PEM private key of that certificate (ES256, PS256, Ed25519)")
    kms_key_id: str | None = Field(None, description="an AWS KMS asymmetric key instead of private_key")
    kms_region: str | None = Field(None, description="KMS region (else the standard AWS chain's)")
    kms_endpoint_url: str | None = Field(None, description="a KMS-compatible endpoint instead of AWS's")
    timestamp_url: str | None = Field(None, description="RFC 3161 time-stamp authority, asked at each signature "
                                                        "and for each custody head")
    timestamp_anchors: Path | None = Field(None, description="PEM roots of that authority, trusted for its "
                                                             "time-stamps (and, by C2PA, as signers' anchors)")
    trust_anchors: Path | None = Field(None, description="PEM certificates 'evidence verify' trusts")


class EncryptionSettings(_Section):
    key_source: Literal["none", "file", "passphrase", "kms"] = Field(
        "none", description="where the master key comes from; today it protects the staff roster")
    key_file: Path | None = Field(None, description="key_source = file: the key (keep it on removable media); "
                                                    "kms: the KMS-wrapped key")
    kms_key_id: str | None = Field(None, description="key_source = kms: the KMS key that wraps the master key")
    kms_region: str | None = None
    kms_endpoint_url: str | None = None


class RedactSettings(BaseModel):
    """Defaults of the redact step's parameters ([redact] policy = "staff", detect_scale = 0.75 ...),
    checked against the step when the settings load."""

    model_config = ConfigDict(extra="allow", frozen=True)


UNNAMED_OPERATOR = "operator (unnamed)"


class OperatorSettings(_Section):
    """Who custody events, manifests and reports say acted: a role or pseudonym. Staff are anonymous, so it is
    never the account or the host by default: a clip's report travels to people outside."""

    name: str | None = Field(None, description=f"a role or pseudonym; default {UNNAMED_OPERATOR!r}")

    @field_validator("name")
    @classmethod
    def _plain(cls, name: str | None) -> str | None:
        return None if name is None else check_label("[operator] name", name)


class _Environment(EnvSettingsSource):
    """EVIDENCE_* variables from the mapping a load was given (the process's environment, or a test's)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._given = {name: value for name, value in environ.items() if name not in NOT_SETTINGS}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._given.items()}


# What one load reads: its environment and its TOML file (sources are chosen per class, not per call).
_LOADING: ContextVar[tuple[Mapping[str, str], Path | None]] = ContextVar("loading")
NOT_SETTINGS = (ENV_CONFIG, ENV_PASSPHRASE, ENV_PASSPHRASE_FD)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", case_sensitive=False,
                                      extra="forbid", frozen=True)

    home: Path = Path("evidence-data")
    # NoDecode: EVIDENCE_OPERATOR=name is a role's name, not JSON (the validator below makes it a section).
    operator: Annotated[OperatorSettings, NoDecode] = OperatorSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    store: StoreSettings = StoreSettings()
    queue: QueueSettings = QueueSettings()
    worker: WorkerSettings = WorkerSettings()
    media: MediaSettings = MediaSettings()
    models: ModelsSettings = ModelsSettings()
    transcribe: TranscribeSettings = TranscribeSettings()
    redact: RedactSettings = RedactSettings()
    signing: SigningSettings = SigningSettings()
    release: ReleaseSettings = ReleaseSettings()
    encryption: EncryptionSettings = EncryptionSettings()
    replicas: list[ReplicaSettings] = Field(default_factory=list, description="off-site copies, kept level")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ, toml_file = _LOADING.get((os.environ, None))
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, _Environment(settings_cls, environ))
        if toml_file is not None:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=toml_file),)
        return sources

    @field_validator("operator", mode="before")
    @classmethod
    def _operator_as_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value   # operator = "x" names it as [operator] does

    @field_validator("replicas")
    @classmethod
    def _distinct_replicas(cls, replicas: list[ReplicaSettings]) -> list[ReplicaSettings]:
        names = [r.name for r in replicas]
        if len(set(names)) != len(names):
            raise ValueError("two [[replicas]] have the same name")
        for replica in replicas:
            if replica.backend == "local" and replica.root is None:
                raise ValueError(f"replica {replica.name!r} (backend = \"local\") needs root")
            if replica.backend == "s3" and not replica.bucket:
                raise ValueError(f"replica {replica.name!r} (backend = \"s3\") needs bucket")
        return replicas

    def replica(self, name: str) -> ReplicaSettings:
        for replica in self.replicas:
            if replica.name == name:
                return replica
        known = ", ".join(r.name for r in self.replicas) or "none is configured"
        raise ConfigError(f"no replica named {name!r} ([[replicas]]: {known})")

    @property
    def store_root(self) -> Path:
        return self.store.root or self.home / "store"

    @property
    def queue_path(self) -> Path:
        return self.queue.path or self.home / "queue.sqlite3"

    @property
    def work_dir(self) -> Path:
        return self.worker.work_dir or self.home / "work"

    @property
    def heartbeat_interval_s(self) -> float:
        return self.worker.heartbeat_interval_s or self.queue.visibility_timeout_s / 3

    @property
    def actor(self) -> str:
        """Who custody events, manifests and reports say acted: the configured role, never account or host."""
        return self.operator.name or UNNAMED_OPERATOR

    @property
    def tools(self) -> Tools:
        m = self.media
        return Tools(ffmpeg=m.ffmpeg, ffprobe=m.ffprobe, timeout_s=m.timeout_s, threads=m.threads,
                     memory_limit_bytes=m.memory_limit_bytes, max_pixels=m.max_pixels,
                     cpu_threads=self.transcribe.threads)

    @property
    def local_models(self) -> dict[str, dict[str, Any]]:
        """[models.local.*] and [transcribe.models.LANG] (named ``transcribe-LANG``) for the registry."""
        found = {name: model.model_dump(mode="json") for name, model in self.models.local.items()}
        if isinstance(self.transcribe.models, dict):
            found.update({f"transcribe-{lang}": model.model_dump(mode="json")
                          for lang, model in self.transcribe.models.items()})
        return found

    @property
    def step_defaults(self) -> dict[str, Any]:
        """The pipeline parameter defaults the settings give (``transcribe.beam_size`` ...)."""
        extra = dict(self.transcribe.model_extra or {})
        if isinstance(self.transcribe.models, str):
            extra["models"] = self.transcribe.models
        elif self.transcribe.models:
            extra["models"] = ",".join(f"{lang}=transcribe-{lang}" for lang in self.transcribe.models)
        return {**{f"transcribe.{key}": value for key, value in extra.items()},
                **{f"redact.{key}": value for key, value in (self.redact.model_extra or {}).items()}}

    def redacted(self) -> dict[str, Any]:
        """The effective settings as JSON-able data (no secret is a setting: keys and passphrases come from
        files, descriptors or KMS, never from here)."""
        return self.model_dump(mode="json")


def _unknown_top_level(environ: Mapping[str, str]) -> list[str]:
    """EVIDENCE_* names that match no setting: pydantic-settings looks up the names it knows and would pass
    over a misspelt one in silence (a misspelt nested key, EVIDENCE_QUEUE__MAX_ATTEMPS, it reports)."""
    known = {name.upper() for name in Settings.model_fields}
    return sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in NOT_SETTINGS
                  and name[len(ENV_PREFIX):].split("__")[0].upper() not in known)


def _describe(error: ValidationError, environ: Mapping[str, str], origin: str) -> str:
    given = {name.upper(): name for name in environ}
    lines = []
    for item in error.errors():
        path = [str(part) for part in item["loc"]]
        key = ".".join(path)
        # The deepest EVIDENCE_ name on the error's path that was set is where the value came from.
        where = next((given[name] for depth in range(len(path), 0, -1)
                      if (name := ENV_PREFIX + "__".join(path[:depth]).upper()) in given), origin)
        message = "unknown setting" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"{key}: {message} (from {where})")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(config_path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    path = config_path or environ.get(ENV_CONFIG)
    origin = str(path) if path else "defaults"
    if path:  # read here first, for errors that say what is wrong with the file (the source reads it again)
        try:
            tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = _unknown_top_level(environ)
    if unknown:
        raise ConfigError("invalid settings:\n  " + "\n  ".join(f"{name}: unknown setting (from the environment)"
                                                                  for name in unknown))
    loading = _LOADING.set((environ, Path(path) if path else None))
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, environ, origin)) from None
    except SettingsError as exc:   # a value that should be JSON (a list, a table) and is not
        raise ConfigError(f"invalid settings: {exc}") from None
    finally:
        _LOADING.reset(loading)
    # Resolve now: a worker that changes directory must not move its evidence.
    return settings.model_copy(update={"home": settings.home.expanduser().resolve()})
