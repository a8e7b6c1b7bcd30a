"""Settings for bench/api_list.py: the app's own settings plus one baseline view."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.api_urls"
