"""Typed keys for what the web application and its requests carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from node.desk import DeskNode  # the API serves this desk; only the type checker imports it here

NODE: web.AppKey[DeskNode] = web.AppKey("node")  # no runtime type: node.desk imports the API
