from .cli import RESOLVED_CONFIG_NAME, resolve_config, run_entry, save_resolved_config
from .schema import ConfigError, RunConfig

__all__ = ["ConfigError", "RunConfig", "RESOLVED_CONFIG_NAME", "resolve_config", "run_entry", "save_resolved_config"]
