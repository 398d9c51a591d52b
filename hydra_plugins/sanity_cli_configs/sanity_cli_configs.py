"""Hydra search-path plugin: sanity's configs (groups model, data, test, method, ... and the primary `sanity`) are
on every search path, so a user's own primary config (`--config-path DIR --config-name NAME`) can build on them,
e.g. `defaults: [sanity, _self_]`, as Hydra recommends for libraries that ship configs."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class SanityConfigsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from sanity_cli.paths import config_dir

        search_path.append(provider="sanity-cli", path=f"file://{config_dir()}")
