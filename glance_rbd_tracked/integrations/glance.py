"""Images and locations through the Glance API, with openstacksdk.

What Nova does when it snapshots an instance, for an operator: create a
queued image, then point it at a chain's ``rbd://`` location.  The
connection is openstacksdk's, configured as the ``openstack`` CLI is
(``clouds.yaml`` and ``--os-cloud``, or ``OS_*`` variables).

Glance (2024.2 and later) takes a non-http location only from a caller with
the ``service`` role, through ``POST /v2/images/{id}/locations``.  Where that
API is missing (older Glance, 404 or 405), the location is added with the
JSON-patch ``add /locations/-``, which needs ``show_multiple_locations``.
"""

from __future__ import annotations

from typing import Any

from glance_rbd_tracked import errors

PATCH_TYPE = "application/openstack-images-v2.1-json-patch"


class GlanceError(errors.TrackedError):
    """Glance refused, or could not be reached."""


def connect(cloud: str | None = None, timeout: float = 30) -> Any:
    """An openstacksdk connection (``clouds.yaml``, ``OS_*`` variables)
    whose every request (Keystone's too) gives up after ``timeout``
    seconds; keystoneauth's own default is to wait for ever."""
    try:
        import openstack
    except ImportError:
        raise errors.ConfigError(
            "openstacksdk is not installed: pip install "
            "'glance_rbd_tracked[openstack]'") from None
    try:
        return openstack.connect(cloud=cloud, api_timeout=timeout)
    except Exception as exc:
        raise errors.ConfigError(f"cannot configure the connection to "
                                 f"Glance: {exc}") from exc


def _call(conn: Any, method: str, path: str, what: str,
          **kwargs: Any) -> Any:
    try:
        return getattr(conn.image, method)(path, raise_exc=False, **kwargs)
    except Exception as exc:
        raise GlanceError(f"{what}: Glance could not be reached: "
                          f"{exc}") from exc


def _refused(response: Any, what: str, hint: str = "") -> GlanceError:
    text = " ".join(str(getattr(response, "text", "")).split())[:300]
    return GlanceError(f"{what}: Glance answered {response.status_code}"
                       f"{': ' + text if text else ''}{hint}")


def create_image(conn: Any, name: str, image_id: str | None = None,
                 disk_format: str = "raw",
                 container_format: str = "bare") -> str:
    """Create a queued image; returns its id."""
    body = {"name": name, "disk_format": disk_format,
            "container_format": container_format}
    if image_id is not None:
        body["id"] = image_id
    response = _call(conn, "post", "/images", "creating the image",
                     json=body)
    if response.status_code != 201:
        raise _refused(response, "creating the image")
    return str(response.json()["id"])


def add_location(conn: Any, image_id: str, url: str,
                 validation_data: dict[str, str] | None = None) -> str:
    """Point queued image ``image_id`` at ``url``; returns ``"POST"`` or
    ``"PATCH"``, the method Glance took it with."""
    what = f"adding {url} to image {image_id}"
    body: dict[str, Any] = {"url": url}
    if validation_data:
        body["validation_data"] = validation_data
    response = _call(conn, "post", f"/images/{image_id}/locations", what,
                     json=body)
    if response.status_code == 202:
        return "POST"
    if response.status_code not in (404, 405):
        hint = (" (the credentials need the 'service' role for rbd:// "
                "locations)" if response.status_code == 403 else "")
        raise _refused(response, what, hint)
    _patch_location(conn, image_id, url, what, validation_data,
                    " (neither POST .../locations nor PATCH add-location "
                    "was taken)")
    return "PATCH"


def add_another_location(conn: Any, image_id: str, url: str) -> str:
    """Add ``url`` to the locations of image ``image_id``, an active one
    (a copy in another store): only ``PATCH add /locations/-`` does that,
    and only with ``show_multiple_locations = True`` in glance-api.conf.
    Returns ``"PATCH"``."""
    _patch_location(conn, image_id, url, f"adding {url} to image {image_id}",
                    None, " (glance-api takes another location of an "
                    "active image only with show_multiple_locations = "
                    "True)")
    return "PATCH"


def _patch_location(conn: Any, image_id: str, url: str, what: str,
                    validation_data: dict[str, str] | None,
                    hint: str) -> None:
    value: dict[str, Any] = {"url": url, "metadata": {}}
    if validation_data:
        value["validation_data"] = validation_data
    response = _call(conn, "patch", f"/images/{image_id}", what,
                     json=[{"op": "add", "path": "/locations/-",
                            "value": value}],
                     headers={"Content-Type": PATCH_TYPE})
    if response.status_code != 200:
        raise _refused(response, what, hint)


def delete_image(conn: Any, image_id: str) -> None:
    response = _call(conn, "delete", f"/images/{image_id}",
                     f"deleting image {image_id}")
    if response.status_code not in (204, 404):
        raise _refused(response, f"deleting image {image_id}")


def image_status(conn: Any, image_id: str) -> str:
    """The image's status, as Glance shows it now."""
    response = _call(conn, "get", f"/images/{image_id}",
                     f"reading image {image_id}")
    if response.status_code != 200:
        raise _refused(response, f"reading image {image_id}")
    return str(response.json()["status"])
