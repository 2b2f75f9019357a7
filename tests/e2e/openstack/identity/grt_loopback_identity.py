"""Keystone, played for tools/glance-api-dev's loopback glance-api.

That glance-api has no keystone: its ``loopback_auth`` filter takes the
identity headers a client sends at face value (``X-Roles``,
``X-Service-Roles``), which keystonemiddleware would otherwise derive from a
user token and a service token.  This keystoneauth plugin sends them, so
that Nova's, Cinder's and openstacksdk's own Glance clients run unchanged:

* as ``auth_type = grt-loopback`` (Cinder's ``[glance]`` service user,
  openstacksdk's ``clouds.yaml``), found through the entry point in the
  ``grt_loopback_identity-1.0.dist-info`` next to this file, when this
  directory is on ``sys.path``;
* as a RequestContext's ``user_auth_plugin`` (Nova).

Test support only; never part of the package.
"""

from keystoneauth1 import discover
from keystoneauth1 import loading
from keystoneauth1 import plugin

TOKEN = "loopback-noauth"


class LoopbackIdentity(plugin.BaseAuthPlugin):
    """The roles a keystone token would carry, as headers."""

    def __init__(self, endpoint=None, roles="member,reader", service_roles="",
                 project_id=None):
        super().__init__()
        self.endpoint = endpoint
        self.roles = roles
        self.service_roles = service_roles
        self.project_id = project_id

    def get_token(self, session, **kwargs):
        return TOKEN

    def get_headers(self, session, **kwargs):
        headers = {"X-Auth-Token": TOKEN}
        if self.roles:
            headers["X-Roles"] = self.roles
        if self.service_roles:
            headers["X-Service-Roles"] = self.service_roles
        if self.project_id:
            headers["X-Project-Id"] = self.project_id
        return headers

    def get_endpoint_data(self, session, endpoint_override=None,
                          discover_versions=True, min_version=None,
                          max_version=None, allow_version_hack=True,
                          **kwargs):
        # what a keystone catalog entry for glance-api would give
        data = discover.EndpointData(
            catalog_url=endpoint_override or self.endpoint)
        return data.get_versioned_data(
            session, cache=self._discovery_cache,
            discover_versions=discover_versions, min_version=min_version,
            max_version=max_version, allow_version_hack=allow_version_hack)

    def get_project_id(self, session, **kwargs):
        return self.project_id

    def get_user_id(self, session, **kwargs):
        return None


class Loader(loading.BaseLoader):
    """``auth_type = grt-loopback``."""

    @property
    def plugin_class(self):
        return LoopbackIdentity

    def get_options(self):
        return [
            loading.Opt("endpoint", help="the glance-api URL"),
            loading.Opt("roles", default="member,reader", help="X-Roles"),
            loading.Opt("service-roles", default="",
                        help="X-Service-Roles"),
            loading.Opt("project-id", help="X-Project-Id"),
        ]
