"""Configuration: the seed's JSON files, environment variables and flags.

``settings`` holds the schema; ``loader`` merges the sources with the
precedence flag > environment > file > default and remembers where each value
came from (``clawlan config show``).
"""

from clawlan.config.loader import Loaded, load_settings
from clawlan.config.settings import Settings

__all__ = ["Loaded", "Settings", "load_settings"]
